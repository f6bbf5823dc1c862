"""Shared fixtures: Temporal test servers from the installed binaries, real databases
(SQLite file, and PostgreSQL at 127.0.0.1:5432 when it answers) and an in-process stack
(API over ASGI + worker) on the real dev server. Helpers live in tests/support."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from contracts.search_attributes import SEARCH_ATTRIBUTES
from dialer.binaries import dev_server_dynamic_config_args, temporal_cli
from store.db import make_engine
from store.migrate import upgrade
from tests.support.db import migrated_database
from tests.support.redis import require_redis
from tests.support.settings import settings_for
from tests.support.stack import Stack, open_stack
from tests.support.temporal import start_ts_env


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_ts_env()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (in memory), search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        search_attributes=list(SEARCH_ATTRIBUTES),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=dev_server_dynamic_config_args(),
    )
    yield env
    await env.shutdown()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, then a PostgreSQL database."""
    yield from migrated_database(request.param, tmp_path)


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (limits shared across processes), or a skip with the reason."""
    return require_redis()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with open_stack(settings_for(tmp_path, database_url), engine, dev_env.client) as s:
        yield s
