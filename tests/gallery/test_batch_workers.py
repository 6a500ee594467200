"""The embedding worker processes of ``facetrust enroll-batch --workers N``, through the
installed command: they end with the command however it ends (SIGKILL included), so no
orphan keeps a model (about 245 MB) in memory, and a re-run enrols every photo once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import psutil
import pytest
from PIL import Image, ImageOps

from facetrust.gallery import Gallery
from installed_command import INSTALLED, installed_runner, shell_env

pytestmark = pytest.mark.slow  # worker processes of the installed command

Runner = Callable[..., CompletedProcess[str]]

#: Seconds the workers have to end after their command did.
ORPHAN_LIMIT_S = 10.0
#: Photos of the 10 sample subjects in :func:`many_photos` (each sample photo three ways).
PHOTOS = 120


@pytest.fixture
def facetrust(tmp_path: Path) -> Runner:
    run = installed_runner(tmp_path / "g")
    run("init", str(tmp_path / "g"))
    return run


def _templates(gallery_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{gallery_dir / 'gallery.db'}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM templates").fetchone()[0])
    except sqlite3.OperationalError:  # locked by the writer for a moment
        return 0


def _claimed(gallery_dir: Path) -> int:
    """Photos claimed in the gallery's batch queues (0 while its database is locked)."""
    try:
        with sqlite3.connect(f"file:{gallery_dir / 'gallery.db'}?mode=ro", uri=True) as conn:
            return int(conn.execute(
                "SELECT count(*) FROM batch_queue WHERE state = 'claimed'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie no one reaps has ended)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def many_photos(batch_photos: tuple[Path, Path]) -> tuple[Path, Path]:
    """:func:`batch_photos` with each sample photo also mirrored and twice as large: enough
    work that the batch is still embedding when it is stopped."""
    folder, consents = batch_photos
    for photo in sorted(folder.glob("*/*.jpg")):
        if photo.parent.name == "unlisted":
            continue
        with Image.open(photo) as image:
            ImageOps.mirror(image).save(photo.with_name(f"{photo.stem}-mirrored.jpg"))
            large = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
            large.save(photo.with_name(f"{photo.stem}-large.jpg"))
    return folder, consents


@pytest.fixture
def started(tmp_path: Path, facetrust: Runner,
            many_photos: tuple[Path, Path]) -> Iterator[Callable[..., tuple[
                subprocess.Popen[bytes], list[psutil.Process]]]]:
    """``start()``: the installed ``enroll-batch --workers 2`` once both workers are
    embedding (a subject is written), and its child processes (forkserver and workers).
    Whatever is left of them is killed at the end of the test."""
    folder, consents = many_photos
    launched: list[psutil.Process] = []

    def start() -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
        command = [INSTALLED, "enroll-batch", str(folder), "--consents", str(consents),
                   "--workers", "2", "--no-progress", "--face", "single",
                   "--actor", "registrar"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=shell_env(tmp_path / "g"), start_new_session=True)
        parent = psutil.Process(process.pid)
        launched.append(parent)
        deadline = time.monotonic() + 240
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and process.poll() is None:
            children = parent.children(recursive=True)
            launched.extend(children)
            if len(children) >= 3 and _templates(tmp_path / "g") >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the batch ended before it could be interrupted"
        assert len(children) >= 3 and 4 <= _templates(tmp_path / "g") < PHOTOS
        return process, children

    yield start
    for process in launched:  # no test leaves a process behind, passed or failed
        if _alive(process):
            process.kill()


def _wait_gone(children: list[psutil.Process]) -> list[psutil.Process]:
    """The children still running after :data:`ORPHAN_LIMIT_S` (none, if all ended)."""
    deadline = time.monotonic() + ORPHAN_LIMIT_S
    while time.monotonic() < deadline:
        if not any(_alive(c) for c in children):
            return []
        time.sleep(0.1)
    return [c for c in children if _alive(c)]


def _every_photo_once(facetrust: Runner, tmp_path: Path,
                      many_photos: tuple[Path, Path]) -> None:
    folder, consents = many_photos
    first = _templates(tmp_path / "g")
    again = json.loads(facetrust(
        "enroll-batch", str(folder), "--consents", str(consents), "--workers", "2",
        "--no-progress", "--face", "single", "--actor", "registrar").stdout)
    assert again["already_enrolled"] == first and again["enrolled"] + first == PHOTOS
    with Gallery.find(tmp_path / "g") as gallery:
        subjects = gallery.list_subjects()
        assert len(subjects) == 10 and all(s.template_count == 12 for s in subjects)
        digests = [t.source_digest for t in gallery.store.all_templates()]
        assert len(digests) == PHOTOS and len(set(digests)) == PHOTOS


def test_workers_end_when_the_command_is_killed(
    tmp_path: Path, facetrust: Runner, many_photos: tuple[Path, Path],
    started: Callable[..., tuple[subprocess.Popen[bytes], list[psutil.Process]]],
) -> None:
    process, children = started()
    process.kill()  # SIGKILL: the command runs no code of its own after this
    process.wait()
    assert process.returncode == -signal.SIGKILL
    left = _wait_gone(children)
    assert not left, f"orphaned workers still running: {[c.cmdline() for c in left]}"
    _every_photo_once(facetrust, tmp_path, many_photos)


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm", "ctrl-c"])
def test_a_stopped_command_stops_its_workers_and_says_so(
    tmp_path: Path, facetrust: Runner, many_photos: tuple[Path, Path],
    started: Callable[..., tuple[subprocess.Popen[bytes], list[psutil.Process]]],
    ctrl_c: bool,
) -> None:
    process, children = started()
    if ctrl_c:  # a terminal sends SIGINT to the whole foreground process group
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert not _wait_gone(children)
    shown = stderr.decode()
    assert "Traceback" not in shown and "leaked" not in shown, shown
    assert "stopped" in shown and "run the same command again" in shown.lower(), shown
    with Gallery.find(tmp_path / "g") as gallery:  # the partial batch is audited as such
        last = gallery.store.last_audit()
        assert last is not None and last.kind == "enrol.batch"
        assert json.loads(last.body)["stopped"] is True
    _every_photo_once(facetrust, tmp_path, many_photos)


def test_a_killed_worker_stops_the_batch_with_a_plain_message(
    tmp_path: Path, facetrust: Runner, many_photos: tuple[Path, Path],
    started: Callable[..., tuple[subprocess.Popen[bytes], list[psutil.Process]]],
) -> None:
    process, children = started()
    workers = [c for c in children if c.ppid() != process.pid]  # forked by the forkserver
    assert workers
    workers[0].kill()  # as the kernel's out-of-memory killer would
    _, stderr = process.communicate(timeout=60)
    shown = stderr.decode()
    assert process.returncode == 2 and "Traceback" not in shown, shown
    assert "worker process ended" in shown and "Run again" in shown, shown
    assert not _wait_gone(children)
    with Gallery.find(tmp_path / "g") as gallery:
        last = gallery.store.last_audit()
        assert last is not None and json.loads(last.body).get("stopped") is True
    _every_photo_once(facetrust, tmp_path, many_photos)


def test_a_stopped_queue_worker_hands_its_claims_back_at_once(
    tmp_path: Path, facetrust: Runner, many_photos: tuple[Path, Path]
) -> None:
    folder, consents = many_photos
    command = [INSTALLED, "enroll-batch", str(folder), "--consents", str(consents),
               "--queue", "intake", "--worker-id", "w1", "--lease", "600", "--no-progress",
               "--face", "single", "--actor", "registrar"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=shell_env(tmp_path / "g"))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if _templates(tmp_path / "g") >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None and _templates(tmp_path / "g") < PHOTOS
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    shown = stderr.decode()
    assert process.returncode == 2 and "Traceback" not in shown, shown
    assert "stopped" in shown and "back to the queue" in shown, shown
    status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
    # without the hand-back its photos would stay "in progress" for the 600 s lease
    assert status["in_progress"] == 0 and status["workers"] == {}, status
    assert status["waiting"] > 0 and not status["finished"]
    with Gallery.find(tmp_path / "g") as gallery:
        last = gallery.store.last_audit()
        assert last is not None and last.kind == "enrol.batch"
        assert json.loads(last.body)["stopped"] is True
    first = _templates(tmp_path / "g")
    again = json.loads(facetrust(*command[1:]).stdout)
    assert again["enrolled"] + first == PHOTOS
    status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
    assert status["finished"] and status["done"] == PHOTOS
    assert status["failures_by_reason"] == {
        "no-consent-in-csv": 1, "no-face": 1, "several-faces": 1, "unreadable": 1}
    with Gallery.find(tmp_path / "g") as gallery:
        digests = [t.source_digest for t in gallery.store.all_templates()]
        assert len(digests) == PHOTOS and len(set(digests)) == PHOTOS


def test_status_names_a_killed_queue_workers_photos_and_when_they_are_taken_over(
    tmp_path: Path, facetrust: Runner, many_photos: tuple[Path, Path]
) -> None:
    folder, consents = many_photos
    command = [INSTALLED, "enroll-batch", str(folder), "--consents", str(consents),
               "--queue", "intake", "--worker-id", "w1", "--lease", "600", "--claim", "30",
               "--no-progress", "--face", "single", "--actor", "registrar"]
    for _ in range(5):  # until killed holding a claim (not between writing one and the next)
        written = _templates(tmp_path / "g")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=shell_env(tmp_path / "g"))
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and process.poll() is None:
                if _templates(tmp_path / "g") > written and _claimed(tmp_path / "g"):
                    break  # some written, a claim of 30 photos in hand
                time.sleep(0.05)
        finally:
            process.kill()
            process.wait()
        status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
        if status["in_progress"]:
            break
    held = status["workers"]["w1"]
    assert status["in_progress"] == held > 0
    lease = status["leases"]["w1"]  # when the other workers may take them over
    shown = facetrust("enroll-batch", "status").stdout
    photos = "photo" if held == 1 else "photos"
    assert f"w1: {held} {photos} until {lease[:19].replace('T', ' ')} UTC" in shown, shown
    assert "taken over" in shown, shown
