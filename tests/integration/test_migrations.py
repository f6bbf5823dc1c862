"""Alembic is the only way the schema changes: the migrations must build exactly the schema
the models describe, on SQLite and on PostgreSQL, and must go down and up again."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers every table on SQLModel.metadata)
from store.db import make_engine
from store.migrate import alembic_config, upgrade


def _diff(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff: list[Any] = compare_metadata(ctx, SQLModel.metadata)  # alembic: Any
            return diff
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    # `database_url` is a fresh database upgraded to head.
    diff = _diff(database_url)
    assert diff == [], f"models and migrations differ; add a migration for: {diff}"


def test_upgrade_is_at_the_single_head(database_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(database_url))
    heads = script.get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables


def test_upgrade_twice_changes_nothing(database_url: str) -> None:
    upgrade(database_url)
    assert _diff(database_url) == []
