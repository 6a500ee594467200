"""The README's main job: ``facetrust demo``, the boarding gate, through the installed command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from facetrust.demo import ENROLLED, EVENT_ONLY, OPTED_OUT, STRANGER
from installed_command import INSTALLED, shell_env

REPO = Path(__file__).resolve().parent.parent


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INSTALLED, "demo", *args], cwd=cwd, env=shell_env(), capture_output=True, text=True,
        check=False, timeout=300,
    )


def test_the_demo_boards_the_flight_and_leaves_nothing_behind(tmp_path: Path) -> None:
    done = run_demo("--keep", str(tmp_path / "kept"), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    decisions = dict(re.findall(r"^\s+(\w+)\s+-> (.+?)(?: \(distance [\d.]+\))?$", out, re.M))
    for name in ENROLLED:
        assert decisions[name] == f"BOARD {name}"
    assert re.fullmatch(r"BOARD flight-UA123\.[0-9a-f]{12}", decisions[EVENT_ONLY])
    assert decisions[STRANGER] == "REFER TO STAFF"
    assert OPTED_OUT not in decisions  # never in front of the camera
    assert f"{OPTED_OUT} (seat 14C) opted out" in out and "no face captured" in out
    assert re.search(r"chain: intact \(\d+ events\)", out)
    assert "their templates and crops left: 0" in out
    kept = tmp_path / "kept"
    assert (kept / "arrivals.mp4").is_file()  # the gallery and video stay where asked


def test_the_demo_says_where_to_run_it_when_its_photos_are_missing(tmp_path: Path) -> None:
    done = run_demo(cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Run it from the repository root" in done.stderr
