"""The ``store`` fixture of the store tests: each test runs on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facetrust.store import Store
from store.test_store_conformance import STORES, _new_database


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new store of each backend (PostgreSQL starts its server only when used)."""
    instance = STORES[request.param](tmp_path, _new_database(request))
    yield instance
    instance.close()
