"""What a batch's consent CSV may and may not do, through the installed command: a
withdrawal is never undone by re-running a batch with the old form, an erased subject is
never enrolled again, and rows that give one photo two subjects (or two consents) refuse
the whole batch before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery
from facetrust.gallery.consent_csv import read_consents
from installed_command import INSTALLED, installed_runner, shell_env

SAMPLE = Path(__file__).parent.parent / "data" / "lfw"
HEADER = (
    "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,notice_version\n"
)
SHA = "ab" * 32

Runner = Callable[..., CompletedProcess[str]]


def _row(photo: str, subject: str, evidence: str, sha: str = SHA) -> str:
    return f"{photo},{subject},,boarding,2030-01-01,{evidence},{sha},n1\n"


def _photos(folder: Path, photos: dict[str, Path]) -> None:
    for name, source in photos.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / name)


@pytest.fixture
def facetrust(tmp_path: Path) -> Runner:
    run = installed_runner(tmp_path / "g")
    run("init", str(tmp_path / "g"))
    return run


def _enrol(facetrust: Runner, folder: Path, csv: Path, *extra: str) -> dict[str, object]:
    done = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--workers", "1",
                     "--no-progress", "--actor", "registrar", *extra)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _consents(facetrust: Runner, subject: str) -> list[dict[str, object]]:
    shown: list[dict[str, object]] = json.loads(
        facetrust("consent", "show", subject, "--actor", "dpo").stdout
    )
    return shown


def _templates(gallery_dir: Path, subject: str) -> int:
    with Gallery.find(gallery_dir) as gallery:
        return sum(t.subject_id == subject for t in gallery.store.all_templates())


@pytest.mark.slow  # the installed command, four batch runs
def test_a_withdrawn_consent_is_not_granted_again_by_a_rerun(
    tmp_path: Path, facetrust: Runner
) -> None:
    colin, kofi = sorted((SAMPLE / "Colin_Powell").glob("*.jpg")), sorted(
        (SAMPLE / "Kofi_Annan").glob("*.jpg"))
    folder = tmp_path / "photos"
    _photos(folder, {"colin/1.jpg": colin[0], "kofi/1.jpg": kofi[0]})
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("colin", "colin", "form-c") + _row("kofi", "kofi", "form-k"))
    assert _enrol(facetrust, folder, csv)["enrolled"] == 2

    # kofi withdraws the CSV's consent but keeps another one; colin withdraws his only one
    facetrust("consent", "grant", "kofi", "--purpose", "access-control", "--days", "30",
              "--evidence-ref", "form-k2", "--evidence-sha256", "cd" * 32,
              "--notice-version", "n1", "--actor", "registrar")
    form_k = next(c for c in _consents(facetrust, "kofi") if c["evidence_ref"] == "form-k")
    facetrust("consent", "withdraw", "kofi", "--consent-id", str(form_k["consent_id"]),
              "--actor", "dpo")
    facetrust("consent", "withdraw", "colin", "--actor", "dpo")
    _photos(folder, {"colin/2.jpg": colin[1], "kofi/2.jpg": kofi[1]})

    again = _enrol(facetrust, folder, csv)
    assert again["enrolled"] == 0
    assert again["failures_by_reason"] == {"consent-withdrawn": 3}
    failures = again["failures"]
    assert isinstance(failures, list)
    assert all("withdrew the consent of evidence" in f["message"] for f in failures)
    active = [c for c in _consents(facetrust, "kofi") if c["status"] == "active"]
    assert [c["evidence_ref"] for c in active] == ["form-k2"]
    assert not [c for c in _consents(facetrust, "colin") if c["status"] == "active"]
    assert _templates(tmp_path / "g", "colin") == 0
    assert _templates(tmp_path / "g", "kofi") == 1

    # a new form is a new consent: the subject erased by the withdrawal may come back
    csv.write_text(HEADER + _row("colin", "colin", "form-c2", "ef" * 32))
    assert _enrol(facetrust, folder, csv)["enrolled"] == 2

    # after `forget`, nothing brings the subject back, whatever the form
    facetrust("forget", "colin", "--actor", "dpo")
    csv.write_text(HEADER + _row("colin", "colin", "form-c3", "01" * 32))
    forgotten = _enrol(facetrust, folder, csv)
    assert forgotten["enrolled"] == 0
    # (kofi's photos are no longer in the CSV)
    assert forgotten["failures_by_reason"] == {"no-consent-in-csv": 2, "subject-erased": 2}
    failures = forgotten["failures"]
    assert isinstance(failures, list)
    assert all("was erased" in f["message"] for f in failures if f["reason"] == "subject-erased")
    assert _templates(tmp_path / "g", "colin") == 0


def test_rows_that_give_one_photo_two_subjects_refuse_the_batch(
    tmp_path: Path, facetrust: Runner
) -> None:
    kofi = sorted((SAMPLE / "Kofi_Annan").glob("*.jpg"))
    folder = tmp_path / "photos"
    _photos(folder, {f"Kofi_Annan/{p.name}": p for p in kofi[:2]})
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row(f"Kofi_Annan/{kofi[1].name}", "colin", "form-c")
                   + _row("Kofi_Annan/", "kofi", "form-k")
                   + _row(f"Kofi_Annan/{kofi[0].name}", "colin", "form-c"))
    done = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--workers", "1",
                     "--no-progress", "--actor", "registrar", code=2)
    assert done.stderr.count("\n") == 1
    assert "Lines 2 and 3" in done.stderr and f"Kofi_Annan/{kofi[1].name}" in done.stderr
    assert "different subjects ('colin' and 'kofi')" in done.stderr
    queued = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--queue", "q",
                       "--actor", "registrar", code=2)
    assert "Lines 2 and 3" in queued.stderr
    with Gallery.find(tmp_path / "g") as gallery:
        assert gallery.list_subjects() == []  # nothing written, not even the queue
        with gallery.store.snapshot():
            assert gallery.store.queue_names() == []


def test_rows_that_agree_may_both_name_a_photo_and_other_conflicts_are_named(
    tmp_path: Path,
) -> None:
    kofi = sorted((SAMPLE / "Kofi_Annan").glob("*.jpg"))
    _photos(tmp_path, {f"k/{p.name}": p for p in kofi[:2]})
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("k/", "kofi", "form-k") + _row(f"k/{kofi[0].name}", "kofi",
                                                                 "form-k", SHA.upper()))
    rows = read_consents(csv, tmp_path)
    assert {r.subject_id for r in rows.values()} == {"kofi"} and len(rows) == 2

    csv.write_text(HEADER + _row("k/", "kofi", "form-k") + _row(f"k/{kofi[0].name}", "kofi",
                                                                 "form-k2"))
    with pytest.raises(InvalidParameter, match=r"Lines 2 and 3 .* different consent evidence"):
        read_consents(csv, tmp_path)
    csv.write_text(HEADER + _row("k/", "kofi", "form-k")
                   + _row(f"k/{kofi[0].name}", "kofi", "form-k").replace("boarding", "x"))
    with pytest.raises(InvalidParameter, match="different purposes, expiry or notice"):
        read_consents(csv, tmp_path)


@pytest.mark.slow  # the installed command, three batch runs
def test_rows_that_name_no_photo_are_reported_not_skipped(
    tmp_path: Path, facetrust: Runner
) -> None:
    colin, kofi = (sorted((SAMPLE / name).glob("*.jpg")) for name in ("Colin_Powell",
                                                                     "Kofi_Annan"))
    folder = tmp_path / "photos"
    _photos(folder, {"colin.jpg": colin[0], "kofi.tiff": kofi[0]})
    (folder / "dana").mkdir()  # a subject folder with no photo in it
    _photos(tmp_path, {"outside.jpg": colin[1]})
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("colin.jpg", "colin", "form-c") + _row("alice.jpg", "alice",
                   "form-a") + _row("kofi.tiff", "kofi", "form-k") + _row("dana", "dana",
                   "form-d") + _row("../outside.jpg", "olga", "form-o"))
    expected = {"alice.jpg": "line 3", "kofi.tiff": "line 4", "dana": "line 5",
                "../outside.jpg": "line 6"}

    single = _enrol(facetrust, folder, csv)
    assert single["enrolled"] == 1
    assert single["failures_by_reason"] == {"photo-not-found": 4}
    failures = single["failures"]
    assert isinstance(failures, list)
    for failure, (photo, line) in zip(failures, expected.items(), strict=True):
        assert failure["photo"].endswith(photo.lstrip("./")), failure
        assert line in failure["message"].lower(), failure

    # a queue shows them to every worker and in `status`, and takes a photo up once it is there
    queued = json.loads(facetrust("enroll-batch", str(folder), "--consents", str(csv),
                                  "--queue", "q", "--actor", "registrar").stdout)
    assert queued["failures_by_reason"] == {} and queued["failed_elsewhere"] == 4
    status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
    assert status["done"] == 1 and status["failures_by_reason"] == {"photo-not-found": 4}
    assert sorted(f["photo"] for f in status["failures"]) == sorted(expected)
    shown = facetrust("enroll-batch", "status").stdout
    assert "alice.jpg  [photo-not-found]" in shown
    _photos(folder, {"alice.jpg": kofi[1]})
    facetrust("enroll-batch", str(folder), "--consents", str(csv), "--queue", "q",
              "--actor", "registrar")
    status = json.loads(facetrust("enroll-batch", "status", "--json").stdout)
    assert status["done"] == 2 and status["failures_by_reason"] == {"photo-not-found": 3}
    assert _templates(tmp_path / "g", "alice") == 1


def test_a_row_with_an_empty_photo_cell_is_refused_not_taken_as_the_whole_folder(
    tmp_path: Path, facetrust: Runner
) -> None:
    colin, kofi = (sorted((SAMPLE / name).glob("*.jpg")) for name in ("Colin_Powell",
                                                                     "Kofi_Annan"))
    folder = tmp_path / "photos"
    _photos(folder, {"colin.jpg": colin[0], "kofi.jpg": kofi[0]})
    csv = tmp_path / "consents.csv"
    for cell in ("", ".", "./"):
        csv.write_text(HEADER + _row(cell, "colin", "form-c"))
        done = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--workers",
                         "1", "--no-progress", "--actor", "registrar", code=2)
        assert "Line 2" in done.stderr and "'photo'" in done.stderr, done.stderr
    # a row cut short (or with an unquoted comma) is named too, not a traceback
    for row in ("colin.jpg,colin\n", _row("colin.jpg", "colin,jr", "form-c")):
        csv.write_text(HEADER + row)
        done = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--workers",
                         "1", "--no-progress", "--actor", "registrar", code=2)
        assert "Line 2" in done.stderr and "8 columns" in done.stderr, done.stderr
    with Gallery.find(tmp_path / "g") as gallery:
        assert gallery.list_subjects() == []  # kofi's photo was not enrolled as colin


@pytest.mark.slow  # the installed command
def test_each_row_records_its_own_consent_and_a_bad_subject_is_named_as_such(
    tmp_path: Path, facetrust: Runner
) -> None:
    people = {name: sorted((SAMPLE / name).glob("*.jpg"))[0] for name in (
        "Colin_Powell", "Kofi_Annan", "Hu_Jintao", "Serena_Williams", "Venus_Williams")}
    folder = tmp_path / "photos"
    _photos(folder, {f"{i}.jpg": photo for i, photo in enumerate(people.values())})
    csv = tmp_path / "consents.csv"
    csv.write_text(
        HEADER
        + "0.jpg,colin,Colin P,boarding;access-control,2030-01-01,form-c,"
          f"{SHA},notice-2\n"
        + f"1.jpg,kofi,,access-control,2031-06-30T12:00:00+02:00,form-k,{'cd' * 32},notice-1\n"
        + _row("2.jpg", "a/b", "form-x")  # not a subject id
        + f"3.jpg,serena,\"evil\u202egpj\",boarding,2030-01-01,form-s,{SHA},n1\n"
        + f"4.jpg,venus,,,2030-01-01,form-v,{SHA},n1\n"  # no purpose
    )
    result = _enrol(facetrust, folder, csv)
    assert result["enrolled"] == 2, result["failures"]
    assert result["failures_by_reason"] == {"consent-invalid": 1, "subject-invalid": 2}
    colin, kofi = _consents(facetrust, "colin"), _consents(facetrust, "kofi")
    assert [(c["purposes"], c["expires_at"], c["evidence_ref"], c["notice_version"])
            for c in colin] == [(["boarding", "access-control"], "2030-01-01T00:00:00+00:00",
                                 "form-c", "notice-2")]
    assert [(c["purposes"], c["expires_at"], c["evidence_sha256"]) for c in kofi] == [
        (["access-control"], "2031-06-30T10:00:00+00:00", "cd" * 32)]


def test_a_consent_csv_saved_by_a_spreadsheet_is_read_or_refused_plainly(
    tmp_path: Path, facetrust: Runner
) -> None:
    folder = tmp_path / "photos"
    _photos(folder, {"colin.jpg": sorted((SAMPLE / "Colin_Powell").glob("*.jpg"))[0]})
    csv = tmp_path / "consents.csv"
    # "CSV UTF-8" of a spreadsheet: a byte order mark, Windows line ends
    csv.write_bytes(("\ufeff" + HEADER + _row("colin.jpg", "colin", "form-c")).replace(
        "\n", "\r\n").encode("utf-8"))
    assert _enrol(facetrust, folder, csv)["enrolled"] == 1
    # a legacy code page: refused with what to do, not a UnicodeDecodeError
    csv.write_bytes((HEADER + "colin.jpg,colin,Jos\u00e9,boarding,2030-01-01,form-c,"
                     f"{SHA},n1\n").encode("cp1252"))
    done = facetrust("enroll-batch", str(folder), "--consents", str(csv), "--workers", "1",
                     "--no-progress", "--actor", "registrar", code=2)
    assert "UTF-8" in done.stderr and "line 2" in done.stderr.lower(), done.stderr


PEAK_RSS = r"""
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(done.returncode, peak // 1024, done.stdout, sep="\n")
"""


@pytest.mark.slow  # the installed command, a real enrolment
def test_a_photo_over_the_byte_cap_in_a_batch_is_refused_without_being_read(
    tmp_path: Path, facetrust: Runner
) -> None:
    """A 1.5 GiB file (sparse) among the photos is failed as too large from its size,
    with the reason a single photo gets, and the batch goes on; it is not read whole
    into memory to look for it among the photos enrolled before."""
    folder = tmp_path / "photos"
    _photos(folder, {"colin.jpg": SAMPLE / "Colin_Powell" / "Colin_Powell_0001.jpg"})
    with (folder / "huge.jpg").open("wb") as handle:
        handle.truncate(3 * 2**29)
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("colin.jpg", "colin", "form-1")
                   + _row("huge.jpg", "colin", "form-1"))
    command = [sys.executable, "-c", PEAK_RSS, INSTALLED, "enroll-batch", str(folder),
               "--consents", str(csv), "--workers", "1", "--no-progress", "--actor", "registrar"]
    code, peak_mib, stdout = subprocess.run(
        command, capture_output=True, text=True, check=True, env=shell_env(tmp_path / "g")
    ).stdout.split("\n", 2)
    assert int(peak_mib) < 600, f"{peak_mib} MiB: the file was read"
    assert code == "0"
    result = json.loads(stdout)
    assert result["enrolled"] == 1
    (failure,) = result["failures"]
    assert failure["reason"] == "image-too-large"
    assert failure["message"].startswith(f"The file {folder / 'huge.jpg'} is 1,610,612,736 bytes")
    assert "FACETRUST_MAX_BYTES" in failure["message"]  # the operator is told the setting


@pytest.mark.slow  # the installed command, one batch run
def test_a_withdrawn_consent_is_not_granted_again_from_its_form_spelled_in_another_form(
    tmp_path: Path, facetrust: Runner
) -> None:
    # granted at a desk that types "formulário" composed (NFC), withdrawn, then a
    # batch whose CSV was written on macOS, where file names are decomposed (NFD)
    composed = "formul\u00e1rio-k.pdf"
    decomposed = unicodedata.normalize("NFD", composed)
    facetrust("subject", "add", "kofi", "--actor", "registrar")
    facetrust("consent", "grant", "kofi", "--purpose", "boarding", "--days", "30",
              "--evidence-ref", composed, "--evidence-sha256", SHA,
              "--notice-version", "n1", "--actor", "registrar")
    facetrust("consent", "withdraw", "kofi", "--actor", "dpo")
    folder = tmp_path / "photos"
    _photos(folder, {"kofi/1.jpg": sorted((SAMPLE / "Kofi_Annan").glob("*.jpg"))[0]})
    csv = tmp_path / "consents.csv"
    csv.write_text(HEADER + _row("kofi", "kofi", decomposed), encoding="utf-8")
    again = _enrol(facetrust, folder, csv)
    assert again["enrolled"] == 0
    assert again["failures_by_reason"] == {"consent-withdrawn": 1}
    assert not [c for c in _consents(facetrust, "kofi") if c["status"] == "active"]
