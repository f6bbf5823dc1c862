"""The customer's webhooks when things go wrong for a long time: an endpoint that fails without
a break is disabled with a reason the user can read (the day is a setting, seconds here), and
events recorded while their hand-over to Temporal failed are delivered by the worker's sweeper.
A real receiver process, the dev server, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio.client import Client

from contracts.calls import TERMINAL
from contracts.webhooks import DeliveryState
from services.temporal import TemporalUnavailable
from services.webhooks import WebhookDispatcher
from store.models import CallSession, WebhookDelivery
from tests.integration.test_webhooks import CALL_EVENTS, FAST, add_endpoint, wait_events
from tests.support.accounts import make_account
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.waiting import wait_until
from tests.support.webhooks import receiver, verified


async def endpoint_state(stack: Stack, headers: dict[str, str], endpoint_id: str) -> Any:
    resp = await stack.http.get(f"/api/v1/webhooks/{endpoint_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def deliveries(stack: Stack, call_id: str | None = None) -> list[WebhookDelivery]:
    with Session(stack.engine) as session:
        query = select(WebhookDelivery)
        if call_id is not None:
            query = query.where(WebhookDelivery.stream == f"call:{call_id}")
        return list(session.exec(query).all())


def terminal(stack: Stack, call_id: str) -> bool:
    with Session(stack.engine) as session:
        row = session.get(CallSession, uuid.UUID(call_id))
    return row is not None and row.status in TERMINAL


async def test_an_endpoint_failing_without_a_break_is_disabled_and_says_why(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    with receiver(tmp_path, status=500) as r:
        async with stack_factory(**FAST, webhook_disable_after_seconds=2.0) as stack:
            account = make_account(stack.engine)
            endpoint = await add_endpoint(stack, account, r.url, events=["call.failed"])
            first = await create_call(stack, account.headers, "+12025550103")
            first_id = first.json()["call_session_id"]

            async def disabled() -> Any:
                state = await endpoint_state(stack, account.headers, endpoint["id"])
                return state if not state["enabled"] else None

            state = await wait_until(disabled, timeout=30, interval=0.2)
            reason = state["disabled_reason"]
            # The GET answer says what happened, for how long, since when and the last error.
            assert reason.startswith("every delivery failed for 2 s (since "), reason
            assert reason.endswith("the last: HTTP 500"), reason
            assert state["failing_since"] is not None
            attempts = r.attempts()
            assert len(attempts) >= 2 and {a["status"] for a in attempts} == {500}
            assert attempts[-1]["at"] - attempts[0]["at"] >= 2.0
            for attempt in attempts:
                verified(attempt, endpoint["secret"])
            (given_up,) = deliveries(stack, first_id)
            assert given_up.state == DeliveryState.FAILED
            assert given_up.attempts == len(attempts)

            # Later events are not delivered to it: no row is written for it, nothing is sent.
            later = await create_call(stack, account.headers, "+12025550103")
            later_id = later.json()["call_session_id"]
            await wait_until(lambda: terminal(stack, later_id), timeout=30)
            await asyncio.sleep(2.0)  # as long as a retry round, in case anything were sent
            assert deliveries(stack, later_id) == []
            assert len(r.attempts()) == len(attempts)
            log = await stack.http.get(
                f"/api/v1/webhooks/{endpoint['id']}/deliveries", headers=account.headers
            )
            items = log.json()["items"]
            assert [(i["call_session_id"], i["state"]) for i in items] == [(first_id, "failed")]
            assert items[0]["last_error"] == "HTTP 500; given up: the endpoint was disabled"


async def test_events_recorded_while_the_hand_over_failed_are_delivered_by_the_sweeper(
    stack_factory: StackFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every hand-over fails as if Temporal were unreachable, until the sweeper runs.
    handing_over = False
    real_start = WebhookDispatcher._start

    async def start(self: WebhookDispatcher, pending: Sequence[tuple[str, Any]]) -> None:
        if not handing_over:
            raise TemporalUnavailable("Temporal is unreachable (test)")
        await real_start(self, pending)

    monkeypatch.setattr(WebhookDispatcher, "_start", start)
    with receiver(tmp_path) as r:
        settings = {**FAST, "webhook_attempt_timeout_seconds": 1.0, "webhook_sweep_seconds": 0.5}
        async with stack_factory(**settings) as stack:
            account = make_account(stack.engine)
            endpoint = await add_endpoint(stack, account, r.url)
            ok = await create_call(stack, account.headers, "+12025550100")
            failed = await create_call(stack, account.headers, "+12025550103")
            ok_id, failed_id = ok.json()["call_session_id"], failed.json()["call_session_id"]
            # Until call.ended is recorded too.
            await wait_until(lambda: len(deliveries(stack, ok_id)) == len(CALL_EVENTS), timeout=30)
            await wait_until(lambda: terminal(stack, failed_id), timeout=30)
            # Recorded, pending, and nobody told: nothing arrived.
            assert {d.state for d in deliveries(stack)} == {DeliveryState.PENDING}
            assert len(deliveries(stack, failed_id)) == 1
            assert r.attempts() == []

            handing_over = True
            client: Client = stack.client

            async def get_client() -> Client:
                return client

            sweeper = asyncio.create_task(
                WebhookDispatcher(get_client, stack.engine, stack.settings).sweep_forever()
            )
            try:
                assert await wait_events(r, "call_session_id", ok_id, CALL_EVENTS) == CALL_EVENTS
                assert await wait_events(r, "call_session_id", failed_id, ["x"]) == ["call.failed"]
            finally:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            attempts = r.attempts()
            assert len(attempts) == len({a["headers"]["webhook-id"] for a in attempts}) == 5
            for attempt in attempts:
                verified(attempt, endpoint["secret"])
            await wait_until(
                lambda: {d.state for d in deliveries(stack)} == {DeliveryState.DELIVERED},
                timeout=10,
            )
