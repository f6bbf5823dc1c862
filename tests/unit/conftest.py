"""Unit-layer databases: one migrated database per backend for the whole session, emptied
before each test, instead of a new database per test (a PostgreSQL database costs about a
second to create and migrate; emptying one costs milliseconds). Same backends, same schema,
the same isolation: every test starts from empty tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from store.db import make_engine
from store.migrate import upgrade
from tests.conftest import _pg_database

_tables: dict[str, MetaData] = {}


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def unit_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('unit-db') / 'dialer.db'}"
        upgrade(url)
        yield url
        return
    for url in _pg_database():
        upgrade(url)
        yield url


def _empty(engine: Engine, url: str) -> None:
    """Delete every row of every table the migrations made (children first)."""
    if url not in _tables:
        reflected = MetaData()
        reflected.reflect(bind=engine)
        _tables[url] = reflected
    with engine.begin() as conn:
        for table in reversed(_tables[url].sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())


@pytest.fixture
def engine(unit_database_url: str) -> Iterator[Engine]:
    eng = make_engine(unit_database_url)
    _empty(eng, unit_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def database_url(unit_database_url: str) -> str:
    return unit_database_url
