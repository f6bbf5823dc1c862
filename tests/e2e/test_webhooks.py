"""The customer's webhooks with real processes: `dialer api`, `dialer worker`, the Temporal dev
server and receivers as processes of their own (tests/support/webhook_receiver.py), every
signature verified with the standardwebhooks library.

- A receiver that is down while the worker is SIGKILLed and started again still gets every
  event of the calls placed meanwhile, each once (a second copy of a `webhook-id` only as a
  retry: the same id, the same body), in the order they were recorded.
- One user's slow receiver (it answers after 8 s) does not delay another user's events."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.client import Client

from contracts.webhooks import DeliveryState
from store.models import WebhookDelivery
from tests.support.processes import DialerProcesses, running_processes
from tests.support.waiting import wait_until
from tests.support.webhooks import Receiver, delivered, events_of, start_receiver, verified

pytestmark = pytest.mark.slow

CALL_EVENTS = ["call.dialed", "call.ringing", "call.answered", "call.ended"]
# Retries within a second, short simulated calls, a sweeper that looks every second.
SETTINGS: dict[str, Any] = {
    "DIALER_WEBHOOK_RETRY_INITIAL_SECONDS": 0.2,
    "DIALER_WEBHOOK_RETRY_MAX_SECONDS": 1.0,
    "DIALER_WEBHOOK_SWEEP_SECONDS": 1.0,
    "DIALER_SIMULATED_RING_SECONDS": 0.2,
    "DIALER_SIMULATED_ANSWER_SECONDS": 0.3,
    "DIALER_SIMULATED_TALK_SECONDS": 0.5,
    # A call whose status callbacks died with the worker is followed by polling.
    "DIALER_CALL_STATUS_POLL_SECONDS": 1.0,
    "DIALER_CALL_STATUS_POLL_MAX_SECONDS": 2.0,
}


async def add_endpoint(base_url: str, headers: dict[str, str], url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        resp = await http.post("/api/v1/webhooks", json={"url": url}, headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def place(procs: DialerProcesses, headers: dict[str, str], numbers: list[str]) -> list[str]:
    async with httpx.AsyncClient(base_url=procs.base_url, timeout=60) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/api/call/create_call",
                    params={"phoneNumber": n, "wait": "accepted"},
                    headers=headers,
                )
                for n in numbers
            )
        )
    assert [a.status_code for a in answers] == [200] * len(numbers), [a.text for a in answers]
    return [a.json()["call_session_id"] for a in answers]


def other_user(procs: DialerProcesses) -> dict[str, str]:
    """A second user and key, made with the CLI as the first one was."""
    email = f"e2e-other-{uuid.uuid4().hex[:8]}@example.test"
    procs.cli("users", "create", "--email", email)
    key = procs.cli("keys", "create", "--user", email).stdout.strip()
    return {"x-api-key": key}


async def add_line(procs: DialerProcesses, headers: dict[str, str], number: str) -> None:
    async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:
        resp = await http.post("/api/v1/phone", json={"number": number}, headers=headers)
    assert resp.status_code == 201, resp.text


def outbox(procs: DialerProcesses, endpoint_id: str) -> list[WebhookDelivery]:
    """The endpoint's recorded events, each stream's in the order they were recorded."""
    assert procs.engine is not None
    with Session(procs.engine) as session:
        return list(
            session.exec(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
                .order_by(col(WebhookDelivery.stream), col(WebhookDelivery.sequence))
            ).all()
        )


def instant(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def duplicates_are_retries(r: Receiver) -> int:
    """How many 2xx attempts repeated a `webhook-id` already answered 2xx; asserts each is a
    retry (the same id and the same body), never a second event."""
    bodies: dict[str, set[str]] = defaultdict(set)
    answered: dict[str, int] = defaultdict(int)
    for a in r.attempts():
        if 200 <= a["status"] < 300:
            bodies[a["headers"]["webhook-id"]].add(a["body"])
            answered[a["headers"]["webhook-id"]] += 1
    assert all(len(b) == 1 for b in bodies.values()), "one webhook-id carried two bodies"
    return sum(n - 1 for n in answered.values())


async def test_receiver_down_while_the_worker_is_killed_still_gets_every_event_once_in_order(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    r = start_receiver(tmp_path)
    try:
        async with running_processes(
            tmp_path,
            e2e_temporal,
            temporal_client,
            DIALER_WEBHOOK_ATTEMPT_TIMEOUT_SECONDS=3,
            # Dials take a while, so the kill lands while some are in flight.
            DIALER_SIMULATED_LATENCY_MS=600,
            DIALER_DIAL_TIMEOUT_SECONDS=4,
            **SETTINGS,
        ) as procs:
            endpoint = await add_endpoint(procs.base_url, procs.headers, r.url)
            r.proc.kill()  # down from here until after the worker's restart

            numbers = ["+12025550100", "+12025550100", "+12025550100", "+12025550103"]
            ids = await place(procs, procs.headers, numbers)

            # Deliveries are failing against the dead receiver: now kill the worker.
            def failing() -> bool:
                return any(d.attempts > 0 for d in outbox(procs, endpoint["id"]))

            await wait_until(failing, timeout=60, interval=0.2)
            procs.workers[0].kill()
            # Calls placed while the worker is dead, and while the receiver still is.
            ids += await place(procs, procs.headers, ["+12025550100", "+12025550103"])
            numbers += ["+12025550100", "+12025550103"]
            worker = procs.start_worker()
            await procs.wait_worker(worker, temporal_client)

            ended = {i for i, n in zip(ids, numbers, strict=True) if n.endswith("0100")}

            def all_recorded() -> bool:
                rows = outbox(procs, endpoint["id"])
                done = {str(d.call_session_id) for d in rows if d.event_type == "call.ended"}
                return ended <= done and procs.all_terminal(ids)()

            try:
                await wait_until(all_recorded, timeout=120, interval=0.5)
            except AssertionError:
                raise AssertionError("events not recorded\n" + procs.logs()) from None
            before = r.attempts()
            assert before == [], "the receiver was down: it got nothing yet"
            r.restart()

            def all_delivered() -> bool:
                rows = outbox(procs, endpoint["id"])
                return all(d.state == DeliveryState.DELIVERED for d in rows)

            try:
                await wait_until(all_delivered, timeout=120, interval=0.5)
            except AssertionError:
                left = outbox(procs, endpoint["id"])
                states = [(d.event_type, d.state, d.attempts) for d in left]
                raise AssertionError(f"not delivered: {states}\n{procs.logs()}") from None

            rows = outbox(procs, endpoint["id"])
            attempts = r.attempts()
            # The receiver really was down for them: most rows took more than one attempt.
            assert sum(d.attempts for d in rows) > len(rows)
            recorded: dict[str, list[str]] = defaultdict(list)
            for d in rows:
                recorded[str(d.call_session_id)].append(d.event_type)
            for sid, number in zip(ids, numbers, strict=True):
                want = recorded[sid]
                if number.endswith("0103"):
                    assert want == ["call.failed"], want
                else:  # ringing and answered only if the worker saw them (not if polled)
                    assert want[0] == "call.dialed" and want[-1] == "call.ended", want
                # Every recorded event arrived, once, in the order it was recorded.
                assert events_of(attempts, "call_session_id", sid) == want, (sid, want)
            assert len(delivered(attempts)) == len(rows)
            duplicates_are_retries(r)
            for attempt in attempts:
                verified(attempt, endpoint["secret"])
    finally:
        r.proc.stop()


async def test_a_slow_receiver_of_one_user_does_not_delay_another_users_events(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    slow = start_receiver(tmp_path, delay=8.0)
    fast = start_receiver(tmp_path)
    try:
        async with running_processes(tmp_path, e2e_temporal, temporal_client, **SETTINGS) as procs:
            other = other_user(procs)
            await add_line(procs, other, "+12025550198")
            slow_endpoint = await add_endpoint(procs.base_url, procs.headers, slow.url)
            fast_endpoint = await add_endpoint(procs.base_url, other, fast.url)
            slow_ids, fast_ids = await asyncio.gather(
                place(procs, procs.headers, ["+12025550100"] * 3),
                place(procs, other, ["+12025550101", "+12025550102", "+12025550100"]),
            )

            def fast_done() -> bool:
                got = [events_of(fast.attempts(), "call_session_id", i) for i in fast_ids]
                return all(g[:1] == ["call.dialed"] and g[-1:] == ["call.ended"] for g in got)

            await wait_until(fast_done, timeout=90, interval=0.2)
            # Each slow lane holds its next event until the previous one's answer (8 s).
            await wait_until(
                lambda: all(
                    len(events_of(slow.attempts(), "call_session_id", i)) >= 2 for i in slow_ids
                ),
                timeout=90,
                interval=0.2,
            )

            def latencies(r: Receiver, endpoint_id: str) -> list[float]:
                created = {d.event_id: instant(d.created_at) for d in outbox(procs, endpoint_id)}
                return [
                    a["at"] - created[a["headers"]["webhook-id"]] for a in delivered(r.attempts())
                ]

            fast_latency = latencies(fast, fast_endpoint["id"])
            slow_latency = latencies(slow, slow_endpoint["id"])
            # Generous for a shared 2-core machine, but half the slow receiver's delay: the
            # other user's events were never queued behind the slow answers.
            assert max(fast_latency) < 4.0, fast_latency
            # And the slow receiver was slow meanwhile: its later events waited for it.
            assert max(slow_latency) > 6.0, slow_latency
            for attempt in fast.attempts():
                verified(attempt, fast_endpoint["secret"])
            for attempt in slow.attempts():
                verified(attempt, slow_endpoint["secret"])
            assert duplicates_are_retries(fast) == 0
            # Nothing of the one user's went to the other's receiver.
            assert {events_of(fast.attempts(), "call_session_id", i) == [] for i in slow_ids} == {
                True
            }
    finally:
        slow.proc.stop()
        fast.proc.stop()
