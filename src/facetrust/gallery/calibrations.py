"""Operating points measured for a custom embedder, recorded in the gallery that uses it.

The shipped calibration table (``facetrust/data/operating_points.json``) covers
the built-in models. A gallery given a pipeline with an embedder of its own
(another model id) has no threshold until that model is calibrated: the
caller measures it with :func:`facetrust.evaluation.run_calibration` on the
gallery's pipeline and labelled photos, and :func:`record_calibration` keeps
the supported points **in the gallery**, so every entry point that resolves
the gallery's operating point (enrolment, search, verification, the gate, the
published policy) decides at them.

Where: the store's ``calibrations`` meta value (JSON, model id -> record), the
same in SQLite and PostgreSQL, written in the transaction of a keyed
``calibration.recorded`` audit event that holds the same record. The state
check (:mod:`.state_audit`) reports a stored record no event wrote, so an edit
of the thresholds outside facetrust shows in ``facetrust audit verify``.

A model id the shipped table covers is refused: its shipped points always
win, and cannot be overridden from a gallery.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent, AuditLog
from ..errors import InvalidParameter, OperatingPointError, StoreError
from ..matching import OperatingPoint, operating_points
from ..store.base import Store
from .checks import check_name, check_text

if TYPE_CHECKING:
    from ..evaluation.calibration import CalibrationTable

__all__ = [
    "CALIBRATIONS_META",
    "record_calibration",
    "recorded_calibrations",
    "recorded_points",
]

#: The store meta value that holds the recorded calibrations.
CALIBRATIONS_META = "calibrations"


def recorded_calibrations(store: Store) -> dict[str, dict[str, Any]]:
    """Every calibration recorded in the gallery: model id -> record (``dataset``,
    ``date``, ``impostor_set``, ``points`` as the calibration table writes them).

    Raises
    ------
    StoreError
        The stored value is not the JSON object facetrust writes.
    """
    raw = store.get_meta(CALIBRATIONS_META)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise StoreError(
            "The gallery's recorded calibrations are not readable (the 'calibrations' meta "
            "value was edited outside facetrust). Run `facetrust audit verify`, restore the "
            "gallery from a backup, or record the calibration again."
        )
    return value


def recorded_points(store: Store, model_id: str) -> list[OperatingPoint]:
    """The operating points recorded in the gallery for ``model_id`` (none if not calibrated)."""
    record = recorded_calibrations(store).get(model_id)
    if not record:
        return []
    fields = OperatingPoint.__dataclass_fields__
    return [
        OperatingPoint(**{k: v for k, v in entry.items() if k in fields})
        for entry in record.get("points", [])
    ]


def record_calibration(
    store: Store, audit: AuditLog, table: CalibrationTable, *, gallery_model_id: str,
    actor: str,
) -> AuditEvent:
    """Keep the supported points of ``table`` in the gallery, for its model id, which
    must be ``gallery_model_id`` (the model the gallery's pipeline embeds with).

    A calibration recorded earlier for the same model id is replaced (the event
    names the one it replaces). Returns the ``calibration.recorded`` event.

    Raises
    ------
    OperatingPointError
        The shipped calibration table covers ``table.model_id``.
    InvalidParameter
        The table is for another model than the gallery's pipeline embeds with,
        its distances were normalized, or it supports no target FMR.
    """
    from ..evaluation.calibration import operating_point_entry

    actor = check_name(actor, "actor")
    model_id = table.model_id
    if not table.dataset.strip():
        raise InvalidParameter(
            "The calibration must name the dataset it was measured on (its 'dataset'). "
            "Got nothing: name the photos, e.g. 'LFW sample, 40 photos'."
        )
    check_text(table.dataset, "dataset")
    if operating_points(model_id):
        raise OperatingPointError(
            f"Model {model_id!r} has shipped operating points (facetrust's calibration "
            "table), and those always decide its matches: a gallery cannot override them. "
            "To decide at another of its shipped points, set the gallery's "
            "'operating_point'; to calibrate another model, embed with it."
        )
    if model_id != gallery_model_id:
        raise InvalidParameter(
            f"This calibration measured model {model_id!r}, but the gallery's pipeline embeds "
            f"with {gallery_model_id!r}: points measured for one model mean nothing for another. "
            "Calibrate with the gallery's own pipeline "
            "(run_calibration(..., pipeline=gallery.pipeline))."
        )
    if table.normalizer is not None:
        raise InvalidParameter(
            "A gallery records points on raw distances only; this calibration normalized "
            f"them with {table.normalizer.get('file')!r}. Calibrate without a normalizer."
        )
    rows = [row for row in table.rows
            if row.supported and row.threshold is not None
            and math.isfinite(row.threshold) and row.threshold > 0]
    if not rows:
        raise InvalidParameter(
            f"The calibration of {model_id!r} on {table.dataset} supports none of its target "
            "FMRs, so there is no threshold to record. Calibrate on more photos."
        )
    how = f"measured with the gallery's pipeline on {table.dataset}; recorded by {actor}"
    record = {
        "dataset": table.dataset,
        "date": table.date,
        "impostor_set": table.impostor_set,
        "points": [{**operating_point_entry(table, row), "source": how} for row in rows],
    }
    with store.transaction():
        recorded = recorded_calibrations(store)
        previous = recorded.get(model_id)
        recorded[model_id] = record
        store.set_meta(CALIBRATIONS_META, json.dumps(recorded, sort_keys=True))
        return audit.append(
            "calibration.recorded",
            actor=actor,
            model_id=model_id,
            calibration=record,
            replaces=None if previous is None else {
                "dataset": previous.get("dataset"), "date": previous.get("date")
            },
        )
