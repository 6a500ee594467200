"""A batch queue over time, through the installed command: erasure by consent withdrawal
takes the subject's queue rows, bad options are refused before the queue is touched, a
linked photo is a photo of the folder, and a corrected consent CSV is taken up by the next
worker of the same queue."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from facetrust.batch import embed_many
from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery
from facetrust.gallery.batch_enrolment import enroll_batch
from facetrust.gallery.batch_queue import run_queue_worker
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


@pytest.mark.slow  # the installed command
def test_a_rerun_after_withdrawal_fails_the_photos_as_consent_withdrawn(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    folder, csv = two_people
    _worker(facetrust, folder, csv)
    facetrust("consent", "withdraw", "colin", "--actor", "dpo")
    again = _worker(facetrust, folder, csv)
    assert json.loads(again.stdout)["failures_by_reason"] == {"consent-withdrawn": 1}
    assert ("q", "Colin_Powell/1.jpg", "colin", "failed", "consent-withdrawn") in _queue_rows(
        tmp_path / "g")
    with Gallery.find(tmp_path / "g") as gallery:
        assert not [t for t in gallery.store.all_templates() if t.subject_id == "colin"]


@pytest.mark.parametrize(("option", "value"), [
    ("--lease", "nan"), ("--lease", "inf"), ("--lease", "1e12"), ("--lease", "0.5"),
    ("--claim", "0"), ("--claim", "100000"), ("--workers", "-3"), ("--workers", "0"),
])
def test_bad_batch_options_are_refused_before_the_queue_is_filled(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path], option: str, value: str
) -> None:
    folder, csv = two_people
    queue = () if option == "--workers" else ("--queue", "q")
    refused = facetrust("enroll-batch", str(folder), "--consents", str(csv), *queue, option,
                        value, "--actor", "registrar", code=2)
    assert f"Invalid value for '{option}'" in refused.stderr
    assert _queue_rows(tmp_path / "g") == []


@pytest.mark.parametrize(("name", "value"), [
    ("lease_s", float("nan")), ("lease_s", float("inf")), ("lease_s", 1e12), ("claim", 0),
    ("claim", 2.5), ("max_attempts", True), ("poll_s", float("nan")),
])
def test_run_queue_worker_refuses_bad_numbers_before_the_queue_is_filled(
    make_gallery: Callable[..., Gallery], two_people: tuple[Path, Path], name: str,
    value: object,
) -> None:
    folder, csv = two_people
    gallery = make_gallery()
    with pytest.raises(InvalidParameter, match=f"The '{name}' parameter of run_queue_worker"):
        run_queue_worker(gallery, folder, csv, queue="q", actor="registrar",
                         **{name: value})  # type: ignore[arg-type]
    with gallery.store.snapshot():
        assert gallery.store.queue_names() == []


@pytest.mark.parametrize("workers", [0, -3, 1000, True])
def test_embedding_workers_out_of_range_are_refused(
    make_gallery: Callable[..., Gallery], two_people: tuple[Path, Path], workers: int
) -> None:
    folder, csv = two_people
    with pytest.raises(InvalidParameter, match=r"'workers' parameter of embed_many .*\[1, 256\]"):
        embed_many([folder / "Kofi_Annan" / "1.jpg"], workers=workers)
    with pytest.raises(InvalidParameter, match="'workers' parameter of enroll_batch"):
        enroll_batch(make_gallery(), folder, csv, actor="registrar", workers=workers)


@pytest.mark.slow  # the installed command
def test_a_linked_photo_is_queued_by_its_path_in_the_folder(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    folder, csv = two_people
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(sorted((SAMPLE / "Kofi_Annan").glob("*.jpg"))[1], outside)
    os.symlink(outside, folder / "Kofi_Annan" / "2.jpg")
    os.symlink(folder / "Kofi_Annan" / "1.jpg", folder / "Colin_Powell" / "not-colin.jpg")
    csv.write_text(HEADER + _row("Colin_Powell/1.jpg", "colin") + _row("Kofi_Annan", "kofi"))
    done = json.loads(_worker(facetrust, folder, csv).stdout)
    assert done["enrolled"] == 3 and done["failed"] == 0
    assert [r[1:4] for r in _queue_rows(tmp_path / "g")] == [
        ("Colin_Powell/1.jpg", "colin", "done"),
        ("Colin_Powell/not-colin.jpg", None, "failed"),  # not listed: a link is no row
        ("Kofi_Annan/1.jpg", "kofi", "done"),
        ("Kofi_Annan/2.jpg", "kofi", "done"),
    ]


@pytest.mark.slow  # the installed command
def test_a_corrected_consent_csv_is_taken_up_by_the_same_queue(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    folder, csv = two_people
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(HEADER + _row("Colin", "colin") + _row("Kofi", "kofi"))  # no such folders
    assert json.loads(_worker(facetrust, folder, wrong).stdout)["enrolled"] == 0
    assert {r[3:] for r in _queue_rows(tmp_path / "g")} == {
        ("failed", "no-consent-in-csv"), ("failed", "photo-not-found")}  # photos; CSV rows

    second = _worker(facetrust, folder, csv)
    assert json.loads(second.stdout)["enrolled"] == 2
    assert [r[1:] for r in _queue_rows(tmp_path / "g")] == [
        ("Colin_Powell/1.jpg", "colin", "done", None),
        ("Kofi_Annan/1.jpg", "kofi", "done", None),
    ]
    status = json.loads(facetrust("enroll-batch", "status", "--queue", "q", "--json").stdout)
    assert (status["done"], status["failed"]) == (2, 0)


@pytest.mark.slow  # the installed command
def test_a_worker_points_to_the_failed_photos_it_did_not_count(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    folder, csv = two_people
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(HEADER + _row("Colin", "colin") + _row("Kofi", "kofi"))  # no such folders
    first = _worker(facetrust, folder, wrong)
    # the two photos not in the CSV, and its two rows naming no photo
    assert json.loads(first.stdout)["failed_elsewhere"] == 4
    hint = ("4 photos of queue q failed earlier (in another worker, or when the queue was "
            "filled: not in the consent CSV, or a CSV row naming no photo) and are not "
            "counted above: see `facetrust enroll-batch status --queue q`.")
    assert hint in first.stderr.splitlines()

    second = _worker(facetrust, folder, csv)
    assert json.loads(second.stdout)["failed_elsewhere"] == 0
    assert "failed earlier" not in second.stderr
    (folder / "unlisted.jpg").write_bytes((folder / "Kofi_Annan" / "1.jpg").read_bytes())
    third = _worker(facetrust, folder, csv)
    assert json.loads(third.stdout)["failed_elsewhere"] == 1
    assert "1 photo of queue q failed earlier" in third.stderr


def test_status_without_a_queue_says_where_a_plain_run_is_recorded(
    facetrust: Runner,
) -> None:
    shown = facetrust("enroll-batch", "status", code=2).stderr
    assert "no batch queue yet" in shown and "--queue" in shown
    assert "facetrust audit export --kind enrol.batch" in shown


@pytest.mark.slow  # the installed command
def test_the_status_table_shows_a_hostile_file_name_on_its_own_line(
    tmp_path: Path, facetrust: Runner, two_people: tuple[Path, Path]
) -> None:
    # whoever can drop a file into the photo folder names it: a newline would forge
    # a line of the table, U+202E reverse what follows, an escape sequence clear
    # the operator's terminal
    folder, csv = two_people
    hostile = "evil\x1b[2J\n  Colin_Powell-2.jpg  [done]\u202egpj.jpg"
    (folder / "Kofi_Annan" / hostile).write_bytes(b"not an image")
    _worker(facetrust, folder, csv)
    table = facetrust("enroll-batch", "status", "--queue", "q").stdout
    failed = table.split("failed photos:\n", 1)[1].splitlines()
    assert len(failed) == 1 and failed[0].startswith(
        "  Kofi_Annan/evil\u27e8U+001B\u27e9[2J\u27e8U+000A\u27e9  Colin_Powell-2.jpg  [done]"
        "\u27e8U+202E\u27e9gpj.jpg  [unreadable] "
    )
    assert "\u202e" not in table and "\x1b" not in table
    refused = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--queue",
                        "q2\u202e", "--actor", "registrar", code=2)
    assert "U+202E" in refused.stderr and "\u202e" not in refused.stderr
