"""Scenario 7: the customer's webhooks under a worker SIGKILL and a Temporal SIGKILL.

The stack of the other scenarios plus a receiver process (tests/support/webhook_receiver.py)
behind one endpoint subscribed to every event, answering 204 after half a second. create_call
load and a campaign run; a third of the way in the worker is killed (2 s down), a little
later the Temporal dev server (3 s down) while calls still come in (those answered
`orchestrator_unavailable` are recorded with their call.failed, handed over by the sweeper).
Then, bounded, until every event the database holds is delivered, and counted:

- expected: the events the sessions' final states call for (call.dialed and call.ended of a
  call placed and ended, call.failed of a failed one, campaign.started and .completed);
- lost: expected events never recorded, plus recorded events the receiver never answered 2xx;
- duplicates: 2xx answers to a `webhook-id` already answered, each checked to be a retry
  (the same id with the same body; never two ids for one event);
- out of order: calls whose events arrived in another order than they were recorded;
- every attempt's signature is verified with the standardwebhooks library."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, col, select
from standardwebhooks.webhooks import WebhookVerificationError

from chaos.procs import Stack, wait_for
from chaos.scenarios import (
    Load,
    Row,
    count,
    count_campaign,
    kill_temporal,
    kill_worker,
    make_account,
    probe_recovery,
    session_ids,
    start_campaign,
)
from contracts.calls import SessionStatus
from contracts.lifecycle import FINAL
from contracts.webhooks import DeliveryState, call_stream, campaign_stream
from store.db import make_engine
from store.models import CallSession, WebhookDelivery
from tests.support.webhooks import Receiver, start_receiver, verified

SETTLE_SECONDS = 240.0
WEBHOOK_ENV = {
    "DIALER_WEBHOOK_RETRY_INITIAL_SECONDS": "0.5",
    "DIALER_WEBHOOK_RETRY_MAX_SECONDS": "2",
    "DIALER_WEBHOOK_ATTEMPT_TIMEOUT_SECONDS": "5",
    # Events recorded while Temporal is down (the API's orchestrator_unavailable calls) are
    # handed over by the sweeper: it looks every second, at rows idle for 15 s.
    "DIALER_WEBHOOK_SWEEP_SECONDS": "1",
    # Calls whose status callbacks died with the worker are followed by polling.
    "DIALER_CALL_STATUS_POLL_SECONDS": "1",
    "DIALER_CALL_STATUS_POLL_MAX_SECONDS": "2",
}


@dataclass
class WebhookRow(Row):
    events_expected: int = 0
    events_recorded: int = 0
    events_delivered: int = 0
    events_lost: int = 0
    duplicates: int = 0
    duplicates_not_retries: int = 0
    out_of_order: int = 0
    bad_signatures: int = 0
    deliver_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return (
            super().ok
            and self.events_lost == 0
            and self.duplicates_not_retries == 0
            and self.out_of_order == 0
            and self.bad_signatures == 0
        )


def expected_events(sessions: list[CallSession], campaign_id: str | None) -> set[tuple[str, str]]:
    """(stream, event type) pairs that the final states of the sessions call for."""
    want: set[tuple[str, str]] = set()
    for s in sessions:
        stream = call_stream(s.id)
        if s.status == SessionStatus.FAILED:
            want.add((stream, "call.failed"))
        elif s.status == SessionStatus.SUCCESS and s.telephony_leg_id:
            want.add((stream, "call.dialed"))
            if s.call_status in FINAL:
                want.add((stream, "call.ended"))
    if campaign_id is not None:
        want |= {
            (campaign_stream(campaign_id), t) for t in ("campaign.started", "campaign.completed")
        }
    return want


def tally(
    row: WebhookRow,
    receiver: Receiver,
    secret: str,
    outbox: list[WebhookDelivery],
    want: set[tuple[str, str]],
) -> None:
    recorded = {(d.stream, d.event_type) for d in outbox}
    row.events_expected = len(want)
    row.events_recorded = len(outbox)
    missing = want - recorded
    attempts = receiver.attempts()
    bodies: dict[str, set[str]] = defaultdict(set)
    answered: dict[str, int] = defaultdict(int)
    arrival: list[str] = []  # webhook-ids in the order of their first 2xx
    for a in attempts:
        try:
            verified(a, secret)
        except WebhookVerificationError:
            row.bad_signatures += 1
        if 200 <= a["status"] < 300:
            msg_id = a["headers"]["webhook-id"]
            bodies[msg_id].add(a["body"])
            if not answered[msg_id]:
                arrival.append(msg_id)
            answered[msg_id] += 1
    by_id = {d.event_id: d for d in outbox}
    undelivered = [d for d in outbox if not answered.get(d.event_id)]
    row.events_delivered = sum(1 for d in outbox if answered.get(d.event_id))
    row.events_lost = len(missing) + len(undelivered)
    row.duplicates = sum(n - 1 for n in answered.values())
    # A duplicate that is not a retry: one id with two bodies, or one event under two ids.
    types_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for msg_id, body in bodies.items():
        event = json.loads(next(iter(body)))
        data = event["data"]
        stream = call_stream(data["call_session_id"]) if "call_session_id" in data else ""
        stream = stream or campaign_stream(data["campaign_id"])
        types_of[(stream, event["type"])].add(msg_id)
        row.duplicates_not_retries += len(body) - 1
    row.duplicates_not_retries += sum(len(ids) - 1 for ids in types_of.values())
    arrived: dict[str, list[int]] = defaultdict(list)
    for msg_id in arrival:
        if msg_id in by_id:
            arrived[by_id[msg_id].stream].append(by_id[msg_id].sequence)
    row.out_of_order = sum(1 for seqs in arrived.values() if seqs != sorted(seqs))
    if missing:
        row.notes.append(f"expected but never recorded: {sorted(missing)[:5]}")
    if undelivered:
        left = [(d.event_type, d.state, d.attempts, d.last_error) for d in undelivered[:5]]
        row.notes.append(f"recorded but not delivered: {left}")
    row.notes.append(
        f"webhooks: {row.events_expected} expected, {row.events_recorded} recorded, "
        f"{row.events_delivered} delivered, {row.events_lost} lost; {len(attempts)} attempts, "
        f"{row.duplicates} duplicate 2xx (all retries: {row.duplicates_not_retries == 0}), "
        f"{row.out_of_order} streams out of order, {row.bad_signatures} bad signatures"
    )


async def scenario_webhooks(
    root: Path, calls: int = 60, rate: float = 6, campaign: int = 20, receiver_delay: float = 0.5
) -> WebhookRow:
    name = "7 webhooks: worker + Temporal SIGKILL"
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'dialer.db'}"
    # A receiver that takes a moment to answer, so the kills land on attempts in flight.
    receiver = start_receiver(root, delay=receiver_delay)
    stack = Stack(root, url, dict(WEBHOOK_ENV))
    row = WebhookRow(name)
    engine = make_engine(url)
    try:
        stack.start()
        account = make_account(engine)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            resp = await http.post(
                "/api/v1/webhooks", json={"url": receiver.url}, headers=account.headers
            )
        resp.raise_for_status()
        endpoint: dict[str, Any] = resp.json()
        load = Load(stack.base_url, account, row)
        campaign_id = await start_campaign(stack.base_url, account, campaign)
        traffic = asyncio.create_task(load.run("hooks", calls, rate))
        await asyncio.sleep(calls / rate / 3)
        await kill_worker(stack, row)
        await asyncio.sleep(calls / rate / 4)
        repaired = await kill_temporal(stack, row)
        probe = Load(stack.base_url, account, row, wait="dialed")
        row.recover_seconds = await probe_recovery(probe, repaired)
        await traffic
        ids = session_ids(account, load.keys + probe.keys)
        await asyncio.to_thread(count, engine, ids, row)
        endpoint_id = uuid.UUID(endpoint["id"])

        def sessions() -> list[CallSession]:
            with Session(engine) as session:
                return list(
                    session.exec(
                        select(CallSession).where(
                            col(CallSession.id).in_(list(dict.fromkeys(ids)))
                            | (CallSession.campaign_id == uuid.UUID(campaign_id))
                        )
                    ).all()
                )

        def outbox() -> list[WebhookDelivery]:
            with Session(engine) as session:
                return list(
                    session.exec(
                        select(WebhookDelivery)
                        .where(WebhookDelivery.endpoint_id == endpoint_id)
                        .order_by(col(WebhookDelivery.stream), col(WebhookDelivery.sequence))
                    ).all()
                )

        def settled() -> bool:
            rows = outbox()
            want = expected_events(sessions(), campaign_id)
            return want <= {(d.stream, d.event_type) for d in rows} and all(
                d.state == DeliveryState.DELIVERED for d in rows
            )

        try:
            await asyncio.to_thread(wait_for, "every event delivered", settled, SETTLE_SECONDS)
        except RuntimeError as exc:
            row.notes.append(str(exc))
        row.deliver_seconds = time.monotonic() - repaired
        await asyncio.to_thread(count_campaign, engine, campaign_id, campaign, row)
        tally(row, receiver, endpoint["secret"], outbox(), expected_events(sessions(), campaign_id))
    finally:
        engine.dispose()
        stack.stop()
        receiver.proc.stop()
    return row
