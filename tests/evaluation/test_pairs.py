"""Reading pairs files: LFW View 2 format, CSV, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from facetrust.errors import EvaluationError
from facetrust.evaluation.pairs import read_pairs

from .conftest import PAIRS, SAMPLE


def test_lfw_pairs_file_gives_folds_and_paths() -> None:
    pairs = read_pairs(PAIRS, SAMPLE)
    assert len(pairs) == 60
    assert sorted({p.fold for p in pairs}) == list(range(10))
    assert sum(p.same for p in pairs) == 30
    first = pairs[0]
    assert first.same and first.identity_a == first.identity_b
    assert first.image_a.endswith(f"{first.identity_a}/{first.identity_a}_0002.jpg")
    assert all(p.identity_a != p.identity_b for p in pairs if not p.same)


def test_csv_pairs_with_and_without_header(tmp_path: Path) -> None:
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "image_a,image_b,same\n"
        "Kofi_Annan/Kofi_Annan_0001.jpg,Kofi_Annan/Kofi_Annan_0002.jpg,1\n"
        "Kofi_Annan/Kofi_Annan_0001.jpg,Hu_Jintao/Hu_Jintao_0001.jpg,false\n"
    )
    pairs = read_pairs(csv_file, SAMPLE)
    assert [p.same for p in pairs] == [True, False]
    assert pairs[1].identity_b == "Hu_Jintao"
    csv_file.write_text("Kofi_Annan/Kofi_Annan_0001.jpg,Kofi_Annan/Kofi_Annan_0002.jpg,yes,3\n")
    assert read_pairs(csv_file, SAMPLE)[0].fold == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10 300\n", "announces"),
        ("ten folds\nA 1 2\n", "line 1"),
        ("1 1\nKofi_Annan 1\nKofi_Annan 1 Hu_Jintao 1\n", "line 2"),
        ("1 1\nKofi_Annan 1 2\nKofi_Annan x Hu_Jintao 1\n", "line 3"),
        ("a.jpg,b.jpg,maybe\n", "'same' column"),
        ("a.jpg,b.jpg\n", "line 1"),
    ],
)
def test_malformed_pairs_lines_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text(text)
    with pytest.raises(EvaluationError, match=message):
        read_pairs(bad, SAMPLE, check_files=False)


def test_missing_images_listed_in_pairs_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1 1\nKofi_Annan 1 9\nKofi_Annan 1 Nobody_Here 1\n")
    with pytest.raises(EvaluationError, match=r"2 image\(s\).*Kofi_Annan_0009.jpg"):
        read_pairs(bad, SAMPLE)


def test_missing_pairs_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="Could not read the pairs file"):
        read_pairs(tmp_path / "nope.txt", SAMPLE)
