"""The HTML/JSON report and the ``facetrust evaluate`` commands, end to end on the sample."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.evaluation.pairs import read_pairs
from facetrust.evaluation.run import run_calibration

from .conftest import DATA, LABELS, PAIRS, SAMPLE


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_pairs_command_prints_the_summary_and_writes_a_report(
    cache_file: Path, tmp_path: Path
) -> None:
    code, out, _ = _invoke(
        "evaluate", "pairs", "--images", str(SAMPLE), "--pairs", str(PAIRS),
        "--cache", str(cache_file), "--workers", "1", "--no-progress",
        "--report", str(tmp_path / "report"),
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["cache"]["computed"] == 0 and summary["cache"]["hits"] == 38
    assert summary["pairs"]["n_pairs"] == 60
    assert summary["pairs"]["failure_to_acquire"]["pairs"] == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # ROC and DET, inline
    assert "Caveats" in page and "src=\"http" not in page
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    assert record["pairs"]["mean_accuracy"] == summary["pairs"]["mean_accuracy"]


def test_calibrate_command_writes_table_report_and_group_charts(
    cache_file: Path, tmp_path: Path
) -> None:
    table = tmp_path / "operating_points.json"
    code, out, err = _invoke(
        "evaluate", "calibrate", "--images", str(SAMPLE), "--pairs", str(PAIRS),
        "--labels", str(LABELS), "--dataset", "sample", "--write-calibration", str(table),
        "--cache", str(cache_file), "--workers", "1", "--no-progress",
        "--report", str(tmp_path / "report"),
    )
    assert code == 0, err
    summary = json.loads(out)
    rows = {r["name"]: r for r in summary["calibration"]["rows"]}
    # 720 non-mated pairs support FMR 1e-2 but not 1e-3 (3/720 = 4.2e-3).
    assert rows["fmr-1e-2"]["supported"] and not rows["fmr-1e-3"]["supported"]
    assert summary["demographics"]["operating_point"] == "fmr-1e-2"
    points = {p["name"] for p in json.loads(table.read_text())["operating_points"]}
    assert {"dlib-default", "fmr-1e-2"} <= points
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 + 4  # curves + FMR/FNMR per attribute
    assert "Calibration table" in page and "too few pairs" in page


def test_demographics_command_with_a_named_operating_point(
    cache_file: Path, tmp_path: Path
) -> None:
    code, out, _ = _invoke(
        "evaluate", "demographics", "--images", str(SAMPLE), "--labels", str(LABELS),
        "--operating-point", "dlib-default", "--cache", str(cache_file), "--workers", "1",
        "--no-progress", "--min-pairs", "20",
    )
    assert code == 0
    audit = json.loads(out)["demographics"]
    assert audit["operating_point"] == "dlib-default" and audit["threshold"] == 0.6
    assert {g["group"] for g in audit["groups"]} == {"female", "male", "african", "latino"}


def test_bad_input_gives_one_clear_line(tmp_path: Path, cache_file: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1 1\nKofi_Annan 1 2\nKofi_Annan 1\n")
    code, _, err = _invoke(
        "evaluate", "pairs", "--images", str(SAMPLE), "--pairs", str(bad),
        "--cache", str(cache_file), "--no-progress",
    )
    assert code == 2
    assert err.startswith("error:") and "line 3" in err and "Traceback" not in err


def test_every_evaluate_command_has_help() -> None:
    for command in ("pairs", "demographics", "calibrate"):
        code, out, _ = _invoke("evaluate", command, "--help")
        assert code == 0 and "--images" in out and "--report" in out


def _demographics(cache_file: Path, *extra: str) -> tuple[int, str, str]:
    return _invoke(
        "evaluate", "demographics", "--images", str(SAMPLE), "--labels", str(LABELS),
        "--threshold", "0.7", "--cache", str(cache_file), "--workers", "1",
        "--no-progress", "--min-pairs", "20", *extra,
    )


def test_fairness_gate_passes_and_fails_around_the_measured_ratio(cache_file: Path) -> None:
    code, out, _ = _demographics(cache_file)
    assert code == 0
    groups = {g["group"]: g for g in json.loads(out)["demographics"]["groups"]}
    gender = [groups["female"], groups["male"]]
    # The best group counts at least at its rule-of-three bound 3/N.
    best = min(max(g["fmr"], 3 / g["n_non_mated"]) for g in gender)
    ratio = max(g["fmr"] for g in gender) / best
    assert ratio > 1.05  # the sample's two genders differ at this threshold
    code, out, err = _demographics(cache_file, "--max-fmr-ratio", f"{ratio * 1.02:.4f}")
    assert code == 0 and "fairness gate passed" in err
    assert "; this is within the allowed " in err
    assert json.loads(out)["fairness_gate"]["passed"] is True
    code, out, err = _demographics(cache_file, "--max-fmr-ratio", f"{max(1.0, ratio * 0.98):.4f}")
    assert code == 3
    gate = json.loads(out)["fairness_gate"]
    assert gate["passed"] is False and gate["ratio"] == pytest.approx(ratio)
    assert "fairness gate FAILED" in err and "gender=" in err and "Do not deploy" in err
    assert "; this exceeds the allowed " in err


def test_fairness_gate_rejects_a_ratio_below_one(cache_file: Path) -> None:
    code, _, err = _demographics(cache_file, "--max-fmr-ratio", "0.5")
    assert code == 2 and "max_fmr_ratio" in err


def test_fairness_command_has_help() -> None:
    code, out, _ = _invoke("evaluate", "fairness", "--help")
    assert code == 0 and "--normalizer-output" in out and "--report" in out


def test_a_refused_photo_counts_as_a_false_reject_in_json_and_html(
    sample_copy: Path, cache_file: Path, tmp_path: Path
) -> None:
    """A "photo of Serena Williams" in which the pipeline finds no face (a cat)."""
    refused = "Serena_Williams/Serena_Williams_0005.jpg"
    shutil.copy(DATA / "non_faces" / "chelsea_cat.jpg", sample_copy / refused)
    pairs_file = tmp_path / "pairs.csv"
    rows = [
        f"{os.path.relpath(p.image_a, SAMPLE)},{os.path.relpath(p.image_b, SAMPLE)},"
        f"{int(p.same)},{p.fold}"
        for p in read_pairs(PAIRS, SAMPLE)
    ]
    rows.append(f"{refused},Serena_Williams/Serena_Williams_0001.jpg,1,0")
    pairs_file.write_text("\n".join(rows) + "\n")
    run = run_calibration(
        sample_copy, pairs_file, [LABELS], dataset="sample", cache=cache_file, workers=1,
        report_dir=tmp_path / "report",
    )
    assert run.pairs is not None and run.calibration is not None and run.demographics
    assert run.cache["refused_no_face"] == 1
    assert (run.pairs.n_mated, run.pairs.fta_mated) == (31, 1)
    # Pairs protocol: FNMR over the 30 compared mated pairs, the refused one a reject beside it.
    mated = run.pairs.distances[run.pairs.labels]
    at_1e2 = run.pairs.tar_at_fmr[1e-2]
    misses = int(np.sum(mated > at_1e2["threshold"]))
    assert at_1e2["fnmr"] == pytest.approx(misses / 30)
    assert at_1e2["false_reject_rate"] == pytest.approx((misses + 1) / 31)
    # Calibration rows: the same split at each written threshold.
    row = next(r for r in run.calibration.rows if r.name == "fmr-1e-2")
    assert row.threshold is not None and (row.n_mated, row.fta_mated) == (30, 1)
    misses = int(np.sum(mated > row.threshold))
    assert row.fnmr == pytest.approx(misses / 30)
    assert row.false_reject_rate == pytest.approx((misses + 1) / 31)
    # Per group: Serena Williams's refused photo makes 4 refused mated pairs (race=african).
    african = next(g for g in run.demographics.groups if g.group == "african")
    assert african.fta_mated_pairs == 4 and african.false_reject_rate is not None
    assert african.fnmr is not None and african.false_reject_rate > african.fnmr
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    assert record["pairs"]["tar_at_fmr"]["0.01"]["false_reject_rate"] == pytest.approx(
        at_1e2["false_reject_rate"]
    )
    rows_json = {r["name"]: r for r in record["calibration"]["rows"]}
    assert rows_json["fmr-1e-2"]["false_reject_rate"] == pytest.approx(row.false_reject_rate)
    assert rows_json["fmr-1e-2"]["fta_mated"] == 1
    groups = {g["group"]: g for g in record["demographics"]["groups"]}
    assert groups["african"]["fta_mated_pairs"] == 4
    assert groups["african"]["false_reject_rate"] == pytest.approx(african.false_reject_rate)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "false-reject rate" in page and "mated pairs refused" in page
    assert "refused mated pairs counted as rejects" in page
