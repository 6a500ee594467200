"""Calibration tables, the rule of three, and the operating-points file they feed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetrust.errors import EvaluationError
from facetrust.evaluation.calibration import (
    calibrate,
    floor_threshold,
    fmr_name,
    write_operating_points,
)
from facetrust.matching import OperatingPoint


def test_rows_say_which_targets_the_data_supports() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.uniform(0.4, 1.2, 5000)
    mated = rng.uniform(0.1, 0.6, 300)
    table = calibrate(impostor, mated, model_id="m", dataset="synthetic")
    rows = {r.name: r for r in table.rows}
    assert rows["fmr-1e-2"].supported and rows["fmr-1e-3"].supported
    assert not rows["fmr-1e-4"].supported and rows["fmr-1e-4"].threshold is None
    assert "rule of three" in rows["fmr-1e-4"].note
    assert rows["fmr-1e-4"].lowest_supported_fmr == pytest.approx(3 / 5000)
    t2, t3 = rows["fmr-1e-2"].threshold, rows["fmr-1e-3"].threshold
    assert t2 is not None and t3 is not None and t3 < t2
    assert np.mean(impostor <= t2) <= 1e-2
    assert rows["fmr-1e-2"].fnmr == pytest.approx(np.mean(mated > t2))


def test_worst_group_threshold_keeps_every_group_under_the_target() -> None:
    rng = np.random.default_rng(1)
    groups = {
        ("g", "a"): rng.uniform(0.5, 1.2, 4000),
        ("g", "b"): rng.uniform(0.3, 1.2, 4000),  # more false matches: sets the threshold
        ("g", "tiny"): rng.uniform(0.0, 1.2, 50),
    }
    table = calibrate(
        np.concatenate(list(groups.values())), rng.uniform(0.1, 0.6, 100),
        model_id="m", dataset="synthetic", group_non_mated=groups, targets=(1e-2,),
    )
    worst = next(r for r in table.rows if r.name == "fmr-1e-2-all-groups")
    assert worst.threshold is not None
    for key in (("g", "a"), ("g", "b")):
        assert np.mean(groups[key] <= worst.threshold) <= 1e-2
    assert "g=b" in worst.note and "g=tiny (50 pairs)" in worst.note


def test_written_table_is_read_by_operating_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    table = calibrate(rng.uniform(0.4, 1.2, 5000), rng.uniform(0.1, 0.6, 300),
                      model_id="dlib-resnet-v1", dataset="synthetic")
    out = tmp_path / "operating_points.json"
    written = write_operating_points(table, out, default="fmr-1e-3")
    data = json.loads(out.read_text())
    assert data == written and data["default"] == "fmr-1e-3"
    # another model's points (dlib-resnet-v1+mirror) are kept, untouched
    names = [p["name"] for p in data["operating_points"] if p["model_id"] == "dlib-resnet-v1"]
    assert "dlib-default" in names and "fmr-1e-3" in names and "fmr-1e-4" not in names
    fields = OperatingPoint.__dataclass_fields__
    for entry in data["operating_points"]:
        point = OperatingPoint(**{k: v for k, v in entry.items() if k in fields})
        assert point.threshold > 0
    assert "fmr-1e-2-all-groups" not in names  # points of an earlier calibration are replaced
    with pytest.raises(EvaluationError, match="not in the table"):
        write_operating_points(table, out, default="fmr-1e-4")
    # Without --default, a default that the new calibration dropped falls back to a kept point.
    again = write_operating_points(table, tmp_path / "again.json")
    assert again["default"] in {p["name"] for p in again["operating_points"]}


def test_recalibration_keeps_the_normalized_point(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    table = calibrate(rng.uniform(0.4, 1.2, 5000), rng.uniform(0.1, 0.6, 300),
                      model_id="dlib-resnet-v1", dataset="synthetic")
    out = tmp_path / "operating_points.json"
    written = write_operating_points(table, out)  # from the shipped table
    kept = {p["name"]: p for p in written["operating_points"] if p["model_id"] == "dlib-resnet-v1"}
    assert kept["fmr-1e-3-fair"]["normalizer"] == "normalizer-fsn-lfw.json"
    assert "fmr-1e-2-all-groups" not in kept  # a measured point without normalizer is replaced


def test_operating_point_names() -> None:
    assert fmr_name(1e-3) == "fmr-1e-3"
    assert fmr_name(1e-4, all_groups=True) == "fmr-1e-4-all-groups"


def test_each_model_keeps_its_own_points_under_the_same_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    plain = calibrate(rng.uniform(0.4, 1.2, 5000), rng.uniform(0.1, 0.6, 300),
                      model_id="dlib-resnet-v1", dataset="synthetic")
    mirror = calibrate(rng.uniform(0.3, 1.0, 5000), rng.uniform(0.1, 0.5, 300),
                       model_id="dlib-resnet-v1+mirror", dataset="synthetic")
    out = tmp_path / "points.json"
    write_operating_points(plain, out)
    written = write_operating_points(mirror, out)
    by_model = {(p["name"], p["model_id"]) for p in written["operating_points"]}
    assert {("fmr-1e-3", "dlib-resnet-v1"), ("fmr-1e-3", "dlib-resnet-v1+mirror")} <= by_model
    again = write_operating_points(mirror, out)  # recalibrating one model replaces only its own
    assert len(again["operating_points"]) == len(written["operating_points"])


def test_operating_point_lookup_picks_the_models_own_point() -> None:
    from facetrust.matching import get_operating_point, operating_points

    for model_id in {p.model_id for p in operating_points()}:
        point = get_operating_point("fmr-1e-3", model_id)
        assert (point.name, point.model_id) == ("fmr-1e-3", model_id)
    assert get_operating_point("fmr-1e-3").model_id == "dlib-resnet-v1"


def test_written_thresholds_are_rounded_down_and_measured_where_written(tmp_path: Path) -> None:
    # 1,000 non-mated distances, the 11th smallest at 0.5000006: FMR 1e-2 allows 10 false
    # matches, so the threshold lies just under it, and rounding it to the nearest 6
    # decimals (0.500001) would take that pair in: FMR 0.011 while the file says 0.01.
    rng = np.random.default_rng(0)
    impostor = np.concatenate([np.linspace(0.3, 0.49, 10), [0.5000006], rng.uniform(0.6, 1.2, 989)])
    # A mated pair between the rounded and the exact threshold: rejected at the written one.
    mated = np.concatenate([rng.uniform(0.2, 0.45, 99), [0.5000003]])
    table = calibrate(impostor, mated, model_id="m", dataset="synthetic", targets=(1e-2,),
                      group_non_mated={("race", "x"): impostor})
    written = write_operating_points(table, tmp_path / "points.json")
    points = {p["name"]: p for p in written["operating_points"] if p["model_id"] == "m"}
    assert set(points) == {"fmr-1e-2", "fmr-1e-2-all-groups"}
    for point in points.values():
        threshold = point["threshold"]
        assert threshold == 0.5  # 0.50000059... rounded down, not up to 0.500001
        assert np.mean(impostor <= threshold) <= point["target_fmr"]
        assert point["measured_fmr"] == np.mean(impostor <= threshold) == 0.01
        assert point["fnmr"] == np.mean(mated > threshold) == 0.01
        assert f"FNMR there {np.mean(mated > threshold):.4f}" in point["description"]
    assert "race=x FMR 1.00e-02" in points["fmr-1e-2-all-groups"]["note"]


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [(0.5000006, 6, 0.5), (0.5457999, 4, 0.5457), (0.6, 6, 0.6), (0.12345678, 6, 0.123456)],
)
def test_floor_threshold_never_rounds_up(value: float, decimals: int, expected: float) -> None:
    rounded = floor_threshold(value, decimals)
    assert rounded == expected and rounded <= value


def test_rows_report_the_false_reject_rate_with_refused_mated_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    impostor = rng.uniform(0.4, 1.2, 5000)
    mated = rng.uniform(0.1, 0.7, 300)
    table = calibrate(impostor, mated, model_id="m", dataset="synthetic", targets=(1e-2,),
                      mated_fta=20, group_non_mated={("g", "a"): impostor})
    for row in table.rows:
        assert row.threshold is not None and row.fnmr is not None
        assert row.fnmr == np.mean(mated > row.threshold)  # compared pairs only
        assert row.fta_mated == 20 and row.n_mated == 300
        assert row.false_reject_rate == pytest.approx(
            (np.sum(mated > row.threshold) + 20) / 320
        )
    written = write_operating_points(table, tmp_path / "points.json")
    point = next(p for p in written["operating_points"]
                 if (p["model_id"], p["name"]) == ("m", "fmr-1e-2"))
    assert point["fta_mated"] == 20
    assert point["false_reject_rate"] == table.rows[0].false_reject_rate
    assert "with the 20 mated pairs the pipeline refused counted as false rejects" in (
        point["description"]
    )
