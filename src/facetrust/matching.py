"""Comparing templates: distances, operating points and verdicts.

Score convention: facetrust compares templates by **distance** (Euclidean,
between descriptors). Lower is more similar. A pair matches when
``distance <= threshold``. Thresholds are never literals in code: they are
operating points looked up by name in a calibration table shipped with the
package (``facetrust/data/operating_points.json``), each tied to the model
that it was measured for; a custom embedder's model, which the table does not
cover, gets points measured on its own pipeline and recorded in the gallery that
uses it (:mod:`facetrust.gallery.calibrations`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidParameter, OperatingPointError
from .faces import Embedding
from .score_normalization import ScoreNormalizer, load_normalizer


@dataclass(frozen=True)
class OperatingPoint:
    """A named decision threshold for one embedding model.

    Attributes
    ----------
    name : str
        e.g. ``"dlib-default"`` or ``"fmr-1e-3"``.
    model_id : str
        The model whose distances the threshold applies to.
    threshold : float
        Largest Euclidean distance still called a match (lower is stricter).
    metric : str
        Always ``"euclidean"`` for now.
    target_fmr : float or None
        False-match rate the threshold was calibrated for, when measured.
    description, source : str
        What the point means and where its number comes from.
    normalizer : str or None
        File name (under ``facetrust/data``) of a fitted score normalizer
        (:mod:`facetrust.score_normalization`) applied to every distance before
        the threshold, or None.
    """

    name: str
    model_id: str
    threshold: float
    metric: str = "euclidean"
    target_fmr: float | None = None
    description: str = ""
    source: str = ""
    normalizer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def adjusted_distances(
        self, distances: npt.ArrayLike, probe: npt.ArrayLike, references: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """Distances as this point compares them: normalized when it names a normalizer.

        ``probe`` is one template (dim,) or one per distance (n, dim);
        ``references`` has one template per distance (n, dim).
        """
        values = np.asarray(distances, dtype=np.float64)
        normalizer = self.score_normalizer()
        if normalizer is None:
            return values
        return normalizer.normalize(values, np.atleast_2d(probe), np.atleast_2d(references))

    def score_normalizer(self) -> ScoreNormalizer | None:
        """The fitted normalizer this point names (loaded once per process), or None."""
        return None if self.normalizer is None else _normalizer(self.normalizer)


@lru_cache(maxsize=8)
def _normalizer(name: str) -> ScoreNormalizer:
    with resources.as_file(resources.files("facetrust").joinpath("data", name)) as path:
        return load_normalizer(path)


@dataclass(frozen=True)
class Verdict:
    """The outcome of a 1:1 comparison.

    Attributes
    ----------
    match : bool
        ``distance <= threshold``.
    distance : float
        Euclidean distance between the two templates (normalized when the
        operating point names a normalizer); lower is more similar.
    threshold : float
    operating_point : str
        Name of the operating point the threshold came from.
    model_id : str
    """

    match: bool
    distance: float
    threshold: float
    operating_point: str
    model_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def operating_point_table() -> dict[str, Any]:
    """The shipped calibration table (``data/operating_points.json``), read once."""
    text = resources.files("facetrust").joinpath("data/operating_points.json").read_text()
    table: dict[str, Any] = json.loads(text)
    return table


def operating_points(model_id: str | None = None) -> list[OperatingPoint]:
    """Every operating point in the shipped calibration table (for ``model_id`` if given)."""
    return [p for p in _table_points() if model_id is None or p.model_id == model_id]


@lru_cache(maxsize=1)
def _table_points() -> tuple[OperatingPoint, ...]:
    # parsed once: every identification and verification looks its point up
    fields = OperatingPoint.__dataclass_fields__
    return tuple(
        OperatingPoint(**{k: v for k, v in entry.items() if k in fields})
        for entry in operating_point_table()["operating_points"]
    )


def get_operating_point(
    name: str | None = None,
    model_id: str | None = None,
    *,
    recorded: Sequence[OperatingPoint] = (),
) -> OperatingPoint:
    """Look up an operating point by name; ``None`` gives the table's default.

    Each model id has its own points under the same names (``fmr-1e-3`` of
    ``dlib-resnet-v1`` and of ``dlib-resnet-v1+mirror``); ``model_id`` picks
    the model's, and without it the plain model's (no ``+augmentation``), else
    the first point of that name in the table.

    ``recorded`` are points measured for models the shipped table does not
    cover (a gallery's, recorded by
    :meth:`facetrust.gallery.Gallery.record_calibration` for a custom
    embedder). They are used only for a ``model_id`` with no shipped point: the
    shipped table always wins for the models it covers. For such a model,
    ``None`` gives the recorded point of the table's default name if there is
    one, else the strictest recorded (lowest target FMR; the overall point,
    not the worst-group one).

    Raises
    ------
    OperatingPointError
        The name is unknown, the point belongs to another model, or ``model_id``
        (a custom embedder's, say) has no calibrated point at all.
    """
    if model_id is not None and not operating_points(model_id):
        own = [point for point in recorded if point.model_id == model_id]
        if not own:
            raise OperatingPointError(uncalibrated_message(model_id))
        return _recorded_point(name, model_id, own)
    name = name or str(operating_point_table()["default"])
    named = [point for point in operating_points() if point.name == name]
    # Each model (e.g. dlib-resnet-v1 and its augmented dlib-resnet-v1+mirror) has its
    # own points under the same names; without a model id the plain model's is meant
    # (what the default pipeline embeds with), whatever the order of the file.
    named.sort(key=lambda point: (model_id is not None and point.model_id != model_id,
                                  model_id is None and "+" in point.model_id))
    for point in named[:1]:
        if point.name == name:
            if model_id is not None and point.model_id != model_id:
                raise OperatingPointError(
                    f"Operating point {name!r} was calibrated for model {point.model_id!r}, "
                    f"not {model_id!r}. Pick one of: "
                    + ", ".join(p.name for p in operating_points(model_id))
                )
            return point
    raise OperatingPointError(
        f"Unknown operating point {name!r}. Known: " + ", ".join(p.name for p in operating_points())
    )


def _recorded_point(
    name: str | None, model_id: str, points: Sequence[OperatingPoint]
) -> OperatingPoint:
    wanted = name or str(operating_point_table()["default"])
    for point in points:
        if point.name == wanted:
            return point
    if name is None:  # the strictest overall point the calibration could support
        overall = [p for p in points if "-all-groups" not in p.name] or list(points)
        return min(overall, key=lambda p: (p.target_fmr or 1.0, p.threshold))
    raise OperatingPointError(
        f"Operating point {name!r} was not recorded for model {model_id!r}: its calibration "
        "had too few pairs to support it. Pick one of: " + ", ".join(p.name for p in points)
        + ", or calibrate on more photos."
    )


def uncalibrated_message(model_id: str) -> str:
    """What to tell someone who matches templates of ``model_id``, which has no point
    in the calibration table: why there is no threshold, and how to get one."""
    calibrated = sorted({point.model_id for point in operating_points()})
    return (
        f"Model {model_id!r} has no calibrated operating points, so facetrust has no "
        "threshold to decide its matches with: a threshold measured for one model means "
        f"nothing for another (calibrated models: {', '.join(calibrated)}). Measure this "
        "model's thresholds on labelled photos with the pipeline that embeds with it "
        "(facetrust.evaluation.run_calibration(..., pipeline=...), the calibration that "
        "`facetrust evaluate calibrate` runs for the built-in models) and record them in "
        "the gallery (Gallery.record_calibration), or embed with a calibrated model."
    )


def face_distance(gallery: npt.ArrayLike, probe: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Euclidean distances from ``probe`` (shape (dim,)) to each row of ``gallery`` (n, dim).

    Lower is more similar. Returns an array of shape (n,).
    """
    gallery_array = np.atleast_2d(np.asarray(gallery, dtype=np.float64))
    probe_array = np.asarray(probe, dtype=np.float64)
    if gallery_array.size == 0:
        return np.zeros(0)
    if probe_array.shape != gallery_array.shape[1:]:
        raise InvalidParameter(
            f"The probe must have shape ({gallery_array.shape[1]},) to match the gallery. "
            f"Got {probe_array.shape} instead."
        )
    result: npt.NDArray[np.float64] = np.linalg.norm(gallery_array - probe_array, axis=1)
    return result


def compare(
    a: Embedding, b: Embedding, operating_point: str | OperatingPoint | None = None
) -> Verdict:
    """Decide whether two templates show the same person.

    Raises
    ------
    InvalidParameter
        The templates come from different models.
    OperatingPointError
        The operating point is unknown or belongs to another model.
    """
    if a.model_id != b.model_id:
        raise InvalidParameter(
            f"Cannot compare a {a.model_id!r} template with a {b.model_id!r} template: "
            "templates from different models are not comparable. Re-embed both with one model."
        )
    point = (
        operating_point
        if isinstance(operating_point, OperatingPoint)
        else get_operating_point(operating_point, a.model_id)
    )
    raw = float(np.linalg.norm(a.vector.astype(np.float64) - b.vector.astype(np.float64)))
    distance = float(point.adjusted_distances([raw], a.vector, b.vector)[0])
    return Verdict(
        match=distance <= point.threshold,
        distance=distance,
        threshold=point.threshold,
        operating_point=point.name,
        model_id=a.model_id,
    )
