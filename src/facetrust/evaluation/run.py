"""End-to-end evaluation runs on an image folder: what each ``facetrust evaluate`` command does.

Each function reads the inputs, embeds the images the cache lacks, computes
the measurements and optionally writes the report; the CLI only calls them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..batch import embed_many
from ..config import Settings
from ..errors import EvaluationError, InvalidParameter
from ..images import IMAGE_SUFFIXES
from ..matching import OperatingPoint, get_operating_point
from ..pipeline import FacePipeline
from ..score_normalization import ScoreNormalizer, load_normalizer
from .cache import CachedImage, EmbeddingCache
from .calibration import (
    CALIBRATION_TARGETS,
    MAX_IMPOSTOR_IMAGES,
    NORMALIZED_SUFFIX,
    CalibrationTable,
    calibrate,
    impostor_distances,
    write_operating_points,
)
from .demographics import DemographicAudit, audit_groups, load_labels
from .fair_point import fit_shipped_normalizer
from .fairness_gate import FairnessGate, fmr_ratio_gate
from .mitigation import (
    LabelledTemplates,
    MitigationStudy,
    study_mitigation,
    templates_from_images,
)
from .pairs import Pair, read_pairs
from .protocol import PairsEvaluation, evaluate_pairs
from .report import ReportFiles, write_report


@dataclass(frozen=True)
class EvaluationRun:
    """What one evaluation run produced.

    Attributes
    ----------
    pairs : PairsEvaluation or None
    demographics : DemographicAudit or None
    calibration : CalibrationTable or None
    report : ReportFiles or None
    timings : dict
        Seconds spent embedding (``embed_s``) and in total (``total_s``).
    cache : dict
        ``images``, ``computed`` (embedded now) and ``hits`` (from the cache).
    """

    pairs: PairsEvaluation | None = None
    demographics: DemographicAudit | None = None
    calibration: CalibrationTable | None = None
    report: ReportFiles | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    gate: FairnessGate | None = None
    mitigation: MitigationStudy | None = None
    shipped: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary of the run."""
        out: dict[str, Any] = {"timings": self.timings, "cache": self.cache}
        if self.pairs is not None:
            out["pairs"] = self.pairs.summary()
        if self.demographics is not None:
            out["demographics"] = self.demographics.to_dict()
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.gate is not None:
            out["fairness_gate"] = self.gate.to_dict()
        if self.mitigation is not None:
            out["mitigation"] = self.mitigation.to_dict()
        if self.shipped is not None:
            out["shipped"] = self.shipped
        if self.report is not None:
            out["report"] = {"html": str(self.report.html), "json": str(self.report.json)}
        return out


def list_images(folder: str | os.PathLike[str]) -> list[str]:
    """Image files directly in ``folder`` or one level down (``<identity>/<image>``), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationError(
            f"The images folder {root} does not exist. Pass the folder that holds "
            "<identity>/<image>.jpg (for LFW: lfw-deepfunneled)."
        )
    found = [
        str(p)
        for pattern in ("*", "*/*")
        for p in root.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found)


def _embed(
    cache: EmbeddingCache,
    paths: Sequence[str],
    workers: int | None,
    progress: bool,
) -> tuple[dict[str, CachedImage], float, dict[str, int]]:
    """Embed ``paths`` through the cache with the product's pipeline.

    Returns the results, the seconds spent, and counts: ``images``,
    ``computed``, ``hits``, and the images the pipeline refused by reason
    (``refused_no_face``, ``refused_several_faces``, ``refused_quality``,
    ``unreadable``), which the evaluation counts as failures to acquire.
    """
    computed, hits = cache.computed_, cache.hits_
    start = time.perf_counter()
    images = cache.get_or_compute(paths, workers=workers, progress=progress)
    kinds = [i.error_type for i in images.values()]
    counts = {
        "images": len(images),
        "computed": cache.computed_ - computed,
        "hits": cache.hits_ - hits,
        "refused_no_face": sum(
            k == "NoFaceFound" or (k is None and not i.faces)
            for k, i in zip(kinds, images.values(), strict=True)
        ),
        "refused_several_faces": kinds.count("MultipleFaces"),
        "refused_quality": kinds.count("FaceQualityTooLow"),
    }
    counts["unreadable"] = sum(not i.acquired for i in images.values()) - sum(
        counts[k] for k in ("refused_no_face", "refused_several_faces", "refused_quality")
    )
    return images, time.perf_counter() - start, counts


def _acquisition_meta(counts: dict[str, int], cache: EmbeddingCache) -> dict[str, str]:
    """One report line on what the pipeline refused (failures to acquire)."""
    policy = cache.face_policy or "every face, centre one used"
    return {
        "acquisition": (
            f"face policy {policy}; refused (failures to acquire: errors in accuracy, "
            "false rejects in the false-reject rate, left out of FNMR and FMR): "
            f"{counts.get('refused_no_face', 0)} no face, "
            f"{counts.get('refused_several_faces', 0)} several faces, "
            f"{counts.get('refused_quality', 0)} below the quality minimums, "
            f"{counts.get('unreadable', 0)} unreadable, of {counts.get('images', 0)} images"
        )
    }


def _open_cache(
    cache: EmbeddingCache | str | os.PathLike[str] | None,
    settings: Settings | None,
    pipeline: FacePipeline | None = None,
) -> EmbeddingCache:
    if pipeline is None:
        return cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache, settings)
    if cache is not None or settings is not None:
        raise InvalidParameter(
            "An evaluation takes a pipeline, or settings and a cache, not both: the "
            "pipeline's embeddings are kept in memory for the run (a cache file could serve "
            "descriptors of an earlier version of a custom embedder under the same model "
            "id). Drop 'cache' and 'settings'."
        )

    def compute(paths: Sequence[str], _settings: Settings, **options: Any) -> Any:
        return embed_many(paths, pipeline=pipeline, **options)

    return EmbeddingCache(":memory:", pipeline.settings, model_id=pipeline.model_id,
                          compute=compute)


def run_pairs(
    images_dir: str | os.PathLike[str],
    pairs_file: str | os.PathLike[str],
    *,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    progress: bool = False,
    report_dir: str | os.PathLike[str] | None = None,
) -> EvaluationRun:
    """``facetrust evaluate pairs``: the 10-fold protocol on a pairs file.

    Images are read by the same pipeline as ``verify`` (detector cascade with
    recovery, the default face policy, quality minimums); what it refuses is
    a failure to acquire, counted as an error and reported by reason.

    Raises
    ------
    EvaluationError
        Malformed pairs file, images it names are missing, too few pairs.
    """
    start = time.perf_counter()
    pairs = read_pairs(pairs_file, images_dir)
    store = _open_cache(cache, settings)
    paths = sorted({p for pair in pairs for p in (pair.image_a, pair.image_b)})
    images, embed_s, counts = _embed(store, paths, workers, progress)
    evaluation = evaluate_pairs(pairs, images)
    report = None
    if report_dir is not None:
        report = write_report(
            report_dir,
            title=f"facetrust verification accuracy: {Path(pairs_file).name}",
            evaluation=evaluation,
            meta={"images": str(images_dir), "pairs file": str(pairs_file),
                  "model": store.model_id, "pipeline": store.variant,
                  **_acquisition_meta(counts, store)},
        )
    total = time.perf_counter() - start
    return EvaluationRun(
        pairs=evaluation,
        report=report,
        timings={"embed_s": embed_s, "total_s": total},
        cache=counts,
    )


def _threshold(
    operating_point: str | OperatingPoint | None, threshold: float | None, model_id: str
) -> tuple[float, str, ScoreNormalizer | None]:
    if threshold is not None:
        return float(threshold), f"threshold {threshold}", None
    if isinstance(operating_point, OperatingPoint):
        if operating_point.model_id != model_id:
            raise EvaluationError(
                f"The operating point {operating_point.name!r} is {operating_point.model_id!r}'s; "
                f"this run embeds {model_id!r} descriptors. Pass that model's point "
                "(gallery.operating_point() of the gallery whose pipeline this is)."
            )
        point = operating_point
    else:
        point = get_operating_point(operating_point, model_id)
    return point.threshold, point.name, point.score_normalizer()


def run_demographics(
    images_dir: str | os.PathLike[str],
    labels: Sequence[str | os.PathLike[str]],
    *,
    operating_point: str | OperatingPoint | None = None,
    threshold: float | None = None,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    progress: bool = False,
    report_dir: str | os.PathLike[str] | None = None,
    min_pairs: int = 30,
    seed: int = 0,
    max_fmr_ratio: float | None = None,
    pipeline: FacePipeline | None = None,
) -> EvaluationRun:
    """``facetrust evaluate demographics``: FMR/FNMR per labelled group.

    Every labelled image in ``images_dir`` is used. ``threshold`` (a
    distance) overrides ``operating_point`` (a name, or an
    :class:`~facetrust.matching.OperatingPoint` such as a gallery's
    ``gallery.operating_point()``); by default the table's default
    operating point is used. An operating point that names a score
    normalizer (``fmr-1e-3-fair``) has it applied to every distance.
    ``max_fmr_ratio`` runs the fairness gate (:func:`fmr_ratio_gate`); the
    run's ``gate`` says whether it passed. ``pipeline`` (a gallery's, with a
    custom embedder, say) embeds instead of one built from ``settings``, as
    in :func:`run_calibration`.
    """
    start = time.perf_counter()
    attribute_labels = [a for path in labels for a in load_labels(path)]
    store = _open_cache(cache, settings, pipeline)
    value, name, normalizer = _threshold(operating_point, threshold, store.model_id)
    paths = [p for p in list_images(images_dir) if any(a.group_of(p) for a in attribute_labels)]
    if not paths:
        raise EvaluationError(
            f"No image in {images_dir} is named by the labels. Check that the labels "
            "belong to these images (LFW names: <Name>/<Name>_NNNN.jpg)."
        )
    images, embed_s, counts = _embed(store, paths, workers, progress)
    audit = audit_groups(
        images, attribute_labels, value, operating_point=name, min_pairs=min_pairs, seed=seed,
        normalizer=normalizer,
    )
    gate = None if max_fmr_ratio is None else fmr_ratio_gate(audit, max_fmr_ratio)
    report = None
    if report_dir is not None:
        report = write_report(
            report_dir,
            title="facetrust demographic audit",
            audit=audit,
            meta={"images": str(images_dir), "labels": ", ".join(map(str, labels)),
                  "model": store.model_id, "pipeline": store.variant,
                  **_acquisition_meta(counts, store),
                  **({"fairness gate": gate.message} if gate else {})},
        )
    return EvaluationRun(
        demographics=audit,
        gate=gate,
        report=report,
        timings={"embed_s": embed_s, "total_s": time.perf_counter() - start},
        cache=counts,
    )


def run_fairness(
    images_dir: str | os.PathLike[str],
    labels: Sequence[str | os.PathLike[str]],
    *,
    dataset: str,
    folds: int = 5,
    clusters: Sequence[int] = (10, 20, 50, 100),
    target_fmr: float = 1e-3,
    ship_method: str = "fsn",
    normalizer_output: str | os.PathLike[str] | None = None,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    progress: bool = False,
    report_dir: str | os.PathLike[str] | None = None,
    replicates: int = 200,
    seed: int = 0,
) -> EvaluationRun:
    """``facetrust evaluate fairness``: does score normalization shrink the gap?

    Runs :func:`~facetrust.evaluation.mitigation.study_mitigation` (identity-
    disjoint folds, one threshold per method at ``target_fmr``). With
    ``normalizer_output``, ``ship_method`` is then fitted on every image of the
    folder (fitting needs no demographic label) with the number of clusters the
    folds chose most often, and saved there: ``evaluate calibrate --normalizer``
    (:func:`run_calibration`) sets its operating point with the protocol of every
    other point, the one way to set a fair point. The run's ``shipped`` record
    also gives the in-sample threshold measured on a seeded sample of templates
    (:func:`~facetrust.evaluation.fair_point.fit_shipped_normalizer`), for
    information only: nothing writes it to an operating-points table.
    """
    start = time.perf_counter()
    templates, store, embed_s, counts = _labelled_templates(
        images_dir, labels, cache, settings, workers, progress
    )
    study = study_mitigation(templates, folds=folds, clusters=clusters, target_fmr=target_fmr,
                             replicates=replicates, seed=seed)
    shipped = None
    if normalizer_output is not None:
        chosen = study.method(ship_method).clusters
        k = max(set(chosen), key=lambda c: (chosen.count(c), -c))
        normalizer, measured = fit_shipped_normalizer(
            templates, model_id=store.model_id, method=ship_method, clusters=k,
            target_fmr=target_fmr, seed=seed,
        )
        normalizer.save(normalizer_output)
        shipped = {"normalizer": str(normalizer_output), **measured}
    report = None
    if report_dir is not None:
        report = write_report(
            report_dir,
            title=f"facetrust: reducing the demographic gap on {dataset}",
            mitigation=study,
            meta={"dataset": dataset, "images": str(images_dir),
                  "labels": ", ".join(map(str, labels)), "model": store.model_id,
                  "pipeline": store.variant, **_acquisition_meta(counts, store)},
        )
    return EvaluationRun(
        mitigation=study,
        shipped=shipped,
        report=report,
        timings={"embed_s": embed_s, "total_s": time.perf_counter() - start},
        cache=counts,
    )


def load_templates(
    images_dir: str | os.PathLike[str],
    labels: Sequence[str | os.PathLike[str]],
    *,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[LabelledTemplates, dict[str, int]]:
    """The subject template, identity and group labels of every image of a folder.

    Images the cache lacks are embedded first. Returns the templates and the
    cache counts (``images``, ``computed``, ``hits``...).
    """
    templates, _, _, counts = _labelled_templates(
        images_dir, labels, cache, settings, workers, progress
    )
    return templates, counts


def _labelled_templates(
    images_dir: str | os.PathLike[str],
    labels: Sequence[str | os.PathLike[str]],
    cache: EmbeddingCache | str | os.PathLike[str] | None,
    settings: Settings | None,
    workers: int | None,
    progress: bool,
) -> tuple[LabelledTemplates, EmbeddingCache, float, dict[str, int]]:
    """Templates with their labels, the cache used, seconds spent embedding, cache counts."""
    attribute_labels = [a for path in labels for a in load_labels(path)]
    store = _open_cache(cache, settings)
    images, embed_s, counts = _embed(store, list_images(images_dir), workers, progress)
    return templates_from_images(images, attribute_labels), store, embed_s, counts


def _load_normalizer(path: str | os.PathLike[str]) -> ScoreNormalizer:
    try:
        return load_normalizer(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvaluationError(
            f"Could not read the score normalizer {os.fspath(path)}: {error}. Pass a file "
            "written by a normalizer's save (such as facetrust/data/normalizer-fsn-lfw.json)."
        ) from None


def _normalized_mated(
    pairs: Sequence[Pair], images: dict[str, CachedImage], normalizer: ScoreNormalizer
) -> np.ndarray:
    """Normalized distances of the mated pairs whose two images were acquired, in order."""
    faces = [(images[p.image_a].subject_face(), images[p.image_b].subject_face())
             for p in pairs if p.same]
    kept = [(a.vector, b.vector) for a, b in faces if a is not None and b is not None]
    if not kept:
        return np.zeros(0)
    va = np.stack([a for a, _ in kept]).astype(np.float64)
    vb = np.stack([b for _, b in kept]).astype(np.float64)
    return normalizer.normalize(np.linalg.norm(va - vb, axis=1), va, vb)


def run_calibration(
    images_dir: str | os.PathLike[str],
    pairs_file: str | os.PathLike[str],
    labels: Sequence[str | os.PathLike[str]],
    *,
    dataset: str,
    output: str | os.PathLike[str] | None = None,
    default: str | None = None,
    audit_point: str = "fmr-1e-3",
    targets: Sequence[float] | None = None,
    normalizer: str | os.PathLike[str] | None = None,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    progress: bool = False,
    report_dir: str | os.PathLike[str] | None = None,
    max_impostor_images: int = MAX_IMPOSTOR_IMAGES,
    min_pairs: int = 30,
    seed: int = 0,
    pipeline: FacePipeline | None = None,
) -> EvaluationRun:
    """``facetrust evaluate calibrate``: pairs protocol, demographic audit and calibration table.

    Overall thresholds are set on all cross-identity pairs among the images
    with a face in the whole folder (a seeded sample of
    ``max_impostor_images`` of them when there are more); FNMR is measured
    on the pairs file's mated pairs whose two images were acquired, and the
    false-reject rate on all of them, a refused one counted as a reject. The
    demographic audit runs at ``audit_point`` as just calibrated, and its
    within-group non-mated pairs give the ``-all-groups`` rows. ``output``,
    when given, receives the merged
    operating-points table.

    The run's settings pick the descriptors: under ``augmentation="mirror"``
    the rows are ``dlib-resnet-v1+mirror``'s. With ``normalizer`` (a file
    written by a score normalizer's ``save``, fitted for this model id), every
    distance, non-mated and mated, is normalized first; the rows are named
    ``fmr-<target>-fair``, there is no ``-all-groups`` row (the normalization
    is the alternative to the worst group's threshold), the audit runs at
    the normalized point, and ``targets`` defaults to the normalizer's own
    target FMR (:data:`CALIBRATION_TARGETS` without one). Operating points
    name the normalizer by its file name, which must then ship in
    ``facetrust/data``.

    ``pipeline`` embeds the photos instead of one built from ``settings``: a
    gallery's (``gallery.pipeline``), with a custom embedder, say, so that the
    table measures exactly the pipeline the gallery runs, under its model id
    (record it with :meth:`facetrust.gallery.Gallery.record_calibration`). Its
    embeddings are kept in memory for the run, never in a cache file; give it
    without ``cache`` and ``settings``. A pipeline given its own models embeds
    in this process (see :func:`facetrust.batch.embed_many`).

    Raises
    ------
    EvaluationError
        The normalizer was fitted for another model id, a target is out of
        (0, 1), or the data supports none of the targets.
    InvalidParameter
        ``pipeline`` given with ``cache`` or ``settings``.
    """
    start = time.perf_counter()
    store = _open_cache(cache, settings, pipeline)
    fitted = None if normalizer is None else _load_normalizer(normalizer)
    if fitted is not None and fitted.model_id != store.model_id:
        raise EvaluationError(
            f"The normalizer {Path(normalizer or '').name} was fitted on {fitted.model_id} "
            f"descriptors; this run embeds {store.model_id} ones (augmentation "
            f"{store.settings.augmentation!r}). Run with the settings of {fitted.model_id}, "
            "or fit a normalizer on this model's descriptors."
        )
    if targets is None:
        targets = CALIBRATION_TARGETS if fitted is None else (fitted.target_fmr,)
    if not targets or any(not 0 < t < 1 for t in targets):
        raise EvaluationError(
            f"Each target FMR must be a number in (0, 1). Got {list(targets)} instead."
        )
    described = None if fitted is None else {
        "file": Path(normalizer or "").name, "kind": fitted.kind,
        "clusters": len(fitted.centres), "target_fmr": fitted.target_fmr,
    }
    pairs = read_pairs(pairs_file, images_dir)
    attribute_labels = [a for path in labels for a in load_labels(path)]
    every = list_images(images_dir)
    labelled = {p for p in every if any(a.group_of(p) for a in attribute_labels)}
    wanted = sorted(labelled | {p for pair in pairs for p in (pair.image_a, pair.image_b)})
    images, embed_s, counts = _embed(store, wanted, workers, progress)
    evaluation = evaluate_pairs(pairs, images)
    impostor, info = impostor_distances(images, max_images=max_impostor_images, seed=seed,
                                        normalizer=fitted)
    # FNMR on the acquired mated pairs; the refused ones count in the false-reject rate.
    mated = (evaluation.distances[evaluation.labels] if fitted is None
             else _normalized_mated(pairs, images, fitted))
    overall = calibrate(impostor, mated, model_id=store.model_id, dataset=dataset,
                        targets=targets, impostor_set=info, mated_fta=evaluation.fta_mated,
                        normalizer=described)
    supported = [r for r in overall.rows if r.supported and r.threshold is not None]
    if not supported:
        raise EvaluationError(
            f"{info['pairs']} non-mated pairs support none of the target FMRs "
            f"{', '.join(f'{t:g}' for t in targets)}. Use more images."
        )
    # The audit runs at the requested point, or the strictest one this data supports.
    if fitted is not None and not audit_point.endswith(NORMALIZED_SUFFIX):
        audit_point += NORMALIZED_SUFFIX
    point = next((r for r in supported if r.name == audit_point), supported[-1])
    audit_point, audit_threshold = point.name, float(point.threshold or 0.0)
    audit = audit_groups(
        {p: images[p] for p in sorted(labelled)}, attribute_labels, audit_threshold,
        operating_point=audit_point, min_pairs=min_pairs, seed=seed, normalizer=fitted,
    )
    table = calibrate(
        impostor, mated, model_id=store.model_id, dataset=dataset, targets=targets,
        impostor_set=info, min_group_pairs=min_pairs, mated_fta=evaluation.fta_mated,
        group_non_mated=audit.group_non_mated if fitted is None else None,
        normalizer=described,
    )
    if output is not None:
        write_operating_points(table, output, default=default)
    report = None
    if report_dir is not None:
        report = write_report(
            report_dir,
            title=f"facetrust accuracy and fairness: {dataset}",
            evaluation=evaluation,
            audit=audit,
            calibration=table,
            meta={"dataset": dataset, "images": str(images_dir), "pairs file": str(pairs_file),
                  "labels": ", ".join(map(str, labels)), "model": store.model_id,
                  "pipeline": store.variant,
                  "images embedded": f"{counts['images']} ({counts['computed']} computed now)",
                  "impostor pairs (calibration)": int(np.asarray(impostor).size),
                  **({"score normalizer": f"{described['file']} ({described['kind']}, "
                      f"{described['clusters']} clusters)"} if described else {}),
                  **_acquisition_meta(counts, store)},
        )
    return EvaluationRun(
        pairs=evaluation,
        demographics=audit,
        calibration=table,
        report=report,
        timings={"embed_s": embed_s, "total_s": time.perf_counter() - start},
        cache=counts,
    )
