"""The consent CSV of a batch enrolment, read against its photo folder.

One row per photo file, or per subject folder (every image in it), relative
to the photo folder, with the columns::

    photo, subject_id, display_name, purposes, expires, evidence_ref,
    evidence_sha256, notice_version

``purposes`` is separated by ``;``; ``expires`` is an ISO date (00:00 UTC
that day) or time (UTC if no zone), read by :func:`facetrust.times.parse_time`
as every entry point reads it; ``display_name`` may be empty. Photos are named by their path
under the folder, symbolic links included (not resolved). A photo that two
rows give different subjects or different consents is refused with the whole
batch, before anything is written; so is a row that would name the whole
folder, or whose cells do not fit the columns. A row that names no photo is
returned as such (:class:`UnmatchedRow`), to be reported, never skipped.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import InvalidParameter
from ..images import IMAGE_SUFFIXES
from ..text import canonical
from ..times import parse_time

CSV_COLUMNS = (
    "photo", "subject_id", "display_name", "purposes", "expires", "evidence_ref",
    "evidence_sha256", "notice_version",
)


@dataclass(frozen=True)
class ConsentRow:
    """One CSV row: who is in the photo(s) and the consent they gave."""

    subject_id: str
    display_name: str | None
    purposes: tuple[str, ...]
    expires_at: datetime
    evidence_ref: str
    evidence_sha256: str
    notice_version: str

@dataclass(frozen=True)
class UnmatchedRow:
    """A consent CSV row that names no photo of the folder, and why (``message``).

    ``name`` is its ``photo`` cell as the queue names photos (relative to the
    folder), ``photo`` the path it names.
    """

    line: int
    name: str
    photo: Path
    subject_id: str
    message: str


@dataclass(frozen=True)
class ConsentCsv:
    """A consent CSV read against its photo folder: each photo's row, and the rows that
    name no photo there (a misspelt name, a missing file, an empty subject folder)."""

    rows: dict[Path, ConsentRow]
    unmatched: tuple[UnmatchedRow, ...]


def read_consents(csv_path: str | os.PathLike[str], folder: Path) -> dict[Path, ConsentRow]:
    """Photo path -> its consent row (:func:`read_consent_csv`'s ``rows``)."""
    return read_consent_csv(csv_path, folder).rows


def read_consent_csv(csv_path: str | os.PathLike[str], folder: Path) -> ConsentCsv:
    """Each photo's consent row; a row naming a folder covers every image in it.

    Photos are named as :func:`photo_path` names them. Rows that agree (a
    folder row and a file row with the same subject and consent) may both
    name a photo. A row that names no image under ``folder`` (no such file,
    a file of another format, a folder without images, a path outside
    ``folder``) is returned in ``unmatched``, to be reported as failed with the
    reason ``photo-not-found``: it is not skipped silently.

    Raises
    ------
    InvalidParameter
        A CSV that is not UTF-8 text, a missing column, a row without 8 cells,
        an empty ``photo`` (or one naming ``folder`` itself), a malformed
        expiry, or two rows that give one photo different subjects or
        different consents (both lines named).
    """
    folder = photo_path(folder)
    rows: dict[Path, ConsentRow] = {}
    unmatched: list[UnmatchedRow] = []
    lines: dict[Path, int] = {}  # the CSV line each photo's row came from
    with io.StringIO(_csv_text(csv_path), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidParameter(
                f"The consent CSV {str(csv_path)!r} lacks the column(s) {', '.join(missing)}. "
                f"Expected: {', '.join(CSV_COLUMNS)}."
            )
        for line, raw in enumerate(reader, start=2):
            if None in raw or None in raw.values():  # cells short of, or beyond, the columns
                cells = sum(v is not None for k, v in raw.items() if k is not None)
                cells += len(raw.get(None) or [])
                raise InvalidParameter(
                    f"Line {line} of {str(csv_path)!r} has {cells} cells; "
                    f"expected {len(reader.fieldnames or CSV_COLUMNS)} columns "
                    f"({', '.join(CSV_COLUMNS)}). Quote a cell that holds a comma, and run "
                    "again; nothing was enrolled."
                )
            try:
                expires = parse_time(raw["expires"], "expires")
            except InvalidParameter as error:
                raise InvalidParameter(
                    f"Line {line} of {str(csv_path)!r}: {error} Correct the CSV and run "
                    "again; nothing was enrolled."
                ) from None
            row = ConsentRow(
                subject_id=raw["subject_id"].strip(),
                display_name=raw["display_name"].strip() or None,
                purposes=tuple(
                    canonical(p).strip() for p in raw["purposes"].split(";") if p.strip()
                ),
                expires_at=expires,
                # in NFC, as the gallery records them: rows (and the consents already
                # granted) are compared by these, whatever form the CSV was written in
                evidence_ref=canonical(raw["evidence_ref"]).strip(),
                evidence_sha256=raw["evidence_sha256"].strip(),
                notice_version=canonical(raw["notice_version"]).strip(),
            )
            cell = raw["photo"].strip()
            target = photo_path(folder / cell)
            if not cell or target == folder:
                # it would name every photo of the folder as this one subject's
                raise InvalidParameter(
                    f"Line {line} of {str(csv_path)!r}: 'photo' must name a photo file or a "
                    f"subject folder under the photo folder. Got {cell!r}. Correct the CSV "
                    "and run again; nothing was enrolled."
                )
            if (problem := _names_no_photo(cell, target, folder)) is not None:
                unmatched.append(UnmatchedRow(
                    line, _shown(target, folder) if _is_under(target, folder) else cell,
                    target, row.subject_id,
                    f"Line {line} of the consent CSV names {cell!r}, {problem}",
                ))
                continue
            for photo in images_in(target) if target.is_dir() else [target]:
                earlier = rows.get(photo)
                if earlier is None:
                    rows[photo], lines[photo] = row, line
                elif (conflict := _conflict(earlier, row)) is not None:
                    raise InvalidParameter(
                        f"Lines {lines[photo]} and {line} of {str(csv_path)!r} give the photo "
                        f"{_shown(photo, folder)!r} {conflict}: a photo must name one subject "
                        "and one consent. Correct the CSV and run again; nothing was enrolled."
                    )
    return ConsentCsv(rows, tuple(unmatched))


def _csv_text(csv_path: str | os.PathLike[str]) -> str:
    """The CSV's text: UTF-8, with or without the byte order mark spreadsheets write."""
    raw = Path(csv_path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InvalidParameter(
            f"The consent CSV {str(csv_path)!r} is not UTF-8 text: line {line} holds the byte "
            f"0x{raw[error.start]:02x}, likely from a legacy code page (Windows-1252, "
            "Latin-1). Save it as 'CSV UTF-8' (or convert it with iconv) and run again; "
            "nothing was enrolled."
        ) from None


def _is_under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _names_no_photo(cell: str, target: Path, folder: Path) -> str | None:
    """Why the ``photo`` cell ``cell`` (naming ``target``) names no photo of ``folder``;
    None when it names one or a folder of them."""
    kinds = ", ".join(IMAGE_SUFFIXES)
    if not _is_under(target, folder):
        return ("which is outside the photo folder. Name photos by their path under the "
                "folder, and move the photo there.")
    if target.is_dir():
        if images_in(target):
            return None
        return (f"a folder that holds no photo ({kinds}). Add the subject's photos, or "
                "correct the row.")
    if not target.is_file():
        return ("which is not in the photo folder. Correct the row's 'photo', or add the "
                "photo, and run again.")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        return (f"which is not a photo by its name (facetrust reads {kinds}). Convert it to "
                "one of those formats, and name the converted file in the row.")
    return None


def _conflict(first: ConsentRow, second: ConsentRow) -> str | None:
    """How two rows naming one photo contradict each other; None if they agree."""
    if first.subject_id != second.subject_id:
        return f"different subjects ({first.subject_id!r} and {second.subject_id!r})"
    if (first.evidence_ref, first.evidence_sha256.lower()) != (
        second.evidence_ref, second.evidence_sha256.lower()
    ):
        return (f"different consent evidence ({first.evidence_ref!r} and "
                f"{second.evidence_ref!r})")
    if (first.purposes, first.expires_at, first.notice_version) != (
        second.purposes, second.expires_at, second.notice_version
    ):
        return "the same consent evidence with different purposes, expiry or notice"
    return None


def _shown(photo: Path, folder: Path) -> str:
    """``photo`` relative to ``folder`` when it is under it, as in the CSV."""
    try:
        return photo.relative_to(folder).as_posix()
    except ValueError:
        return str(photo)


def photo_path(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute and normalised, symbolic links kept as named (not resolved).

    A photo is named by where it lies in the batch folder: a link to a file
    elsewhere is a photo of the folder like any other, and its path relative
    to the folder is the same on every host that mounts it.
    """
    return Path(os.path.normpath(os.path.abspath(path)))


def images_in(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), as :func:`photo_path` names them, sorted."""
    folder = photo_path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
