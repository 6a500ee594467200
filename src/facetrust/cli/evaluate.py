"""``facetrust evaluate pairs | demographics | calibrate``: measure facetrust on real photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..config import Settings
from ..evaluation.run import (
    EvaluationRun,
    run_calibration,
    run_demographics,
    run_fairness,
    run_pairs,
)
from ..gallery.config import GALLERY_ENV, operating_point_of

#: Exit status of ``evaluate demographics`` when the fairness gate fails.
EXIT_FAIRNESS_GATE = 3

images_option = click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of <identity>/<image> files (for LFW: lfw-deepfunneled).",
)
cache_option = click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Embedding cache file (default: embeddings.sqlite in the user cache dir, "
    "or $FACETRUST_CACHE_DIR).",
)
workers_option = click.option(
    "--workers", type=int, default=None, help="Worker processes (default: one per core)."
)
progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True,
    help="Progress bar with rate and ETA while embedding.",
)
report_option = click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.html (self-contained) and report.json into this folder.",
)
labels_option = click.option(
    "--labels",
    "labels",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Group labels: LFW's labels folder, lfw_race_dict.json, or a CSV of "
    "image_or_identity,attribute,value. Repeatable.",
)


def _emit(run: EvaluationRun, extra: dict[str, Any] | None = None) -> None:
    click.echo(json.dumps({**run.summary(), **(extra or {})}, indent=2, default=str))


@click.group()
def evaluate() -> None:
    """Measure accuracy and fairness on a labelled dataset and calibrate thresholds."""


@evaluate.command("pairs")
@images_option
@click.option("--pairs", "pairs_file", required=True, type=click.Path(path_type=Path),
              help="LFW pairs.txt (View 2) or CSV of image_a,image_b,same[,fold].")
@cache_option
@workers_option
@progress_option
@report_option
def pairs_command(
    images: Path,
    pairs_file: Path,
    cache_path: Path | None,
    workers: int | None,
    progress: bool,
    report_dir: Path | None,
) -> None:
    """10-fold verification accuracy, EER, TAR at FMR 1e-2/1e-3 and failures to acquire."""
    run = run_pairs(images, pairs_file, cache=cache_path, settings=Settings.from_env(),
                    workers=workers, progress=progress, report_dir=report_dir)
    _emit(run)


@evaluate.command("demographics")
@images_option
@labels_option
@click.option("--operating-point", "-p", default=None,
              help="Threshold name from the calibration table (default: the gallery's, "
              "else the table's default).")
@click.option("--threshold", type=float, default=None,
              help="Distance threshold instead of a named operating point.")
@click.option("--min-pairs", type=int, default=30, show_default=True,
              help="Pairs a group needs (of each kind) to enter the differentials.")
@click.option("--max-fmr-ratio", type=float, default=None,
              help="Fairness gate: exit with status 3 when any measured group's FMR exceeds "
              "this many times the best group's (same attribute) at the operating point.")
@click.option("--gallery", "gallery_path", type=click.Path(), default=None, envvar=GALLERY_ENV,
              help="Gallery config file or folder whose operating point is the default "
              "(default: the current folder's gallery, if any).")
@cache_option
@workers_option
@progress_option
@report_option
def demographics_command(
    images: Path,
    labels: tuple[Path, ...],
    operating_point: str | None,
    threshold: float | None,
    min_pairs: int,
    max_fmr_ratio: float | None,
    gallery_path: str | None,
    cache_path: Path | None,
    workers: int | None,
    progress: bool,
    report_dir: Path | None,
) -> None:
    """FMR and FNMR per labelled group with 95% CIs, and their max/min differentials.

    Measured at the gallery's operating point (--gallery, FACETRUST_GALLERY or
    the current folder's gallery; the table's default without one) unless
    --operating-point or --threshold names another. With --max-fmr-ratio R,
    exits with status 3 when the FMR differential exceeds R (a deployment
    check), after printing the results.
    """
    if operating_point is None and threshold is None:
        operating_point = operating_point_of(gallery_path)
    run = run_demographics(images, labels, operating_point=operating_point, threshold=threshold,
                           cache=cache_path, settings=Settings.from_env(), workers=workers,
                           progress=progress, report_dir=report_dir, min_pairs=min_pairs,
                           max_fmr_ratio=max_fmr_ratio)
    _emit(run)
    if run.gate is not None:
        click.echo(("fairness gate passed: " if run.gate.passed else "fairness gate FAILED: ")
                   + run.gate.message, err=True)
        if not run.gate.passed:
            raise SystemExit(EXIT_FAIRNESS_GATE)


@evaluate.command("fairness")
@images_option
@labels_option
@click.option("--dataset", required=True, help="Dataset name written into the table.")
@click.option("--folds", type=int, default=5, show_default=True, help="Identity folds.")
@click.option("--clusters", "clusters", type=int, multiple=True, default=(10, 20, 50, 100),
              show_default=True, help="Candidate k-means cluster counts (repeatable).")
@click.option("--normalizer-output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Fit fair score normalization on every image and save it here.")
@cache_option
@workers_option
@progress_option
@report_option
def fairness_command(
    images: Path,
    labels: tuple[Path, ...],
    dataset: str,
    folds: int,
    clusters: tuple[int, ...],
    normalizer_output: Path | None,
    cache_path: Path | None,
    workers: int | None,
    progress: bool,
    report_dir: Path | None,
) -> None:
    """Per-group FMR/FNMR before and after score normalization, on held-out identities.

    With --normalizer-output, fits the normalizer on every image and saves it;
    `evaluate calibrate --normalizer FILE` then sets its operating point.
    """
    run = run_fairness(images, labels, dataset=dataset, folds=folds, clusters=clusters,
                       normalizer_output=normalizer_output, cache=cache_path,
                       settings=Settings.from_env(), workers=workers, progress=progress,
                       report_dir=report_dir)
    _emit(run)


@evaluate.command("calibrate")
@images_option
@click.option("--pairs", "pairs_file", required=True, type=click.Path(path_type=Path),
              help="LFW pairs.txt (View 2) or CSV; its mated pairs give the FNMR column.")
@labels_option
@click.option("--dataset", required=True, help="Dataset name written into the table.")
@click.option("--write-calibration", "output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Merge the measured operating points into this JSON table.")
@click.option("--default", "default", default=None,
              help="Operating point to make the table's default.")
@click.option("--normalizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Score normalizer file (as shipped in facetrust/data): calibrate normalized "
              "distances, written as fmr-<target>-fair points that name the file.")
@click.option("--target", "targets", type=float, multiple=True,
              help="Target FMR (repeatable; default 1e-2, 1e-3 and 1e-4, or the "
              "normalizer's own target with --normalizer).")
@cache_option
@workers_option
@progress_option
@report_option
def calibrate_command(
    images: Path,
    pairs_file: Path,
    labels: tuple[Path, ...],
    dataset: str,
    output: Path | None,
    default: str | None,
    normalizer: Path | None,
    targets: tuple[float, ...],
    cache_path: Path | None,
    workers: int | None,
    progress: bool,
    report_dir: Path | None,
) -> None:
    """Pairs protocol + demographic audit + thresholds for FMR 1e-2, 1e-3, 1e-4.

    The descriptors are those of the settings: FACETRUST_AUGMENTATION=mirror
    calibrates the dlib-resnet-v1+mirror points. With --normalizer, the
    thresholds are set on normalized distances (the fmr-1e-3-fair point).
    """
    run = run_calibration(images, pairs_file, labels, dataset=dataset, output=output,
                          default=default, normalizer=normalizer, targets=targets or None,
                          cache=cache_path, settings=Settings.from_env(), workers=workers,
                          progress=progress, report_dir=report_dir)
    _emit(run)


COMMANDS = [evaluate]
