"""Fixtures of the gallery, gate and CLI tests: real sample templates, a fake clock,
fresh galleries. Registered for every test by ``tests/conftest.py`` (``pytest_plugins``)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig

SAMPLE = Path(__file__).parent / "data" / "lfw"
EVIDENCE_SHA256 = "ab" * 32
#: Subject ids outside the gallery's grammar, and ids inside it at its edges.
BAD_IDS = [
    "a/b",
    "../x",
    "a\x00b",
    "a\nb",
    "evil\u202egpj",  # right-to-left override
    " kofi",
    "kofi ",
    "Jose\u0301",  # NFD
    "Jos\u00e9",  # NFC: still not ASCII
    "",
    ".hidden",
    "x" * 65,
]
GOOD_IDS = ["kofi", "Kofi_A", "emp.00042", "a-b", "x" * 64, "0"]


class FakeClock:
    """A clock the tests move by hand (no sleeps)."""

    def __init__(self) -> None:
        self.current = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.current += timedelta(microseconds=1)  # keeps events strictly ordered
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture(scope="session")
def identities() -> dict[str, list[Path]]:
    """Identity name -> its 4 sample photos, sorted."""
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(SAMPLE.iterdir()) if d.is_dir()}


@pytest.fixture(scope="session")
def embeddings(sample_embeddings: dict[Path, Embedding]) -> dict[Path, Embedding]:
    """Every sample photo's template, computed once per session."""
    return sample_embeddings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def master_key() -> crypto.MasterKey:
    return crypto.MasterKey(crypto.generate_key(), "test")


GalleryFactory = Callable[..., Gallery]


@pytest.fixture
def make_gallery(
    tmp_path: Path, clock: FakeClock, master_key: crypto.MasterKey
) -> Iterator[GalleryFactory]:
    """Create galleries in fresh folders under ``tmp_path``; all closed at teardown."""
    opened: list[Gallery] = []

    def make(name: str = "g", key: crypto.MasterKey | None = None, **settings: Any) -> Gallery:
        config = GalleryConfig.in_folder(tmp_path / name, key_file=None, **settings)
        (tmp_path / name).mkdir(exist_ok=True)
        gallery = Gallery.create(config, key or master_key, now=clock)
        opened.append(gallery)
        return gallery

    yield make
    for gallery in opened:
        gallery.close()  # closing twice is harmless


def consent(
    gallery: Gallery,
    subject_id: str,
    purposes: tuple[str, ...] = ("boarding",),
    days: float = 30,
) -> str:
    """Grant a consent valid ``days`` from now; returns its id."""
    record = gallery.grant_consent(
        subject_id,
        purposes,
        expires_at=gallery.now() + timedelta(days=days),
        evidence_ref=f"form-{subject_id}",
        evidence_sha256=EVIDENCE_SHA256,
        notice_version="notice-2026-01",
        actor="registrar",
    )
    return record.consent_id


def enrol_sample(
    gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    purposes: tuple[str, ...] = ("boarding",),
    photos: slice = slice(0, 2),
) -> None:
    """Add, consent and enrol every sample identity from its first two photos."""
    for name, paths in identities.items():
        gallery.add_subject(name, actor="registrar")
        consent(gallery, name, purposes)
        gallery.enroll(name, [embeddings[p] for p in paths[photos]], actor="registrar")


@pytest.fixture
def sample_gallery(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> Gallery:
    """A gallery with the 10 sample identities enrolled (photos 0-1) for boarding."""
    gallery = make_gallery()
    enrol_sample(gallery, identities, embeddings)
    return gallery


@pytest.fixture(scope="session")
def grant() -> Callable[..., str]:
    """The ``consent`` helper, as a fixture."""
    return consent


@pytest.fixture(scope="session")
def enrol_all() -> Callable[..., None]:
    """The ``enrol_sample`` helper, as a fixture."""
    return enrol_sample


@pytest.fixture
def batch_photos(tmp_path: Path) -> tuple[Path, Path]:
    """A batch enrolment folder and its consent CSV: the sample photos (one subject folder
    each: 40 photos, 10 subjects), a two-face photo, an unlisted photo, a broken file and
    a photo without a face."""
    data = SAMPLE.parent
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE, folder)
    shutil.copy(data / "multi_face" / "Vicente_Fox_0002.jpg", folder / "Vicente_Fox_0002.jpg")
    (folder / "unlisted").mkdir()
    shutil.copy(next(SAMPLE.glob("*/*.jpg")), folder / "unlisted" / "x.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "wall.jpg")  # a photo, no face
    rows = [
        {"photo": d.name, "subject_id": d.name, "display_name": d.name.replace("_", " "),
         "purposes": "boarding;access-control", "expires": "2030-01-01",
         "evidence_ref": f"form-{d.name}", "evidence_sha256": EVIDENCE_SHA256,
         "notice_version": "n1"}
        for d in sorted(SAMPLE.iterdir()) if d.is_dir()
    ]
    for photo in ("Vicente_Fox_0002.jpg", "broken.jpg", "wall.jpg"):
        rows.append({**rows[0], "photo": photo, "subject_id": photo[:-4],
                     "evidence_ref": f"form-{photo}"})
    consents = tmp_path / "consents.csv"
    with consents.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder, consents
