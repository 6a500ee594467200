"""Batch enrolment across machines: several `facetrust enroll-batch --queue` workers (real
subprocesses of the installed command) over one gallery, one killed with SIGKILL half-way;
every photo enrolled exactly once, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery
from facetrust.gallery.batch_queue import batch_status, run_queue_worker
from installed_command import INSTALLED

FAILED = {
    "broken.jpg": "unreadable",
    "unlisted/x.jpg": "no-consent-in-csv",
    "Vicente_Fox_0002.jpg": "several-faces",
    "wall.jpg": "no-face",
}


def _facetrust(*args: str, gallery: Path) -> list[str]:
    return [INSTALLED, *args, "--gallery", str(gallery)]


def _three_workers_one_killed(gallery_dir: Path, folder: Path, consents: Path) -> None:
    """Start three workers, SIGKILL the first once it has enrolled some photos and holds a
    claim, and wait for the other two to finish (they take its claims over)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = {}

    def start(name: str) -> None:
        command = _facetrust(
            "enroll-batch", str(folder), "--consents", str(consents), "--queue", "lfw",
            "--worker-id", name, "--lease", "15", "--claim", "2", "--actor", "registrar",
            "--face", "single",  # so that the two-face photo is a failure to count
            gallery=gallery_dir,
        )
        processes[name] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )

    start("w1")
    deadline = time.monotonic() + 300
    with Gallery.find(gallery_dir) as gallery:
        # the others start once w1 works, so that on a busy machine they cannot take
        # every photo before w1 has enrolled some and holds a claim
        while time.monotonic() < deadline and processes["w1"].poll() is None:
            with gallery.store.snapshot():
                names = gallery.store.queue_names()
                if names and any(r.worker == "w1" for r in gallery.store.queued("lfw")):
                    break
            time.sleep(0.05)
        start("w2")
        start("w3")
        while time.monotonic() < deadline and processes["w1"].poll() is None:
            with gallery.store.snapshot():
                mine = [r for r in gallery.store.queued("lfw") if r.worker == "w1"]
            if sum(r.state == "done" for r in mine) >= 4 and any(
                r.state == "claimed" for r in mine
            ):
                break  # half-way: some enrolled, a claim in hand
            time.sleep(0.05)
    assert processes["w1"].poll() is None, processes["w1"].communicate()
    os.kill(processes["w1"].pid, signal.SIGKILL)
    assert processes["w1"].wait() == -signal.SIGKILL
    for name in ("w2", "w3"):
        out, err = processes[name].communicate(timeout=400)
        assert processes[name].returncode == 0, err.decode()
        assert json.loads(out)["enrolled"] + json.loads(out)["already_enrolled"] > 0


def _check_every_photo_enrolled_once(gallery_dir: Path) -> None:
    with Gallery.find(gallery_dir) as gallery:
        subjects = gallery.list_subjects()
        assert len(subjects) == 10 and all(s.template_count == 4 for s in subjects)
        digests = [t.source_digest for t in gallery.store.all_templates()]
        assert len(digests) == 40 and len(set(digests)) == 40 and None not in digests
        assert all(len(gallery.consents(s.subject_id)) == 1 for s in subjects)
        assert gallery.audit.verify().ok
        status = batch_status(gallery, "lfw")
    assert (status.done, status.in_progress, status.waiting, status.failed) == (40, 0, 0, 4)
    assert {f.photo: f.reason for f in status.failures} == FAILED


def _check_status_command(gallery_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    shown = subprocess.run(
        _facetrust("enroll-batch", "status", gallery=gallery_dir),
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    lines = dict(line.rsplit(None, 1) for line in shown.splitlines()[1:6])
    assert lines == {"done": "40", "in progress": "0", "waiting": "0", "failed": "4",
                     "total": "44"}
    assert "wall.jpg  [no-face] No face was found in the image" in shown
    assert "unlisted/x.jpg  [no-consent-in-csv]" in shown
    as_json = json.loads(subprocess.run(
        _facetrust("enroll-batch", "status", "--queue", "lfw", "--json", gallery=gallery_dir),
        capture_output=True, text=True, env=env, check=True,
    ).stdout)
    assert as_json["finished"] and as_json["failures_by_reason"] == {
        "no-consent-in-csv": 1, "no-face": 1, "several-faces": 1, "unreadable": 1,
    }


@pytest.mark.slow  # three worker processes, one killed
def test_three_workers_one_killed_enrol_every_photo_once_on_sqlite(
    tmp_path: Path, batch_photos: tuple[Path, Path]
) -> None:
    folder, consents = batch_photos
    gallery_dir = tmp_path / "g"
    assert CliRunner().invoke(cli, ["init", str(gallery_dir)]).exit_code == 0
    _three_workers_one_killed(gallery_dir, folder, consents)
    _check_every_photo_enrolled_once(gallery_dir)
    _check_status_command(gallery_dir)


def test_three_workers_one_killed_enrol_every_photo_once_on_postgres(
    tmp_path: Path, batch_photos: tuple[Path, Path], postgres_url: Callable[[], str]
) -> None:
    folder, consents = batch_photos
    gallery_dir = tmp_path / "g"
    result = CliRunner().invoke(
        cli, ["init", str(gallery_dir), "--database-url", postgres_url()]
    )
    assert result.exit_code == 0, result.output
    _three_workers_one_killed(gallery_dir, folder, consents)
    _check_every_photo_enrolled_once(gallery_dir)
    _check_status_command(gallery_dir)


def test_photos_enrolled_before_are_marked_done_not_enrolled_again(
    make_gallery: Callable[..., Gallery], batch_photos: tuple[Path, Path]
) -> None:
    """The one exactly-once check (the source digest, read under the write lock) is what a
    worker whose lease ran out meets too: the photos were enrolled, so they are only marked
    done."""
    folder, consents = batch_photos
    gallery = make_gallery()
    first = run_queue_worker(gallery, folder, consents, queue="q", actor="registrar", claim=4,
                             face_policy="single")
    assert first.enrolled == 40 and first.subjects == 10 and first.by_reason == {
        "several-faces": 1, "unreadable": 1, "no-face": 1,
    }
    again = run_queue_worker(gallery, folder, consents, queue="q2", actor="registrar",
                             face_policy="single")
    assert again.enrolled == 0 and again.already_enrolled == 40
    assert len(gallery.store.all_templates()) == 40
    assert batch_status(gallery, "q2").done == 40
    last = gallery.store.last_audit()
    assert last is not None and last.kind == "enrol.batch" and '"queue":"q2"' in last.body
    assert run_queue_worker(gallery, folder, consents, queue="q", actor="registrar").enrolled == 0


def test_status_of_an_unknown_queue_names_the_known_ones(
    make_gallery: Callable[..., Gallery],
) -> None:
    gallery = make_gallery()
    with pytest.raises(InvalidParameter, match="no batch queue named 'nope'"):
        batch_status(gallery, "nope")


def test_erasing_a_subject_deletes_its_queue_rows(
    make_gallery: Callable[..., Gallery], batch_photos: tuple[Path, Path]
) -> None:
    folder, consents = batch_photos
    gallery = make_gallery()
    run_queue_worker(gallery, folder, consents, queue="q", actor="registrar", claim=8)
    gallery.forget("Colin_Powell", actor="dpo")
    with gallery.store.snapshot():
        rows = gallery.store.queued("q")
    assert rows and not [r for r in rows if r.subject_id == "Colin_Powell"]
    assert not [r for r in rows if "Colin_Powell" in r.photo]
