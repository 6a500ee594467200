"""What a batch's consent CSV may and may not do, through the installed command: rows that
give one photo two subjects (or two consents) refuse the whole batch before anything is
written."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery
from facetrust.gallery.batch_enrolment import read_consents
from installed_command import installed_runner

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
