"""Fixtures shared by the integration tests: one store per database engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.store import Store, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'postroom.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on each engine."""
    s = open_store(store_url)
    s.migrate()
    yield s
    s.close()
