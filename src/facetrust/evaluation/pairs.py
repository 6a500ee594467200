"""Verification pairs files: LFW's ``pairs.txt`` (View 2) and a simple CSV.

LFW ``pairs.txt``: a header line ``<folds> <n>``, then per fold ``n`` mated
lines ``name i j`` followed by ``n`` non-mated lines ``name1 i name2 j``;
image ``i`` of ``name`` is ``<images>/<name>/<name>_<i:04d>.jpg``.

CSV: ``image_a,image_b,same`` (a header row is optional; ``same`` is
1/0/true/false/yes/no), paths relative to the images folder, and an
optional fourth ``fold`` column. Without it, pairs are split into 10
contiguous folds in file order. The identity of an image is its parent
folder's name.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvaluationError

_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "n", "f"}


@dataclass(frozen=True)
class Pair:
    """Two images and whether they show the same person.

    Attributes
    ----------
    image_a, image_b : str
        Image file paths.
    same : bool
        True for a mated pair (same identity).
    fold : int
        Cross-validation fold, from 0.
    identity_a, identity_b : str
        Identity names (LFW folder names).
    """

    image_a: str
    image_b: str
    same: bool
    fold: int
    identity_a: str
    identity_b: str


def lfw_image_path(images: str | os.PathLike[str], name: str, number: int) -> str:
    """Path of LFW image ``number`` of ``name``: ``<images>/<name>/<name>_<number:04d>.jpg``."""
    return os.path.join(os.fspath(images), name, f"{name}_{number:04d}.jpg")


def read_pairs(
    pairs_file: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    check_files: bool = True,
) -> list[Pair]:
    """Read a pairs file (LFW ``pairs.txt`` or CSV, chosen by content).

    Parameters
    ----------
    pairs_file : path
    images : path
        Folder the pairs' image names are relative to.
    check_files : bool
        Raise when an image named in the pairs does not exist.

    Raises
    ------
    EvaluationError
        The file is missing, a line is malformed (its number is given), or
        images it names do not exist.
    """
    path = Path(pairs_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise EvaluationError(
            f"Could not read the pairs file {path}: {error.strerror or error}. "
            "Pass an LFW pairs.txt or a CSV of image_a,image_b,same."
        ) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    is_csv = "," in first
    pairs = _read_csv(lines, images, path) if is_csv else _read_lfw(lines, images, path)
    if not pairs:
        raise EvaluationError(f"The pairs file {path} holds no pairs. Expected at least one.")
    if check_files:
        check_images_exist(pairs)
    return pairs


def check_images_exist(pairs: Sequence[Pair]) -> None:
    """Raise :class:`EvaluationError` naming the images of ``pairs`` that do not exist."""
    missing = sorted(
        {p for pair in pairs for p in (pair.image_a, pair.image_b) if not os.path.isfile(p)}
    )
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EvaluationError(
            f"{len(missing)} image(s) named in the pairs file do not exist: {shown}. "
            "Check the --images folder (it must hold <Name>/<Name>_NNNN.jpg for LFW)."
        )


def _read_lfw(lines: list[str], images: str | os.PathLike[str], path: Path) -> list[Pair]:
    header = lines[0].split() if lines else []
    try:
        folds, per_class = int(header[0]), int(header[1])
    except (IndexError, ValueError):
        raise EvaluationError(
            f"{path}, line 1: expected the LFW header '<folds> <pairs per class>' "
            f"(e.g. '10 300'). Got {lines[0] if lines else ''!r}."
        ) from None
    body = [(n, line.split()) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    expected = folds * 2 * per_class
    if len(body) != expected:
        raise EvaluationError(
            f"{path}: the header announces {folds} folds of {per_class} mated and "
            f"{per_class} non-mated pairs ({expected} lines); the file has {len(body)}."
        )
    pairs = []
    for index, (number, fields) in enumerate(body):
        fold, position = divmod(index, 2 * per_class)
        mated = position < per_class
        try:
            if mated and len(fields) == 3:
                name_a = name_b = fields[0]
                a, b = int(fields[1]), int(fields[2])
            elif not mated and len(fields) == 4:
                name_a, name_b = fields[0], fields[2]
                a, b = int(fields[1]), int(fields[3])
            else:
                raise ValueError
        except ValueError:
            kind = "'name i j' (mated)" if mated else "'name1 i name2 j' (non-mated)"
            raise EvaluationError(
                f"{path}, line {number}: expected {kind}. Got {' '.join(fields)!r}."
            ) from None
        pairs.append(
            Pair(
                lfw_image_path(images, name_a, a),
                lfw_image_path(images, name_b, b),
                mated,
                fold,
                name_a,
                name_b,
            )
        )
    return pairs


def _parse_same(value: str, number: int, path: Path) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise EvaluationError(
        f"{path}, line {number}: the 'same' column must be 1/0, true/false or yes/no. "
        f"Got {value!r}."
    )


def _read_csv(lines: list[str], images: str | os.PathLike[str], path: Path) -> list[Pair]:
    rows = [(n, row) for n, row in enumerate(csv.reader(lines), start=1) if row]
    if rows and rows[0][1][:3] == ["image_a", "image_b", "same"]:
        rows = rows[1:]
    records = []
    for number, row in rows:
        if len(row) not in (3, 4):
            raise EvaluationError(
                f"{path}, line {number}: expected 'image_a,image_b,same[,fold]'. "
                f"Got {len(row)} field(s): {','.join(row)!r}."
            )
        fold = None
        if len(row) == 4:
            try:
                fold = int(row[3])
            except ValueError:
                raise EvaluationError(
                    f"{path}, line {number}: the fold column must be an integer. Got {row[3]!r}."
                ) from None
        records.append((row[0].strip(), row[1].strip(), _parse_same(row[2], number, path), fold))
    total = len(records)
    pairs = []
    for index, (a, b, same, fold) in enumerate(records):
        path_a = os.path.join(os.fspath(images), a)
        path_b = os.path.join(os.fspath(images), b)
        pairs.append(
            Pair(
                path_a,
                path_b,
                same,
                fold if fold is not None else index * 10 // total,
                _identity(path_a),
                _identity(path_b),
            )
        )
    return pairs


def _identity(path: str) -> str:
    return Path(path).parent.name
