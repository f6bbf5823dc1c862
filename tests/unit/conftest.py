"""Unit-layer databases: one migrated database per backend for the whole session, emptied
before each test, instead of a new database per test (a PostgreSQL database costs about a
second to create and migrate; emptying one costs milliseconds). Same backends, same schema,
the same isolation: every test starts from empty tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from store.db import make_engine
from tests.support.db import empty_tables, migrated_database


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def unit_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from migrated_database(request.param, tmp_path_factory.mktemp("unit-db"))


@pytest.fixture
def engine(unit_database_url: str) -> Iterator[Engine]:
    eng = make_engine(unit_database_url)
    empty_tables(eng, unit_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def database_url(unit_database_url: str) -> str:
    return unit_database_url
