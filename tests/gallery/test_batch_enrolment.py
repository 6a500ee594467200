"""Batch enrolment from a folder and a consent CSV: failures by reason, and resumable
after SIGKILL (a real subprocess killed half-way, then re-run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.errors import FaceError, FacetrustError, ImageError, InvalidParameter
from facetrust.gallery import Gallery
from facetrust.gallery.batch_enrolment import REASONS, enroll_batch, failure_reason
from facetrust.gallery.consent_csv import read_consents

DATA = Path(__file__).parent.parent / "data"


def _template_count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM templates").fetchone()[0])


@pytest.mark.slow  # a real subprocess, killed, then the CLI re-run
def test_batch_enrolment_is_resumable_after_sigkill(
    tmp_path: Path, batch_photos: tuple[Path, Path]
) -> None:
    folder, consents = batch_photos
    gallery_dir = tmp_path / "g"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(gallery_dir)]).exit_code == 0
    command = [
        sys.executable, "-c", "from facetrust.cli.main import cli; cli()", "enroll-batch",
        str(folder),
        "--consents", str(consents), "--gallery", str(gallery_dir), "--actor", "registrar",
        "--workers", "1", "--no-progress", "--face", "single",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = gallery_dir / "gallery.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if _template_count(db) >= 4:  # at least one subject committed, most still to do
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    first = _template_count(db)
    assert 4 <= first < 40

    result = runner.invoke(
        cli, ["enroll-batch", str(folder), "--consents", str(consents), "--gallery",
              str(gallery_dir), "--actor", "registrar", "--workers", "2", "--no-progress",
              "--face", "single"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["already_enrolled"] == first
    assert summary["enrolled"] + first == 40
    assert summary["failures_by_reason"] == {
        "no-consent-in-csv": 1, "no-face": 1, "several-faces": 1, "unreadable": 1,
    }
    assert "several-faces" in result.stderr  # the table
    with Gallery.find(gallery_dir) as gallery:
        subjects = gallery.list_subjects()
        assert len(subjects) == 10 and all(s.template_count == 4 for s in subjects)
        digests = [t.source_digest for t in gallery.store.all_templates()]
        assert len(digests) == 40 and len(set(digests)) == 40 and None not in digests
        assert all(len(gallery.consents(s.subject_id)) == 1 for s in subjects)
        assert gallery.audit.verify().ok

    again = runner.invoke(
        cli, ["enroll-batch", str(folder), "--consents", str(consents), "--gallery",
              str(gallery_dir), "--actor", "registrar", "--no-progress"],
    )
    # The default face policy, "dominant", takes Fox, whom Vicente_Fox_0002 is framed on.
    assert json.loads(again.stdout)["enrolled"] == 1
    assert json.loads(again.stdout)["already_enrolled"] == 40


def test_a_consent_csv_without_the_expected_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "consents.csv"
    bad.write_text("photo,subject_id\na.jpg,a\n")
    with pytest.raises(InvalidParameter, match="lacks the column"):
        read_consents(bad, tmp_path)


def test_a_gallery_that_refuses_duplicates_refuses_them_in_a_batch(
    tmp_path: Path, make_gallery: Callable[..., Gallery]
) -> None:
    person = sorted((DATA / "lfw" / "Colin_Powell").glob("*.jpg"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, photo in (("a.jpg", person[0]), ("b.jpg", person[1])):
        shutil.copy(photo, folder / name)
    consents = tmp_path / "consents.csv"
    consents.write_text(
        "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,"
        "notice_version\n"
        + "".join(f"{n}.jpg,{n},,boarding,2030-01-01,form-{n},{'ab' * 32},n1\n" for n in "ab")
    )
    gallery = make_gallery(duplicate_policy="refuse")
    result = enroll_batch(gallery, folder, consents, actor="registrar", workers=1)
    assert result.enrolled == 1 and result.by_reason == {"duplicate": 1}
    assert result.failures[0].photo.endswith("b.jpg")
    assert gallery.store.get_subject("b") is None  # the whole subject rolled back
    last = gallery.store.last_audit()  # the refusal is audited in the batch's summary
    assert last is not None and last.kind == "enrol.batch" and last.subject_ids == ("b",)
    assert gallery.audit.verify().ok


def test_every_error_a_photo_can_cause_has_its_own_failure_reason() -> None:
    def subclasses(kind: type[FacetrustError]) -> list[type[FacetrustError]]:
        return [kind, *(c for s in kind.__subclasses__() for c in subclasses(s))]

    photo_errors = [c for c in subclasses(ImageError) + subclasses(FaceError)
                    if c not in (ImageError, FaceError)]
    reasons = {kind: failure_reason(kind("message")) for kind in photo_errors}
    assert len(set(reasons.values())) == len(photo_errors), reasons
    assert set(reasons.values()) <= set(REASONS) and "other" not in reasons.values()

    class FaceHidden(FaceError):  # one added later gets its own reason too
        pass

    assert failure_reason(FaceHidden("message")) == "face-hidden"
