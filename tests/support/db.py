"""Test databases: a migrated SQLite file, or a fresh PostgreSQL database at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from store.migrate import upgrade

PG_ADMIN_URL = os.environ.get("DIALER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def pg_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped afterwards (skips, or fails under
    DIALER_TEST_REQUIRE_PG, when the server does not answer)."""
    if not pg_available():
        if os.environ.get("DIALER_TEST_REQUIRE_PG"):
            # CI sets this: a PostgreSQL run that silently skipped would prove nothing.
            pytest.fail(f"PostgreSQL is required here but not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name = f"dialer_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, migrated database: `sqlite` (a file in `directory`) or `postgres`."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'dialer.db'}"
        upgrade(url)
        yield url
        return
    for url in pg_database():
        upgrade(url)
        yield url


_tables: dict[str, MetaData] = {}


def empty_tables(engine: Engine, url: str) -> None:
    """Delete every row of every table the migrations made (children first)."""
    if url not in _tables:
        reflected = MetaData()
        reflected.reflect(bind=engine)
        _tables[url] = reflected
    with engine.begin() as conn:
        for table in reversed(_tables[url].sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())
