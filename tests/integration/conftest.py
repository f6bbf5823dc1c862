"""Helpers of the integration layer: stacks with other settings than the shared `stack`
fixture, and readers of what the database holds (session rows, timeline, the simulated
carrier's ledger), which the tests assert on instead of on workflow completion."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.calls import TERMINAL
from core.config import Settings
from store.models import ApiKey, CallEvent, CallSession, PhoneNumber, SimulatedCall
from tests.conftest import Stack, test_settings

CREATE_CALL = "/api/call/create_call"


@asynccontextmanager
async def open_stack(
    settings: Settings,
    engine: Engine,
    client: Client | None,
    *,
    workers: bool = True,
) -> AsyncIterator[Stack]:
    """The API over ASGI (and, unless `workers=False`, the workers) with these settings.
    `client=None` lets the app connect by itself to `settings.temporal_target`."""
    from api.app import create_app
    from worker import build_workers

    async with AsyncExitStack() as stack_:
        if workers:
            assert client is not None
            for w in build_workers(client, settings, engine):
                await stack_.enter_async_context(w)
        app = create_app(settings, engine=engine, temporal_client=client)
        await stack_.enter_async_context(app.router.lifespan_context(app))
        http = await stack_.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dialer")
        )
        yield Stack(settings=settings, engine=engine, client=client, http=http)  # type: ignore[arg-type]


StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack_factory(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> StackFactory:
    """Open a stack on the dev server with settings overrides (same database as `engine`)."""

    def factory(
        *, workers: bool = True, client: Client | None | str = "dev", **overrides: Any
    ) -> AbstractAsyncContextManager[Stack]:
        settings = test_settings(tmp_path, database_url, **overrides)
        chosen = dev_env.client if client == "dev" else client
        return open_stack(settings, engine, chosen, workers=workers)  # type: ignore[arg-type]

    return factory


async def create_call(
    stack: Stack,
    headers: dict[str, str],
    number: str,
    *,
    wait: str | None = None,
    idempotency_key: str | None = None,
    **params: Any,
) -> httpx.Response:
    query: dict[str, Any] = {"phoneNumber": number, **params}
    if wait is not None:
        query["wait"] = wait
    if idempotency_key is not None:
        headers = {**headers, "Idempotency-Key": idempotency_key}
    return await stack.http.post(CREATE_CALL, params=query, headers=headers)


def session_row(engine: Engine, session_id: str | uuid.UUID) -> CallSession | None:
    with Session(engine) as session:
        return session.get(CallSession, uuid.UUID(str(session_id)))


def sessions_of(engine: Engine, user_id: uuid.UUID) -> list[CallSession]:
    with Session(engine) as session:
        return list(session.exec(select(CallSession).where(CallSession.user_id == user_id)).all())


def events_of(engine: Engine, session_id: str | uuid.UUID) -> list[CallEvent]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(CallEvent)
                .where(CallEvent.session_id == uuid.UUID(str(session_id)))
                .order_by(col(CallEvent.id))
            ).all()
        )


def dial_count(engine: Engine, session_id: str | uuid.UUID) -> int:
    """Calls the simulated carrier placed for one session (its ledger, not our own rows)."""
    with Session(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(SimulatedCall)
            .where(SimulatedCall.session_id == uuid.UUID(str(session_id)))
        ).one()


def table_counts(engine: Engine) -> dict[str, int]:
    """Row counts of the tables a request could write to: proof that nothing was written."""
    with Session(engine) as session:
        return {
            model.__tablename__: session.exec(select(func.count()).select_from(model)).one()  # type: ignore[attr-defined]
            for model in (CallSession, CallEvent, SimulatedCall, PhoneNumber, ApiKey)
        }


def is_terminal(row: CallSession | None) -> bool:
    return row is not None and row.status in TERMINAL


def terminal_row(engine: Engine, session_id: str | uuid.UUID) -> Callable[[], CallSession | None]:
    """A predicate for wait_until: the session row once it is terminal."""

    def check() -> CallSession | None:
        row = session_row(engine, session_id)
        return row if is_terminal(row) else None

    return check
