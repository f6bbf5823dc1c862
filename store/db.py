"""Engine and sessions. One engine per process, built from settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

from core.config import Settings, get_settings

_INSERTS: dict[str, Callable[[Table], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that stores UTC and reads back aware UTC, on every database.

    SQLite keeps no offset: it hands back naive values, and would store an aware value's wall
    clock as it is. So every value is turned into UTC on the way in (a naive one is taken to be
    UTC already) and marked UTC on the way out; no reader of a row has to repair it. The DDL is
    the one of DateTime(timezone=True): no migration."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def private_database_file(path: Path) -> None:
    """The SQLite file readable by its owner only (0600, like the secrets beside it): it holds
    phone numbers and emails. Created so before SQLite opens it; SQLite gives its -wal and
    -shm files the database file's mode, and existing ones (from before) are tightened too."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        # Another user's file (a shared database) is left as its owner set it.
        with suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def make_engine(
    url: str, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0
) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private_database_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            # WAL lets the API read while the worker writes; busy_timeout waits for the lock
            # instead of failing when both processes write at once.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # Each API replica and worker holds its own pool: size it so that replicas x (pool_size +
    # max_overflow) stays under the server's max_connections. pre_ping drops connections the
    # server closed (restart, failover) instead of failing the next request with them.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


@lru_cache
def _engine_for(url: str, pool_size: int, max_overflow: int, pool_timeout: float) -> Engine:
    return make_engine(url, pool_size, max_overflow, pool_timeout)


def get_engine(settings: Settings | None = None) -> Engine:
    s = settings or get_settings()
    return _engine_for(s.db_url, s.db_pool_size, s.db_max_overflow, s.db_pool_timeout_seconds)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model, for statements that bypass the ORM."""
    # SQLAlchemy's declarative mapping sets __table__ on the class; SQLModel does not declare it.
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def insert_ignoring_duplicates(
    session: Session,
    model: type[SQLModel],
    values: dict[str, Any] | list[dict[str, Any]],
    conflict: list[str],
) -> Insert:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING, in the session's SQL dialect: the
    race-free way to write a row (or several, in one statement) at most once, on SQLite and
    PostgreSQL alike."""
    dialect = session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise NotImplementedError(f"no upsert for the {dialect} dialect: use SQLite or PostgreSQL")
    return (
        _INSERTS[dialect](table_of(model))
        .values(values)
        .on_conflict_do_nothing(index_elements=conflict)
    )
