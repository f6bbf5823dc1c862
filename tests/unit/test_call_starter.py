"""services.calls.CallStarter when Temporal answers with an error: a failure after which the
start may have reached the server is retried as a plain start (pending, never failed while
the run may exist); a refusal is recorded as orchestrator_unavailable. Fake client, real
database."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts.calls import Stage
from services.calls import CallAnswer, CallRequest, CallStarter
from services.temporal import TemporalGateway
from store.db import session_scope
from store.models import CallSession
from tests.support.accounts import make_account
from tests.support.settings import settings_for


class OverloadedClient:
    """update-with-start fails with `error`; a plain start fails with `start_error` or works."""

    def __init__(self, error: RPCError, start_error: Exception | None = None) -> None:
        self.error = error
        self.start_error = start_error
        self.starts: list[str] = []

    async def execute_update_with_start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    async def start_workflow(self, workflow: Any, arg: Any, **options: Any) -> Any:
        self.starts.append(options["id"])
        if self.start_error is not None:
            raise self.start_error
        return object()


def rpc_error(status: RPCStatusCode) -> RPCError:
    return RPCError(status.name.lower(), status, b"")


def request(user_id: uuid.UUID) -> CallRequest:
    return CallRequest(
        user_id=user_id,
        phone_number="+12025550100",
        agent_id=None,
        flow_id=None,
        phone_number_id=None,
        wait=Stage.ACCEPTED,
        idempotency_key=None,
    )


def row(engine: Engine, session_id: uuid.UUID) -> CallSession | None:
    with session_scope(engine) as session:
        found = session.get(CallSession, session_id)
        if found is not None:
            session.expunge(found)
        return found


async def answer(
    engine: Engine, tmp_path: Path, database_url: str, client: OverloadedClient
) -> CallAnswer:
    settings = settings_for(tmp_path, database_url)
    # A stand-in with only the two Client methods the gateway calls on this path.
    starter = CallStarter(settings, engine, TemporalGateway(settings, cast(Client, client)))
    return await starter.create(request(make_account(engine).user.id))


@pytest.mark.parametrize(
    "status", [RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN]
)
async def test_a_timed_out_start_is_started_again_and_answers_pending(
    engine: Engine, tmp_path: Path, database_url: str, status: RPCStatusCode
) -> None:
    client = OverloadedClient(rpc_error(status))
    body = await answer(engine, tmp_path, database_url, client)
    assert body.status == "pending"
    assert client.starts == [str(body.call_session_id)]
    # Nothing recorded as failed: the run exists and will write its own row.
    assert row(engine, body.call_session_id) is None


async def test_a_timed_out_start_that_cannot_be_made_again_is_recorded_unavailable(
    engine: Engine, tmp_path: Path, database_url: str
) -> None:
    client = OverloadedClient(
        rpc_error(RPCStatusCode.DEADLINE_EXCEEDED), rpc_error(RPCStatusCode.UNAVAILABLE)
    )
    body = await answer(engine, tmp_path, database_url, client)
    assert (body.status, body.failure_code) == ("failed", "orchestrator_unavailable")
    stored = row(engine, body.call_session_id)
    assert stored is not None and stored.failure_code == "orchestrator_unavailable"


@pytest.mark.parametrize("status", [RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED])
async def test_a_refused_start_is_recorded_unavailable_at_once(
    engine: Engine, tmp_path: Path, database_url: str, status: RPCStatusCode
) -> None:
    client = OverloadedClient(rpc_error(status))
    body = await answer(engine, tmp_path, database_url, client)
    assert (body.status, body.failure_code) == ("failed", "orchestrator_unavailable")
    assert client.starts == []
