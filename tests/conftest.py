"""Shared fixtures: Temporal test servers from the installed binaries, real databases
(SQLite file, and PostgreSQL at 127.0.0.1:5432 when it answers), users with keys, and an
in-process stack (API over ASGI + worker) on the real dev server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.search_attributes import SEARCH_ATTRIBUTES
from core.config import Settings
from dialer.binaries import temporal_cli, temporal_test_server
from store import crud
from store.db import make_engine
from store.migrate import upgrade
from store.models import User

PG_ADMIN_URL = os.environ.get("DIALER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-not-for-production"


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


async def start_ts_env() -> WorkflowEnvironment:
    """The time-skipping test server, with the Dialer search attributes registered."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server()
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )
    return env


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
    )
    yield env
    await env.shutdown()


def _pg_database() -> Iterator[str]:
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dialer.db'}"
        upgrade(url)
        yield url
        return
    for url in _pg_database():
        upgrade(url)
        yield url


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


def test_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    """Settings for a test: its own task queues, no simulated latency, fast backoff."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "task_queue": f"dialer-{suffix}",
        "dial_task_queue": f"dialer-dial-{suffix}",
        "simulated_latency_ms": 0,
        "dial_backoff_initial_seconds": 0.05,
        "dial_backoff_max_seconds": 0.2,
        "dial_timeout_seconds": 5.0,
        "dial_rate_per_second": 1000.0,
        "create_call_wait_seconds": 15.0,
        # A short simulated call, so workflows that follow it to its end close quickly.
        "simulated_ring_seconds": 0.05,
        "simulated_answer_seconds": 0.05,
        "simulated_talk_seconds": 0.1,
        "call_status_poll_seconds": 1.0,
        "call_status_poll_max_seconds": 2.0,
        "call_max_age_seconds": 60.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@dataclass
class Account:
    user: User
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


def make_account(engine: Engine, email: str | None = None, *, with_line: bool = True) -> Account:
    """A user with an API key and (by default) one active simulated line."""
    from store.db import session_scope
    from store.models import PhoneNumber

    user = crud.create_user(engine=engine, email=email or f"u{uuid.uuid4().hex[:10]}@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    if with_line:
        with session_scope(engine) as session:
            session.add(PhoneNumber(user_id=user.id, number="+12025550199", label="test line"))
    return Account(user=user, key=key)


@dataclass
class Stack:
    """An in-process Dialer: the API over ASGI and the workers, on a Temporal server."""

    settings: Settings
    engine: Engine
    client: Client
    http: httpx.AsyncClient


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from api.app import create_app
    from worker import build_workers

    settings = test_settings(tmp_path, database_url)
    async with AsyncExitStack() as stack_:
        for w in build_workers(dev_env.client, settings, engine):
            await stack_.enter_async_context(w)
        app = create_app(settings, engine=engine, temporal_client=dev_env.client)
        await stack_.enter_async_context(app.router.lifespan_context(app))
        http = await stack_.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dialer")
        )
        yield Stack(settings=settings, engine=engine, client=dev_env.client, http=http)


async def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `predicate` (sync or async) until it returns a truthy value, within a bound."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
