"""Demographic audit: error rates per group, from the dataset's own labels.

The group labels are ground truth from an evaluation dataset's files (for
LFW: per-image gender, per-identity race). facetrust never predicts a
demographic attribute from a face.

Per group, following NIST FRVT Part 3: mated pairs are pairs of images of
one identity in the group; non-mated pairs are drawn **within** the group
(two different identities of the same group), because that is where false
matches happen. Each group gets FMR and FNMR at one operating threshold,
with identity-bootstrap 95% confidence intervals, its failure-to-acquire
rate, and each attribute the max/min ratios of FMR and FNMR across groups.

Mated pairs are drawn from the group's labelled images whether or not the
pipeline acquired them, like the pairs of a pairs file. The FNMR counts those
whose two images were acquired (the standard definition); the false-reject
rate beside it counts all of them, a pair with a refused image as a reject.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError
from ..images import IMAGE_SUFFIXES
from ..score_normalization import ScoreNormalizer
from .bootstrap import identity_bootstrap_ci
from .cache import CachedImage

#: A subject face whose box centre lies farther than this fraction of the image's
#: shorter side from the image centre is counted as a wrong face (see :func:`is_wrong_face`).
WRONG_FACE_OFFSET = 0.2

#: (distances, identity) of mated pairs and (distances, identity_a, identity_b) of non-mated.
_MatedPairs = tuple[npt.NDArray[np.float64], npt.NDArray[Any]]
_NonMatedPairs = tuple[npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]


@dataclass(frozen=True)
class AttributeLabels:
    """Ground-truth group labels for one attribute, per image and/or per identity.

    Attributes
    ----------
    attribute : str
        e.g. ``"gender"``.
    by_image : dict
        Image name without extension (``"Aaron_Eckhart_0001"``) -> group.
    by_identity : dict
        Identity (folder name) -> group; used when the image has no label.
    source : str
        Where the labels come from.
    excluded : dict
        Reason -> how many labels were left out (conflicting or multiple values).
    """

    attribute: str
    by_image: Mapping[str, str]
    by_identity: Mapping[str, str]
    source: str
    excluded: Mapping[str, int] = field(default_factory=dict)

    def group_of(self, path: str) -> str | None:
        """The group of an image file, or ``None`` when it is not labelled."""
        location = Path(path)
        return self.by_image.get(location.stem) or self.by_identity.get(location.parent.name)

    def unmatched(self, paths: Sequence[str]) -> int:
        """How many labelled images/identities are absent from ``paths``."""
        stems = {Path(p).stem for p in paths}
        identities = {Path(p).parent.name for p in paths}
        return sum(k not in stems for k in self.by_image) + sum(
            k not in identities for k in self.by_identity
        )


def load_labels(path: str | os.PathLike[str]) -> list[AttributeLabels]:
    """Load group labels from an LFW labels folder, one of its files, or a CSV.

    Accepted:

    - a folder holding ``male_names.txt``/``female_names.txt`` (gender per image)
      and/or ``lfw_race_dict.json`` (race per identity);
    - ``lfw_race_dict.json`` alone: identity -> comma-joined races; only
      identities with a single race are used (the others are counted in
      ``excluded``);
    - a CSV ``image_or_identity,attribute,value`` (header optional): a key
      ending in an image extension names an image, any other an identity.

    Raises
    ------
    EvaluationError
        The path is missing, holds no labels, or a line is malformed.
    """
    location = Path(path)
    if location.is_dir():
        labels = []
        if (location / "male_names.txt").is_file() or (location / "female_names.txt").is_file():
            labels.append(_lfw_gender(location))
        if (location / "lfw_race_dict.json").is_file():
            labels.append(_race_dict(location / "lfw_race_dict.json"))
        if not labels:
            raise EvaluationError(
                f"The labels folder {location} holds neither male_names.txt/female_names.txt "
                "nor lfw_race_dict.json. Pass LFW's labels folder or a CSV of "
                "image_or_identity,attribute,value."
            )
        return labels
    if not location.is_file():
        raise EvaluationError(
            f"The labels file {location} does not exist. Pass LFW's labels folder or a CSV "
            "of image_or_identity,attribute,value."
        )
    if location.suffix == ".json":
        return [_race_dict(location)]
    return _labels_csv(location)


def _stem(name: str) -> str:
    name = name.strip()
    return Path(name).stem if name.lower().endswith(IMAGE_SUFFIXES) else name


def _lfw_gender(folder: Path) -> AttributeLabels:
    values: dict[str, set[str]] = defaultdict(set)
    for group, filename in (("male", "male_names.txt"), ("female", "female_names.txt")):
        file = folder / filename
        if file.is_file():
            for line in file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    values[_stem(line)].add(group)
    conflicting = sum(len(v) > 1 for v in values.values())
    return AttributeLabels(
        "gender",
        {k: next(iter(v)) for k, v in values.items() if len(v) == 1},
        {},
        f"{folder}/male_names.txt, female_names.txt (per image)",
        {"images in both files": conflicting} if conflicting else {},
    )


def _race_dict(file: Path) -> AttributeLabels:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EvaluationError(
            f"Could not read {file} as a JSON object of identity -> race: {error}."
        ) from None
    if not isinstance(raw, dict):
        raise EvaluationError(f"{file} must hold a JSON object of identity -> race.")
    single = {k: str(v) for k, v in raw.items() if "," not in str(v)}
    multiple = len(raw) - len(single)
    return AttributeLabels(
        "race",
        {},
        single,
        f"{file} (per identity, single-label identities only)",
        {"identities with several labels": multiple} if multiple else {},
    )


def _labels_csv(file: Path) -> list[AttributeLabels]:
    by_image: dict[str, dict[str, str]] = defaultdict(dict)
    by_identity: dict[str, dict[str, str]] = defaultdict(dict)
    with open(file, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and row[0].strip().lower() == "image_or_identity"):
                continue
            if len(row) != 3 or not all(cell.strip() for cell in row):
                raise EvaluationError(
                    f"{file}, line {number}: expected 'image_or_identity,attribute,value'. "
                    f"Got {','.join(row)!r}."
                )
            key, attribute, value = (cell.strip() for cell in row)
            target = by_image if key.lower().endswith(IMAGE_SUFFIXES) else by_identity
            target[attribute][_stem(key)] = value
    attributes = sorted(set(by_image) | set(by_identity))
    if not attributes:
        raise EvaluationError(f"The labels file {file} holds no labels.")
    return [
        AttributeLabels(a, by_image.get(a, {}), by_identity.get(a, {}), str(file))
        for a in attributes
    ]


@dataclass(frozen=True)
class GroupResult:
    """Error rates of one group at the operating threshold.

    Attributes
    ----------
    attribute, group : str
    n_images, n_identities : int
        Labelled images of the group and their identities.
    fta_images : int
        Of them, images where no face was acquired.
    fta_first_pass_images : int or None
        Images where the first detection pass found no face (before a fallback
        detector retried them); ``None`` when not known.
    n_mated, n_non_mated : int
        Pairs compared, both images acquired (non-mated: both identities in
        the group).
    fmr, fnmr : float or None
        Rates at the threshold (lower is better); ``None`` without pairs.
    fmr_ci, fnmr_ci : (float, float) or None
        Identity-bootstrap confidence intervals.
    status : str
        ``"ok"``, or why the group is too small to compare.
    fta_mated_pairs : int
        Mated pairs drawn but not compared because the pipeline refused one
        of their images (not in ``n_mated`` nor in the FNMR).
    false_reject_rate : float or None
        False non-matches plus ``fta_mated_pairs``, over
        ``n_mated + fta_mated_pairs`` (lower is better); ``None`` without
        mated pairs.
    false_reject_ci : (float, float) or None
        Its identity-bootstrap confidence interval.
    """

    attribute: str
    group: str
    n_images: int
    n_identities: int
    fta_images: int
    n_mated: int
    n_non_mated: int
    fmr: float | None
    fnmr: float | None
    fmr_ci: tuple[float, float] | None
    fnmr_ci: tuple[float, float] | None
    status: str
    fta_first_pass_images: int | None = None
    wrong_face_images: int | None = None
    fta_ci: tuple[float, float] | None = None
    wrong_face_ci: tuple[float, float] | None = None
    fta_mated_pairs: int = 0
    false_reject_rate: float | None = None
    false_reject_ci: tuple[float, float] | None = None

    @property
    def wrong_face_rate(self) -> float | None:
        """Fraction of the group's images where the face used is likely not the named person."""
        if self.wrong_face_images is None or not self.n_images:
            return None
        return self.wrong_face_images / self.n_images

    @property
    def fta_rate(self) -> float:
        """Fraction of the group's images where no face was acquired."""
        return self.fta_images / self.n_images if self.n_images else 0.0

    @property
    def fta_first_pass_rate(self) -> float | None:
        """Fraction of the group's images the first detection pass missed."""
        if self.fta_first_pass_images is None or not self.n_images:
            return None
        return self.fta_first_pass_images / self.n_images

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "group": self.group,
            "n_images": self.n_images,
            "n_identities": self.n_identities,
            "fta_images": self.fta_images,
            "fta_rate": self.fta_rate,
            "fta_first_pass_images": self.fta_first_pass_images,
            "fta_first_pass_rate": self.fta_first_pass_rate,
            "fta_ci95": list(self.fta_ci) if self.fta_ci else None,
            "wrong_face_images": self.wrong_face_images,
            "wrong_face_rate": self.wrong_face_rate,
            "wrong_face_ci95": list(self.wrong_face_ci) if self.wrong_face_ci else None,
            "n_mated": self.n_mated,
            "n_non_mated": self.n_non_mated,
            "fmr": self.fmr,
            "fmr_ci95": list(self.fmr_ci) if self.fmr_ci else None,
            "fnmr": self.fnmr,
            "fnmr_ci95": list(self.fnmr_ci) if self.fnmr_ci else None,
            "fta_mated_pairs": self.fta_mated_pairs,
            "false_reject_rate": self.false_reject_rate,
            "false_reject_rate_ci95": (
                list(self.false_reject_ci) if self.false_reject_ci else None
            ),
            "status": self.status,
        }


@dataclass(frozen=True)
class Differential:
    """Max/min ratios of a rate across the groups of one attribute with enough pairs.

    ``None`` ratios mean the smallest rate was 0 (the ratio is unbounded) or
    fewer than two groups could be compared.
    """

    attribute: str
    groups: tuple[str, ...]
    fmr_ratio: float | None
    fnmr_ratio: float | None
    fmr_max_group: str | None
    fmr_min_group: str | None
    fnmr_max_group: str | None
    fnmr_min_group: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DemographicAudit:
    """Per-group results, differentials, and what the labels did not cover.

    Attributes
    ----------
    threshold : float
        Distance threshold the rates are measured at (match when <=).
    operating_point : str
    groups : list of GroupResult
    differentials : list of Differential
    label_notes : list of dict
        Per attribute: source, labels naming images absent from the set, labels excluded.
    group_non_mated : dict
        ``(attribute, group)`` -> non-mated distances, for calibration (not serialised).
    """

    threshold: float
    operating_point: str
    groups: list[GroupResult]
    differentials: list[Differential]
    label_notes: list[dict[str, Any]]
    group_non_mated: dict[tuple[str, str], npt.NDArray[np.float64]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "operating_point": self.operating_point,
            "groups": [g.to_dict() for g in self.groups],
            "differentials": [d.to_dict() for d in self.differentials],
            "labels": self.label_notes,
        }


def is_wrong_face(image: CachedImage, max_offset: float = WRONG_FACE_OFFSET) -> bool:
    """Whether the face a centred-subject dataset (LFW) would use is likely not its subject.

    True when a face was found and either the face nearest the centre (the
    one used, :meth:`CachedImage.subject_face`) has its box centre farther
    than ``max_offset`` x the image's shorter side from the image centre
    (LFW crops centre the named person, so an off-centre face is a
    bystander), or the image shows several faces and the largest one is not
    the central one (a plain "largest face" rule would pick a bystander).
    """
    face = image.subject_face()
    if face is None or not image.width or not image.height:
        return False
    fx = (face.box.left + face.box.right) / 2
    fy = (face.box.top + face.box.bottom) / 2
    offset = float(np.hypot(fx - image.width / 2, fy - image.height / 2))
    return offset > max_offset * min(image.width, image.height) or face is not image.faces[0]


def pairwise_distances(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Euclidean distances between all rows: array (n, dim) -> (n, n)."""
    x = np.asarray(vectors, dtype=np.float64)
    squared = np.einsum("ij,ij->i", x, x)
    d2 = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)
    result: npt.NDArray[np.float64] = np.sqrt(np.clip(d2, 0.0, None))
    return result


def _pairs_of_group(
    paths: list[str],
    vectors: Mapping[str, npt.NDArray[np.float32]],
    rng: np.random.Generator,
    max_images_per_identity: int,
    max_group_images: int,
    normalizer: ScoreNormalizer | None = None,
    clusters: Mapping[str, int] | None = None,
) -> tuple[_MatedPairs, _NonMatedPairs]:
    """Mated pairs among all ``paths`` and non-mated pairs among the acquired ones.

    A mated pair with an image the pipeline refused (not in ``vectors``) has
    distance NaN: drawn, but not compared.
    """
    by_identity: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_identity[Path(path).parent.name].append(path)
    mated_d, mated_id = [], []
    for identity, members in sorted(by_identity.items()):
        if len(members) < 2:
            continue
        chosen = sorted(members)
        if len(chosen) > max_images_per_identity:
            picks = rng.choice(len(chosen), max_images_per_identity, replace=False)
            chosen = [chosen[i] for i in sorted(picks)]
        for a, b in combinations(chosen, 2):
            if a not in vectors or b not in vectors:
                mated_d.append(np.nan)
                mated_id.append(identity)
                continue
            diff = vectors[a].astype(np.float64) - vectors[b]
            distance = float(np.sqrt(diff @ diff))
            if normalizer is not None and clusters is not None:
                distance = float(
                    normalizer.normalize_assigned([distance], [clusters[a]], [clusters[b]])[0]
                )
            mated_d.append(distance)
            mated_id.append(identity)
    sample = sorted(p for p in paths if p in vectors)
    if len(sample) > max_group_images:
        picks = rng.choice(len(sample), max_group_images, replace=False)
        sample = [sample[i] for i in sorted(picks)]
    ids = np.array([Path(p).parent.name for p in sample])
    if len(sample) >= 2:
        matrix = pairwise_distances(np.stack([vectors[p] for p in sample]))
        i, j = np.triu_indices(len(sample), k=1)
        cross = ids[i] != ids[j]
        i, j = i[cross], j[cross]
        distances = matrix[i, j]
        if normalizer is not None and clusters is not None:
            assigned = np.array([clusters[p] for p in sample])
            distances = normalizer.normalize_assigned(distances, assigned[i], assigned[j])
        non_mated = (distances, ids[i], ids[j])
    else:
        empty = np.zeros(0, dtype=ids.dtype)
        non_mated = (np.zeros(0), empty, empty)
    return (np.asarray(mated_d), np.asarray(mated_id)), non_mated


def audit_groups(
    images: Mapping[str, CachedImage],
    labels: Sequence[AttributeLabels],
    threshold: float,
    *,
    operating_point: str = "",
    min_pairs: int = 30,
    max_images_per_identity: int = 10,
    max_group_images: int = 1500,
    replicates: int = 200,
    seed: int = 0,
    first_pass_missed: Set[str] | None = None,
    normalizer: ScoreNormalizer | None = None,
) -> DemographicAudit:
    """FMR and FNMR per labelled group at ``threshold``, with confidence intervals.

    Each group also gets its failure-to-acquire and wrong-face rates
    (:func:`is_wrong_face`) with identity-bootstrap 95% intervals.

    Parameters
    ----------
    images : mapping
        Image path -> :class:`CachedImage`; LFW layout ``<identity>/<image>.jpg``.
    labels : sequence of AttributeLabels
    threshold : float
        Euclidean distance; a pair matches when ``distance <= threshold``.
    min_pairs : int
        A group needs this many mated and non-mated pairs to enter the
        differentials; smaller groups are reported with a status saying so.
    max_images_per_identity : int
        Mated pairs use at most this many images per identity (seeded
        sample), so a few much-photographed people do not dominate.
    max_group_images : int
        Non-mated pairs are all cross-identity pairs among a seeded sample
        of at most this many images of the group.
    replicates, seed : int
        Bootstrap replicates and the seed of every random draw.
    first_pass_missed : set of str, optional
        Images the first detection pass missed (before a fallback detector):
        gives each group's first-pass failure-to-acquire rate.
    normalizer : ScoreNormalizer, optional
        Applied to every distance before ``threshold`` (an operating point
        that names a normalizer, such as ``fmr-1e-3-fair``).

    Raises
    ------
    EvaluationError
        No label names any of the images.
    """
    paths = sorted(images)
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    for path in paths:
        face = images[path].subject_face()
        if face is not None:
            vectors[path] = face.vector
    clusters: dict[str, int] | None = None
    if normalizer is not None and vectors:
        keys = sorted(vectors)
        assigned = normalizer.clusters_of(np.stack([vectors[k] for k in keys]))
        clusters = dict(zip(keys, (int(c) for c in assigned), strict=True))
    groups: list[GroupResult] = []
    differentials: list[Differential] = []
    notes: list[dict[str, Any]] = []
    non_mated_by_group: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
    labelled_any = False
    for attribute in labels:
        members: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            group = attribute.group_of(path)
            if group is not None:
                members[group].append(path)
        labelled_any = labelled_any or bool(members)
        notes.append(
            {
                "attribute": attribute.attribute,
                "source": attribute.source,
                "labelled_images": sum(len(v) for v in members.values()),
                "labels_naming_unknown_images_or_identities": attribute.unmatched(paths),
                "excluded": dict(attribute.excluded),
            }
        )
        results = []
        for group in sorted(members):
            rng = np.random.default_rng(seed)
            group_paths = members[group]
            acquired = [p for p in group_paths if p in vectors]
            (mated, mated_id), (non_mated, id_a, id_b) = _pairs_of_group(
                group_paths, vectors, rng, max_images_per_identity, max_group_images,
                normalizer, clusters,
            )
            non_mated_by_group[(attribute.attribute, group)] = non_mated
            result = _group_result(
                    attribute.attribute,
                    group,
                    group_paths,
                    len(acquired),
                    (mated, mated_id),
                    (non_mated, id_a, id_b),
                    threshold,
                    min_pairs,
                    replicates,
                    seed,
                )
            if first_pass_missed is not None:
                missed = sum(p in first_pass_missed for p in group_paths)
                result = dataclasses.replace(result, fta_first_pass_images=missed)
            result = dataclasses.replace(
                result, **_detection_rates(images, group_paths, replicates, seed)
            )
            results.append(result)
        groups.extend(results)
        differentials.append(_differential(attribute.attribute, results))
    if not labelled_any:
        raise EvaluationError(
            "None of the labels names an image of this set (by file name or identity "
            "folder). Check that the labels belong to these images."
        )
    return DemographicAudit(
        threshold, operating_point, groups, differentials, notes, non_mated_by_group
    )


def _detection_rates(
    images: Mapping[str, CachedImage], group_paths: list[str], replicates: int, seed: int
) -> dict[str, Any]:
    """Wrong-face count and the FTA / wrong-face identity-bootstrap intervals of one group."""
    identities = [Path(p).parent.name for p in group_paths]
    missed = np.array([images[p].subject_face() is None for p in group_paths], dtype=bool)
    wrong = np.array([is_wrong_face(images[p]) for p in group_paths], dtype=bool)
    if not group_paths:
        return {"wrong_face_images": 0}
    return {
        "wrong_face_images": int(wrong.sum()),
        "fta_ci": identity_bootstrap_ci(missed, identities, replicates=replicates, seed=seed),
        "wrong_face_ci": identity_bootstrap_ci(
            wrong, identities, replicates=replicates, seed=seed
        ),
    }


def _group_result(
    attribute: str,
    group: str,
    group_paths: list[str],
    n_acquired: int,
    mated: _MatedPairs,
    non_mated: _NonMatedPairs,
    threshold: float,
    min_pairs: int,
    replicates: int,
    seed: int,
) -> GroupResult:
    drawn_d, drawn_id = mated
    refused = np.isnan(drawn_d)
    mated_d, mated_id = drawn_d[~refused], drawn_id[~refused]
    nm_d, nm_a, nm_b = non_mated
    fnmr = fnmr_ci = fmr = fmr_ci = frr = frr_ci = None
    if mated_d.size:
        misses = mated_d > threshold
        fnmr = float(misses.mean())
        fnmr_ci = identity_bootstrap_ci(misses, mated_id, replicates=replicates, seed=seed)
    if drawn_d.size:
        rejects = refused.copy()
        rejects[~refused] = mated_d > threshold
        frr = float(rejects.mean())
        frr_ci = identity_bootstrap_ci(rejects, drawn_id, replicates=replicates, seed=seed)
    if nm_d.size:
        false_matches = nm_d <= threshold
        fmr = float(false_matches.mean())
        fmr_ci = identity_bootstrap_ci(
            false_matches, nm_a, nm_b, replicates=replicates, seed=seed
        )
    problems = []
    if mated_d.size < min_pairs:
        problems.append(f"{mated_d.size} mated pairs")
    if nm_d.size < min_pairs:
        problems.append(f"{nm_d.size} non-mated pairs")
    status = (
        "ok"
        if not problems
        else f"too few pairs ({', '.join(problems)}; need {min_pairs} of each)"
    )
    return GroupResult(
        attribute=attribute,
        group=group,
        n_images=len(group_paths),
        n_identities=len({Path(p).parent.name for p in group_paths}),
        fta_images=len(group_paths) - n_acquired,
        n_mated=int(mated_d.size),
        n_non_mated=int(nm_d.size),
        fmr=fmr,
        fnmr=fnmr,
        fmr_ci=fmr_ci,
        fnmr_ci=fnmr_ci,
        status=status,
        fta_mated_pairs=int(refused.sum()),
        false_reject_rate=frr,
        false_reject_ci=frr_ci,
    )


def _ratio(
    results: list[GroupResult], rate: str
) -> tuple[float | None, str | None, str | None]:
    values = [(getattr(r, rate), r.group) for r in results]
    if len(values) < 2:
        return None, None, None
    high = max(values)
    low = min(values)
    ratio = high[0] / low[0] if low[0] > 0 else None
    return ratio, high[1], low[1]


def _differential(attribute: str, results: list[GroupResult]) -> Differential:
    usable = [r for r in results if r.status == "ok"]
    fmr_ratio, fmr_max, fmr_min = _ratio(usable, "fmr")
    fnmr_ratio, fnmr_max, fnmr_min = _ratio(usable, "fnmr")
    return Differential(
        attribute,
        tuple(r.group for r in usable),
        fmr_ratio,
        fnmr_ratio,
        fmr_max,
        fmr_min,
        fnmr_max,
        fnmr_min,
    )

