"""A batch queue over time, through the installed command: erasure by consent withdrawal
takes the subject's queue rows, bad options are refused before the queue is touched, a
linked photo is a photo of the folder, and a corrected consent CSV is taken up by the next
worker of the same queue."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from installed_command import installed_runner

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"
HEADER = (
    "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,notice_version\n"
)

Runner = Callable[..., CompletedProcess[str]]


def _row(photo: str, subject: str) -> str:
    return f"{photo},{subject},,boarding,2030-01-01,form-{subject},{'ab' * 32},n1\n"


@pytest.fixture
def facetrust(tmp_path: Path) -> Runner:
    run = installed_runner(tmp_path / "g")
    run("init", str(tmp_path / "g"))
    return run


@pytest.fixture
def two_people(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with one photo of Colin Powell and one of Kofi Annan, and their CSV."""
    folder = tmp_path / "photos"
    for name in ("Colin_Powell", "Kofi_Annan"):
        (folder / name).mkdir(parents=True)
        shutil.copy(sorted((SAMPLE / name).glob("*.jpg"))[0], folder / name / "1.jpg")
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("Colin_Powell", "colin") + _row("Kofi_Annan", "kofi"))
    return folder, csv


def _queue_rows(gallery_dir: Path) -> list[tuple[str, str, str | None, str, str | None]]:
    with sqlite3.connect(f"file:{gallery_dir / 'gallery.db'}?mode=ro", uri=True) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT queue, photo, subject_id, state, reason FROM batch_queue "
            "ORDER BY queue, photo"
        )]


def _worker(facetrust: Runner, folder: Path, csv: Path, *extra: str,
            code: int = 0) -> CompletedProcess[str]:
    return facetrust("enroll-batch", str(folder), "--consents", str(csv), "--queue", "q",
                     "--actor", "registrar", *extra, code=code)


@pytest.mark.slow  # the installed command
def test_withdrawing_consent_deletes_the_subjects_queue_rows(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    folder, csv = two_people
    assert json.loads(_worker(facetrust, folder, csv).stdout)["enrolled"] == 2
    erased = json.loads(facetrust("consent", "withdraw", "colin", "--actor", "dpo").stdout)
    assert erased["erasure"]["key_destroyed"]
    rows = _queue_rows(tmp_path / "g")
    assert rows == [("q", "Kofi_Annan/1.jpg", "kofi", "done", None)]
