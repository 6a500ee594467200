"""The LFW View 2 verification protocol: 10-fold accuracy, EER and TAR at fixed FMR.

For each fold the threshold that maximises accuracy on the other nine folds
is applied to it. A pair in which either image gave no face (failure to
acquire, FTA) is counted as an error in accuracy whatever the threshold, and
is counted separately; it is never dropped silently. EER, TAR and FNMR at FMR
are computed over all pairs whose two faces were acquired (the standard
definitions); next to them, the false-reject rate at each FMR counts every
mated pair, a refused one as a reject (what a user of ``verify`` sees).

Which face: the one the product's pipeline picks (its default face policy,
the same for ``verify``, ``identify`` and ``enroll``), and an image the
pipeline refuses (no face, several faces with no clear subject, below the
quality minimums) is a failure to acquire, counted by reason. Only a cache
filled without a face policy (every face) falls back to the face nearest the
image centre (:meth:`CachedImage.subject_face`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import EvaluationError
from .cache import CachedImage
from .metrics import equal_error_rate, true_accept_rate_at_fmr
from .pairs import Pair

#: Target FMRs at which TAR is reported.
TAR_TARGETS = (1e-2, 1e-3)


@dataclass(frozen=True)
class FaceChoiceCounts:
    """How faces were chosen in the images an evaluation used.

    Attributes
    ----------
    images : int
        Distinct images.
    no_face : int
        Images in which no face was found or which could not be read (FTA).
    several_faces : int
        Images with more than one face found whose subject face was used.
    centre_not_largest : int
        Images where the face nearest the centre was not the largest (only
        without a face policy).
    low_quality : int
        Images whose face the pipeline refused as below the quality minimums (FTA).
    several_faces_refused : int
        Images the face policy refused for holding several faces and no clear
        subject (FTA).
    """

    images: int
    no_face: int
    several_faces: int
    centre_not_largest: int
    low_quality: int = 0
    several_faces_refused: int = 0

    @property
    def acquired(self) -> int:
        """Images with a face the evaluation used."""
        return self.images - self.no_face - self.low_quality - self.several_faces_refused


@dataclass(frozen=True)
class PairsEvaluation:
    """Result of the 10-fold pairs protocol.

    Attributes
    ----------
    fold_accuracies : list of float
        Accuracy of each fold, FTA pairs counted as errors.
    fold_thresholds : list of float
        Distance threshold chosen on the other folds for each fold.
    mean_accuracy, std_accuracy : float
        Mean and (population) standard deviation of ``fold_accuracies``.
    eer, eer_threshold : float
        Equal error rate (lower is better) and the distance where it occurs.
    tar_at_fmr : dict
        ``{target_fmr: {"tar", "fnmr", "false_reject_rate", "threshold",
        "false_matches", "n_impostor", "supported"}}``. ``tar`` and ``fnmr``
        (``1 - tar``) are over the acquired mated pairs; ``false_reject_rate``
        is over all ``n_mated`` mated pairs, the ``fta_mated`` refused ones
        counted as rejects.
    n_pairs, n_mated, n_non_mated : int
    fta_pairs, fta_mated, fta_non_mated : int
        Pairs with at least one image where no face was acquired.
    faces : FaceChoiceCounts
    labels : ndarray of bool, shape (n_acquired,)
        True for mated pairs, for the acquired pairs.
    distances : ndarray of float, shape (n_acquired,)
        Euclidean distance of each acquired pair (lower is more similar).
    """

    fold_accuracies: list[float]
    fold_thresholds: list[float]
    mean_accuracy: float
    std_accuracy: float
    eer: float
    eer_threshold: float
    tar_at_fmr: dict[float, dict[str, Any]]
    n_pairs: int
    n_mated: int
    n_non_mated: int
    fta_pairs: int
    fta_mated: int
    fta_non_mated: int
    faces: FaceChoiceCounts
    labels: npt.NDArray[np.bool_] = field(repr=False)
    distances: npt.NDArray[np.float64] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (no per-pair arrays)."""
        return {
            "n_pairs": self.n_pairs,
            "n_mated": self.n_mated,
            "n_non_mated": self.n_non_mated,
            "mean_accuracy": self.mean_accuracy,
            "std_accuracy": self.std_accuracy,
            "fold_accuracies": self.fold_accuracies,
            "fold_thresholds": self.fold_thresholds,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "tar_at_fmr": {f"{k:g}": v for k, v in self.tar_at_fmr.items()},
            "failure_to_acquire": {
                "pairs": self.fta_pairs,
                "pair_rate": self.fta_pairs / self.n_pairs if self.n_pairs else 0.0,
                "mated_pairs": self.fta_mated,
                "non_mated_pairs": self.fta_non_mated,
                "images": self.faces.images - self.faces.acquired,
                "no_face_images": self.faces.no_face,
                "several_faces_images": self.faces.several_faces_refused,
                "low_quality_images": self.faces.low_quality,
                "rule": "a pair with an image the pipeline refuses (no face, several faces, "
                "quality) counts as an error in accuracy and, if mated, as a false reject in "
                "false_reject_rate; it is left out of EER, TAR and FNMR",
            },
            "face_choice": {
                "images": self.faces.images,
                "several_faces": self.faces.several_faces,
                "centre_not_largest": self.faces.centre_not_largest,
                "rule": "the face the pipeline's face policy picks",
            },
        }


def subject_vectors(
    images: Mapping[str, CachedImage],
) -> tuple[dict[str, npt.NDArray[np.float32]], FaceChoiceCounts]:
    """The chosen face's embedding of each image that has one, and counts of the choices."""
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    several = differs = low_quality = refused_several = 0
    for path, image in images.items():
        refused_several += image.error_type == "MultipleFaces"
        low_quality += image.error_type == "FaceQualityTooLow"
        face = image.subject_face()
        if face is None:
            continue
        vectors[path] = face.vector
        if len(image.faces) > 1:
            several += 1
            differs += face is not image.faces[0]
    no_face = len(images) - len(vectors) - refused_several - low_quality
    counts = FaceChoiceCounts(
        len(images), no_face, several, differs, low_quality, refused_several
    )
    return vectors, counts


def best_threshold(labels: npt.ArrayLike, distances: npt.ArrayLike) -> float:
    """The distance threshold that maximises accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct distances (and
    points just outside the range); ties go to the smallest (strictest) one.
    """
    y = np.asarray(labels, dtype=bool)
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        raise EvaluationError("Cannot choose a threshold from zero acquired pairs.")
    values = np.unique(d)
    candidates = np.concatenate(
        [[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]]
    )
    genuine = np.sort(d[y])
    impostor = np.sort(d[~y])
    true_accepts = np.searchsorted(genuine, candidates, side="right")
    true_rejects = impostor.size - np.searchsorted(impostor, candidates, side="right")
    return float(candidates[int(np.argmax(true_accepts + true_rejects))])


def evaluate_pairs(
    pairs: Sequence[Pair],
    images: Mapping[str, CachedImage],
    *,
    tar_targets: Sequence[float] = TAR_TARGETS,
) -> PairsEvaluation:
    """Run the k-fold verification protocol on ``pairs`` with embeddings from ``images``.

    Parameters
    ----------
    pairs : sequence of Pair
        With ``fold`` set (0..k-1); LFW View 2 has 10 folds of 600 pairs.
    images : mapping
        Image path -> :class:`CachedImage` for every image the pairs name
        (as from :meth:`EmbeddingCache.get_or_compute`).

    Raises
    ------
    EvaluationError
        An image has no entry, fewer than two folds, or too few acquired pairs.
    """
    unknown = {p for pair in pairs for p in (pair.image_a, pair.image_b)} - set(images)
    if unknown:
        raise EvaluationError(
            f"No embedding result for {len(unknown)} image(s) named in the pairs, e.g. "
            f"{sorted(unknown)[0]}. Embed every image of the pairs first."
        )
    used = {p: images[p] for pair in pairs for p in (pair.image_a, pair.image_b)}
    vectors, counts = subject_vectors(used)
    folds = np.array([pair.fold for pair in pairs])
    same = np.array([pair.same for pair in pairs], dtype=bool)
    acquired = np.array(
        [pair.image_a in vectors and pair.image_b in vectors for pair in pairs], dtype=bool
    )
    distances = np.full(len(pairs), np.nan)
    for i, pair in enumerate(pairs):
        if acquired[i]:
            diff = vectors[pair.image_a].astype(np.float64) - vectors[pair.image_b]
            distances[i] = float(np.sqrt(diff @ diff))
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise EvaluationError(
            f"The protocol needs at least 2 folds; the pairs have {fold_ids.size}."
        )
    accuracies, thresholds = [], []
    for fold in fold_ids:
        test = folds == fold
        train = ~test & acquired
        threshold = best_threshold(same[train], distances[train])
        predicted = acquired[test] & (distances[test] <= threshold)
        correct = acquired[test] & (predicted == same[test])
        accuracies.append(float(np.mean(correct)))
        thresholds.append(threshold)
    y, d = same[acquired], distances[acquired]
    if y.all() or not y.any():
        raise EvaluationError("Need both mated and non-mated acquired pairs to compute the EER.")
    eer, eer_threshold = equal_error_rate(y, d)
    fta = ~acquired
    fta_mated = int((fta & same).sum())
    tar: dict[float, dict[str, Any]] = {}
    for target in tar_targets:
        rate, point = true_accept_rate_at_fmr(y, d, target)
        misses = int(np.sum(d[y] > point.threshold))
        tar[target] = {
            "tar": rate,
            "fnmr": misses / int(y.sum()),
            "false_reject_rate": (misses + fta_mated) / int(same.sum()),
            "threshold": point.threshold,
            "false_matches": point.false_matches,
            "n_impostor": point.n_impostor,
            "supported": point.supported,
        }
    return PairsEvaluation(
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        mean_accuracy=float(np.mean(accuracies)),
        std_accuracy=float(np.std(accuracies)),
        eer=eer,
        eer_threshold=eer_threshold,
        tar_at_fmr=tar,
        n_pairs=len(pairs),
        n_mated=int(same.sum()),
        n_non_mated=int((~same).sum()),
        fta_pairs=int(fta.sum()),
        fta_mated=fta_mated,
        fta_non_mated=int((fta & ~same).sum()),
        faces=counts,
        labels=y,
        distances=d,
    )
