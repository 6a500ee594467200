"""Calibration: thresholds for target false-match rates, measured on real pairs.

For each target FMR the threshold is the largest distance whose FMR on a
set of non-mated pairs stays at or under the target
(:func:`~facetrust.evaluation.metrics.threshold_at_fmr`). A target is only
*supported* when the set is big enough to show it: by the rule of three,
zero false matches in N non-mated pairs bounds the FMR at 3/N (95%
confidence) and no lower.

The worst-group point (``fmr-<target>-all-groups``) is the strictest of the
per-group thresholds, so every labelled group's measured FMR stays at or
under the target; groups too small to support the target are listed as such.

Each row reports two rates on the mated pairs: the FNMR (ISO/IEC 19795-1:
false non-matches over the mated pairs whose two images were acquired) and the
false-reject rate, which also counts the mated pairs the pipeline refused
(failure to acquire) as rejects, over all mated pairs: what a user of
``verify`` sees.

The same protocol calibrates every kind of shipped point: the plain model's, an
augmented model id's (``dlib-resnet-v1+mirror``: the run's settings pick the
descriptors, and each id has its own points), and normalized distances
(``normalizer``: a fitted :mod:`facetrust.score_normalization` normalizer applied
to every pair, overall rows named ``fmr-<target>-fair``).

Every threshold is rounded **down** to :data:`THRESHOLD_DECIMALS` decimals
(:func:`floor_threshold`: a match is ``distance <= threshold``, so rounding
down can only make it stricter), and a row's measured FMR and FNMR are those
of the rounded threshold: the value written to the table.

:func:`write_operating_points` merges the rows into the table format read by
:func:`facetrust.matching.get_operating_point`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError
from ..score_normalization import ScoreNormalizer
from .cache import CachedImage
from .metrics import rule_of_three, threshold_at_fmr

#: Target FMRs of the calibration table.
CALIBRATION_TARGETS = (1e-2, 1e-3, 1e-4)

#: Decimals of a calibrated threshold (rounded down).
THRESHOLD_DECIMALS = 6


def floor_threshold(threshold: float, decimals: int = THRESHOLD_DECIMALS) -> float:
    """``threshold`` (a distance) rounded down to ``decimals`` decimals.

    The largest number of ``decimals`` decimals that, read back as a float, is
    at most ``threshold``: never a looser match rule, where rounding to the
    nearest value could take in a non-mated pair just above ``threshold``.
    (The float 0.6 stays 0.6, although it lies a hair under the decimal 0.6.)
    """
    step = Decimal(1).scaleb(-decimals)
    rounded = Decimal(threshold).quantize(step)
    if float(rounded) > threshold:
        rounded -= step
    return float(rounded)


#: Suffix of the name of a point set on normalized distances (``fmr-1e-3-fair``).
NORMALIZED_SUFFIX = "-fair"


def fmr_name(target: float, all_groups: bool = False, normalized: bool = False) -> str:
    """Operating point name of a target: ``fmr-1e-3``, ``fmr-1e-3-all-groups`` or,
    on normalized distances, ``fmr-1e-3-fair``."""
    mantissa, exponent = f"{target:.0e}".split("e")
    name = f"fmr-{mantissa}e-{int(exponent[1:])}" if exponent.startswith("-") else f"fmr-{target:g}"
    return name + ("-all-groups" if all_groups else "") + (NORMALIZED_SUFFIX if normalized else "")


@dataclass(frozen=True)
class CalibrationRow:
    """One row of the calibration table.

    Attributes
    ----------
    name : str
        Operating point name (``fmr-1e-3``, ``fmr-1e-3-all-groups``).
    target_fmr : float
    threshold : float or None
        Euclidean distance (match when <=), rounded down to
        :data:`THRESHOLD_DECIMALS` decimals; ``None`` when not supported.
    supported : bool
        Enough non-mated pairs to show the target (N >= 3 / target).
    measured_fmr : float or None
        FMR at this (rounded) threshold on the non-mated pairs it was set on.
    n_non_mated : int
        Non-mated pairs behind the threshold (the smallest group's for all-groups).
    lowest_supported_fmr : float or None
        3 / n_non_mated (``None`` without pairs).
    fnmr : float or None
        FNMR at the threshold (lower is better): false non-matches over the
        ``n_mated`` mated pairs whose two images were acquired.
    n_mated : int
        Mated pairs compared (both images acquired).
    note : str
    fta_mated : int
        Mated pairs left out of the FNMR because the pipeline refused one of
        their images (failure to acquire).
    false_reject_rate : float or None
        False non-matches plus ``fta_mated``, over ``n_mated + fta_mated``:
        the FNMR with every refused mated pair counted as a reject (lower is
        better).
    """

    name: str
    target_fmr: float
    threshold: float | None
    supported: bool
    measured_fmr: float | None
    n_non_mated: int
    lowest_supported_fmr: float | None
    fnmr: float | None
    n_mated: int
    note: str = ""
    fta_mated: int = 0
    false_reject_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationTable:
    """Calibration rows and where they were measured.

    Attributes
    ----------
    model_id, dataset, date : str
    rows : list of CalibrationRow
    impostor_set : dict
        How the non-mated set was built (images, identities, pairs, seed).
    normalizer : dict or None
        When the distances were normalized: the normalizer's ``file`` name
        (under ``facetrust/data``, as an operating point names it), ``kind``,
        ``clusters`` and ``target_fmr``.
    """

    model_id: str
    dataset: str
    date: str
    rows: list[CalibrationRow]
    impostor_set: dict[str, Any] = field(default_factory=dict)
    normalizer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "dataset": self.dataset,
            "date": self.date,
            "impostor_set": self.impostor_set,
            "normalizer": self.normalizer,
            "rows": [r.to_dict() for r in self.rows],
        }


#: Most images whose cross-identity pairs set the overall thresholds: all of LFW
#: (13,233), about 86 million pairs and 1.5 GB at the peak. A 3,000-image sample
#: (4.5 million pairs) moved the FMR 1e-3 threshold by up to 0.01 from one seed
#: to the next: the pairs of one image are not independent of each other.
MAX_IMPOSTOR_IMAGES = 15_000

#: Rows of the distance matrix computed at a time.
_ROWS = 1000


def impostor_distances(
    images: Mapping[str, CachedImage],
    *,
    max_images: int = MAX_IMPOSTOR_IMAGES,
    seed: int = 0,
    normalizer: ScoreNormalizer | None = None,
) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """Distances of all cross-identity pairs among the acquired images (a seeded sample
    of ``max_images`` of them when there are more).

    Identity is the image's folder name (LFW layout). Returns the distances
    (shape (n_pairs,)) and a description of the set. The matrix is computed a
    block of rows at a time, so memory holds the pairs, not the matrix. With
    ``normalizer``, each distance is normalized (the pair's two clusters are
    assigned once per image).
    """
    acquired = sorted(p for p, image in images.items() if image.acquired)
    sampled = len(acquired) > max_images
    if sampled:
        picks = np.random.default_rng(seed).choice(len(acquired), max_images, replace=False)
        acquired = [acquired[i] for i in sorted(picks)]
    if len(acquired) < 2:
        raise EvaluationError(
            f"Need at least 2 images with a face to build non-mated pairs; got {len(acquired)}."
        )
    vectors = np.stack([face.vector for p in acquired
                        if (face := images[p].subject_face()) is not None]).astype(np.float64)
    _, ids = np.unique([Path(p).parent.name for p in acquired], return_inverse=True)
    squared = np.einsum("ij,ij->i", vectors, vectors)
    clusters = None if normalizer is None else normalizer.clusters_of(vectors)
    blocks = []
    for start in range(0, len(acquired), _ROWS):
        rows = np.arange(start, min(start + _ROWS, len(acquired)))
        d2 = squared[rows, None] + squared[None, :] - 2.0 * (vectors[rows] @ vectors.T)
        later = np.arange(len(acquired))[None, :] > rows[:, None]
        keep = later & (ids[None, :] != ids[rows, None])
        distances = np.sqrt(np.clip(d2[keep], 0.0, None))
        if normalizer is not None and clusters is not None:
            row_of, column_of = np.nonzero(keep)
            distances = normalizer.normalize_assigned(
                distances, clusters[rows[row_of]], clusters[column_of]
            )
        blocks.append(distances)
    distances = np.concatenate(blocks)
    info = {
        "images": len(acquired),
        "identities": int(ids.max() + 1),
        "pairs": int(distances.size),
        "seed": seed if sampled else None,
        "rule": (f"all cross-identity pairs among a seeded sample of {max_images} images with "
                 "a face" if sampled else "all cross-identity pairs among the images with a face"),
    }
    return distances, info


def calibrate(
    non_mated: npt.ArrayLike,
    mated: npt.ArrayLike,
    *,
    model_id: str,
    dataset: str,
    group_non_mated: Mapping[tuple[str, str], npt.ArrayLike] | None = None,
    targets: Sequence[float] = CALIBRATION_TARGETS,
    impostor_set: Mapping[str, Any] | None = None,
    min_group_pairs: int = 30,
    mated_fta: int = 0,
    decimals: int = THRESHOLD_DECIMALS,
    normalizer: Mapping[str, Any] | None = None,
) -> CalibrationTable:
    """Thresholds for each target FMR, overall and for the worst group.

    Parameters
    ----------
    non_mated : array of shape (n,)
        Distances of non-mated pairs the overall thresholds are set on.
    mated : array of shape (m,)
        Distances of the acquired mated pairs, to report the FNMR each
        threshold costs.
    group_non_mated : mapping, optional
        ``(attribute, group)`` -> non-mated distances within that group; gives
        the ``-all-groups`` rows.
    mated_fta : int
        Mated pairs the pipeline refused (failure to acquire): not in
        ``mated``, counted as rejects in each row's ``false_reject_rate``.
    decimals : int
        Thresholds are rounded down to this many decimals; the rates are
        measured at the rounded threshold.
    normalizer : mapping, optional
        The distances are normalized: a description of the normalizer (its
        ``file`` name at least), kept in the table; rows are named
        ``fmr-<target>-fair``.
    """
    impostor = np.asarray(non_mated, dtype=np.float64)
    genuine = np.asarray(mated, dtype=np.float64)
    rows = []
    for target in targets:
        point = threshold_at_fmr(impostor, target)
        threshold = floor_threshold(point.threshold, decimals)
        measured = float(np.mean(impostor <= threshold))
        rows.append(_row(fmr_name(target, normalized=normalizer is not None), target,
                         threshold, point.supported, measured, impostor.size, genuine,
                         mated_fta, ""))
        if group_non_mated:
            rows.append(_worst_group_row(
                target, group_non_mated, genuine, mated_fta, min_group_pairs, decimals,
                normalized=normalizer is not None,
            ))
    return CalibrationTable(
        model_id,
        dataset,
        datetime.now(UTC).date().isoformat(),
        rows,
        dict(impostor_set or {}),
        None if normalizer is None else dict(normalizer),
    )


def _row(
    name: str,
    target: float,
    threshold: float,
    supported: bool,
    measured: float,
    n: int,
    genuine: npt.NDArray[np.float64],
    mated_fta: int,
    note: str,
) -> CalibrationRow:
    if not supported:
        note = (
            f"not supported: {n} non-mated pairs can show an FMR of {rule_of_three(n):.1e} "
            f"at best (rule of three), not {target:g}. " + note
        ).strip()
    return CalibrationRow(
        name=name,
        target_fmr=target,
        threshold=threshold if supported else None,
        supported=supported,
        measured_fmr=measured if supported else None,
        n_non_mated=n,
        lowest_supported_fmr=rule_of_three(n),
        fnmr=float(np.mean(genuine > threshold)) if supported and genuine.size else None,
        n_mated=int(genuine.size),
        note=note,
        fta_mated=mated_fta,
        false_reject_rate=(
            (int(np.sum(genuine > threshold)) + mated_fta) / (genuine.size + mated_fta)
            if supported and genuine.size + mated_fta else None
        ),
    )


def _worst_group_row(
    target: float,
    group_non_mated: Mapping[tuple[str, str], npt.ArrayLike],
    genuine: npt.NDArray[np.float64],
    mated_fta: int,
    min_group_pairs: int,
    decimals: int,
    normalized: bool = False,
) -> CalibrationRow:
    thresholds: dict[str, tuple[float, int]] = {}
    unsupported = []
    for (attribute, group), distances in sorted(group_non_mated.items()):
        values = np.asarray(distances, dtype=np.float64)
        label = f"{attribute}={group}"
        if values.size < max(min_group_pairs, 1) or target < rule_of_three(values.size):
            unsupported.append(f"{label} ({values.size} pairs)")
            continue
        thresholds[label] = (threshold_at_fmr(values, target).threshold, values.size)
    name = fmr_name(target, all_groups=True, normalized=normalized)
    if not thresholds:
        return CalibrationRow(
            name, target, None, False, None, 0, None, None, int(genuine.size),
            "not supported: no group has enough non-mated pairs for this target.",
            fta_mated=mated_fta,
        )
    strictest = min(thresholds, key=lambda k: thresholds[k][0])
    exact, n = thresholds[strictest]
    threshold = floor_threshold(exact, decimals)
    measured = {
        k: float(np.mean(np.asarray(group_non_mated[_split_label(k)]) <= threshold))
        for k in thresholds
    }
    note = (
        f"set by the strictest group, {strictest}; every group listed stays at or under the "
        f"target: " + ", ".join(f"{k} FMR {v:.2e}" for k, v in measured.items())
    )
    if unsupported:
        note += ". Too few non-mated pairs to check this target: " + ", ".join(unsupported)
    return _row(
        name, target, threshold, True, max(measured.values()), n, genuine, mated_fta, note
    )


def _split_label(label: str) -> tuple[str, str]:
    attribute, group = label.split("=", 1)
    return attribute, group


def write_operating_points(
    table: CalibrationTable,
    path: str | os.PathLike[str],
    *,
    default: str | None = None,
    base: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Merge the supported rows of ``table`` into an operating-points JSON file.

    Points of ``base`` (default: ``path`` if it exists, else the shipped
    table) that no calibration measured, such as ``dlib-default``, are kept;
    points from an earlier calibration of the same model id and the same
    distances (raw, or normalized by the same normalizer file) are replaced;
    another model's points (``dlib-resnet-v1+mirror``'s) and the other kind of
    distances (``fmr-1e-3-fair`` beside ``fmr-1e-3``) are kept. The table's
    ``calibration`` record describes the raw calibration of the model id it
    names: a calibration of another model id or of normalized distances leaves
    it as it is (each point carries its own dataset, date and pair counts).
    When ``default`` is not given and the old default is gone, the first kept
    point becomes the default.

    Parameters
    ----------
    default : str, optional
        Name to set as the table's default; must be one of its points.
    """
    source = Path(base) if base else Path(path)
    if source.is_file():
        existing: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    else:
        from importlib import resources

        existing = json.loads(
            resources.files("facetrust").joinpath("data/operating_points.json").read_text()
        )
    normalizer = (table.normalizer or {}).get("file")
    names = {(row.name, table.model_id) for row in table.rows}

    def replaced(point: dict[str, Any]) -> bool:
        # Measured points (they carry a "dataset") of this model and these distances;
        # points that were not measured, such as dlib-default, are kept.
        return (point.get("name"), point.get("model_id")) in names or (
            "dataset" in point and point.get("model_id") == table.model_id
            and point.get("normalizer") == normalizer
        )

    points = [p for p in existing.get("operating_points", []) if not replaced(p)]
    for row in table.rows:
        if not row.supported or row.threshold is None:
            continue
        points.append(operating_point_entry(table, row))
    points.sort(key=lambda p: str(p.get("model_id")))  # each model's points together, in order
    result = {**existing, "operating_points": points}
    record = existing.get("calibration")
    if normalizer is None and (not record or record.get("model_id") == table.model_id):
        result["calibration"] = {
            "dataset": table.dataset,
            "date": table.date,
            "model_id": table.model_id,
            "non_mated_set": table.impostor_set,
        }
    # The default is a name, looked up per model: it must exist for the model calibrated.
    known = [p["name"] for p in points if p.get("model_id") == table.model_id]
    if default is not None:
        if default not in known:
            raise EvaluationError(
                f"The default operating point {default!r} is not in the table. Known: "
                + ", ".join(known)
            )
        result["default"] = default
    elif result.get("default") not in known:
        # The old default was measured by the calibration this one replaces.
        result["default"] = known[0]
    Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def operating_point_entry(table: CalibrationTable, row: CalibrationRow) -> dict[str, Any]:
    """The operating-points entry of one supported row (what :func:`write_operating_points`
    writes, and what a gallery records for a custom model)."""
    normalizer = table.normalizer
    kind = "normalized distance" if normalizer else "distance"
    rejects = (
        f"; {row.false_reject_rate:.4f} of {row.n_mated + row.fta_mated} with the "
        f"{row.fta_mated} mated pairs the pipeline refused counted as false rejects."
        if row.fta_mated else " (the pipeline refused none)."
    )
    how = "facetrust evaluate calibrate" + (
        f" --normalizer {normalizer['file']}" if normalizer else ""
    )
    note = row.note
    if normalizer:
        note = (
            f"distances normalized by {normalizer['file']} ({normalizer.get('kind')}, "
            f"{normalizer.get('clusters')} clusters, fitted for FMR "
            f"{normalizer.get('target_fmr'):g} without demographic labels); the rates are "
            "in-sample when the normalizer was fitted on these images. " + note
        ).strip()
    return {
        "name": row.name,
        "model_id": table.model_id,
        "metric": "euclidean",
        "threshold": row.threshold,  # rounded down; the rates are measured there
        "target_fmr": row.target_fmr,
        **({"normalizer": normalizer["file"]} if normalizer else {}),
        "description": (
            f"Largest {kind} with FMR <= {row.target_fmr:g} on {table.dataset}"
            + (" in every labelled group" if "-all-groups" in row.name else "")
            + f"; FNMR there {row.fnmr:.4f} on {row.n_mated} mated pairs" + rejects
        ),
        "source": f"measured by {how} on {table.dataset}",
        "dataset": table.dataset,
        "date": table.date,
        "n_non_mated": row.n_non_mated,
        "n_mated": row.n_mated,
        "measured_fmr": row.measured_fmr,
        "fnmr": row.fnmr,
        "fta_mated": row.fta_mated,
        "false_reject_rate": row.false_reject_rate,
        "note": note,
    }
