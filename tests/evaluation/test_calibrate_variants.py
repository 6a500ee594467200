"""``facetrust evaluate calibrate`` for every shipped kind of operating point, through the
installed command: the plain model, an augmented model id (``+mirror``) and normalized
distances (``--normalizer``, the ``-fair`` points), one protocol for all of them."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from facetrust.evaluation.cache import CachedImage
from facetrust.evaluation.pairs import read_pairs
from facetrust.matching import OperatingPoint
from facetrust.score_normalization import load_normalizer
from installed_command import installed_runner

from .conftest import LABELS, PAIRS, SAMPLE

SHIPPED_TABLE = Path(str(resources.files("facetrust").joinpath("data/operating_points.json")))
SHIPPED_NORMALIZER = SHIPPED_TABLE.parent / "normalizer-fsn-lfw.json"


def _calibrate(table: Path, cache: Path, *extra: str, code: int = 0, **settings: str) -> Any:
    facetrust = installed_runner(**settings)
    return facetrust(
        "evaluate", "calibrate", "--images", str(SAMPLE), "--pairs", str(PAIRS),
        "--labels", str(LABELS), "--dataset", "sample", "--write-calibration", str(table),
        "--cache", str(cache), "--workers", "1", "--no-progress", *extra, code=code,
    )


def _points(table: dict[str, Any], model_id: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in table["operating_points"] if p["model_id"] == model_id}


def _normalized_pairs(images: dict[str, CachedImage]) -> tuple[np.ndarray, np.ndarray]:
    """Normalized distances of every cross-identity pair of acquired sample photos, and of
    the sample pairs file's mated pairs, computed here pair by pair."""
    normalizer = load_normalizer(SHIPPED_NORMALIZER)

    def distance(a: str, b: str) -> float:
        va, vb = (images[p].subject_face().vector.astype(np.float64) for p in (a, b))  # type: ignore[union-attr]
        raw = float(np.linalg.norm(va - vb))
        return float(normalizer.normalize([raw], va[None], vb[None])[0])

    acquired = sorted(p for p, image in images.items() if image.acquired)
    non_mated = [distance(a, b) for a, b in combinations(acquired, 2)
                 if Path(a).parent.name != Path(b).parent.name]
    mated = [distance(p.image_a, p.image_b) for p in read_pairs(PAIRS, SAMPLE) if p.same]
    return np.array(non_mated), np.array(mated)


def test_calibrate_with_a_normalizer_writes_the_fair_point_and_keeps_the_rest(
    cache_file: Path, sample_images: dict[str, CachedImage], tmp_path: Path
) -> None:
    table = tmp_path / "operating_points.json"
    shutil.copy(SHIPPED_TABLE, table)
    before = json.loads(table.read_text())
    done = _calibrate(table, cache_file, "--normalizer", str(SHIPPED_NORMALIZER),
                      "--target", "1e-2")
    after = json.loads(table.read_text())
    fair = _points(after, "dlib-resnet-v1")["fmr-1e-2-fair"]
    assert fair["normalizer"] == "normalizer-fsn-lfw.json"
    # The same protocol as the plain points: every cross-identity pair of acquired photos,
    # the pairs file's mated pairs, the threshold floored to 6 decimals and measured there.
    non_mated, mated = _normalized_pairs(sample_images)
    threshold = fair["threshold"]
    assert fair["n_non_mated"] == non_mated.size and fair["n_mated"] == mated.size
    assert np.mean(non_mated <= threshold) <= 1e-2 < np.mean(non_mated <= threshold + 1e-6)
    assert round(threshold, 6) == threshold
    assert fair["measured_fmr"] == np.mean(non_mated <= threshold)
    assert fair["fnmr"] == np.mean(mated > threshold)
    assert fair["false_reject_rate"] == np.mean(mated > threshold)  # no refused mated pair
    assert "normalized" in fair["description"] and "normalizer-fsn-lfw.json" in fair["note"]
    point = OperatingPoint(**{k: v for k, v in fair.items()
                              if k in OperatingPoint.__dataclass_fields__})
    assert point.score_normalizer() is not None
    # Raw distances give another threshold: the normalizer was applied.
    raw_row = json.loads(done.stdout)["calibration"]["rows"]
    assert [r["name"] for r in raw_row] == ["fmr-1e-2-fair"]  # no worst-group row normalized
    # The earlier calibration with this normalizer (fmr-1e-3-fair) is replaced; nothing
    # else changed: the plain points, the other models', the calibration record.
    assert "fmr-1e-3-fair" not in _points(after, "dlib-resnet-v1")
    raw = [p for p in before["operating_points"] if "normalizer" not in p]
    assert [p for p in after["operating_points"] if "normalizer" not in p] == raw
    assert after["calibration"] == before["calibration"]
    assert after["default"] == before["default"]


def test_calibrate_with_mirror_writes_its_own_points_and_refuses_a_plain_normalizer(
    tmp_path: Path,
) -> None:
    table = tmp_path / "operating_points.json"
    shutil.copy(SHIPPED_TABLE, table)
    before = json.loads(table.read_text())
    cache = tmp_path / "mirror.sqlite"
    _calibrate(table, cache, FACETRUST_AUGMENTATION="mirror")
    after = json.loads(table.read_text())
    mirror = _points(after, "dlib-resnet-v1+mirror")
    assert mirror["fmr-1e-2"]["dataset"] == "sample"  # 720 pairs: only 1e-2 is supported
    assert "fmr-1e-3" not in mirror  # the earlier calibration of +mirror is replaced
    # The plain model's points, the fair point and the table's calibration record stay.
    assert _points(after, "dlib-resnet-v1") == _points(before, "dlib-resnet-v1")
    assert _points(after, "dlib-resnet-v1+jitter") == _points(before, "dlib-resnet-v1+jitter")
    assert after["calibration"] == before["calibration"]
    # A normalizer fitted on plain descriptors cannot normalize mirror ones.
    done = _calibrate(table, cache, "--normalizer", str(SHIPPED_NORMALIZER), code=2,
                      FACETRUST_AUGMENTATION="mirror")
    assert done.stderr.startswith("error:") and "dlib-resnet-v1+mirror" in done.stderr
    assert json.loads(table.read_text()) == after


def test_a_normalizer_fitted_by_evaluate_fairness_is_calibrated_by_evaluate_calibrate(
    cache_file: Path, tmp_path: Path
) -> None:
    """The two steps behind the shipped fair point: fit and save, then calibrate."""
    normalizer = tmp_path / "normalizer-fsn-sample.json"
    facetrust = installed_runner()
    facetrust(
        "evaluate", "fairness", "--images", str(SAMPLE), "--labels", str(LABELS),
        "--dataset", "sample", "--folds", "2", "--clusters", "2",
        "--normalizer-output", str(normalizer), "--cache", str(cache_file), "--workers", "1",
        "--no-progress",
    )
    assert load_normalizer(normalizer).model_id == "dlib-resnet-v1"
    table = tmp_path / "operating_points.json"
    shutil.copy(SHIPPED_TABLE, table)
    _calibrate(table, cache_file, "--normalizer", str(normalizer), "--target", "1e-2")
    fair = _points(json.loads(table.read_text()), "dlib-resnet-v1")["fmr-1e-2-fair"]
    assert fair["normalizer"] == normalizer.name and fair["n_non_mated"] == 720


def test_evaluate_fairness_refuses_write_calibration_and_leaves_the_table(
    cache_file: Path, tmp_path: Path
) -> None:
    """One way to set a fair point: ``evaluate calibrate --normalizer``. The older
    ``evaluate fairness --write-calibration`` wrote an in-sample point set on a
    3,000-image sample over the shipped one; it is now an unknown option."""
    table = tmp_path / "operating_points.json"
    shutil.copy(SHIPPED_TABLE, table)
    before = table.read_bytes()
    normalizer = tmp_path / "normalizer.json"
    done = installed_runner()(
        "evaluate", "fairness", "--images", str(SAMPLE), "--labels", str(LABELS),
        "--dataset", "sample", "--folds", "2", "--clusters", "2",
        "--normalizer-output", str(normalizer), "--write-calibration", str(table),
        "--cache", str(cache_file), "--workers", "1", "--no-progress", code=2,
    )
    assert "--write-calibration" in done.stderr
    assert table.read_bytes() == before
    assert not normalizer.exists()  # refused before any work
