"""The arithmetic of `make chaos` scenario 7 (chaos/webhooks.py): from the outbox and what a
receiver logged, the lost events, the duplicates and whether they were only retries, the
streams out of order and the refused signatures."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from chaos.webhooks import WebhookRow, tally
from contracts.webhooks import call_stream
from store.models import WebhookDelivery
from tests.support.webhooks import Receiver
from tools.procs import Proc

SECRET = "whsec_" + base64.b64encode(b"chaos-tally-test-secret-0123456").decode()
CALL = uuid.uuid4()
OTHER = uuid.uuid4()
CALL_TYPES = ["call.dialed", "call.ringing", "call.ended"]


def body(call: uuid.UUID, type_: str) -> str:
    return json.dumps({"type": type_, "timestamp": "t", "data": {"call_session_id": str(call)}})


def row(call: uuid.UUID, type_: str, sequence: int) -> WebhookDelivery:
    return WebhookDelivery(
        user_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        event_id=f"evt_{call.hex[:8]}_{sequence}",
        event_type=type_,
        stream=call_stream(call),
        sequence=sequence,
        state="delivered",
        attempts=1,
        payload=body(call, type_),
    )


def attempt(d: WebhookDelivery, status: int, *, forged: bool = False) -> dict[str, Any]:
    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign(d.event_id, now, d.payload)
    if forged:
        signature = "v1," + base64.b64encode(b"x" * 32).decode()
    headers = {
        "webhook-id": d.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return {"headers": headers, "body": d.payload, "status": status, "at": 0.0}


def test_lost_duplicates_order_and_signatures_are_counted(tmp_path: Path) -> None:
    dialed, ringing, ended = (row(CALL, t, n) for n, t in enumerate(CALL_TYPES, 1))
    other = row(OTHER, "call.failed", 1)
    log = [
        attempt(dialed, 204),
        attempt(dialed, 204),  # a retry: the same id and body, answered again
        attempt(ended, 204),  # before ringing: out of order
        attempt(ringing, 204, forged=True),
        attempt(other, 500),  # never answered 2xx: lost
    ]
    path = tmp_path / "receiver.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in log))
    receiver = Receiver(proc=Proc("receiver", [], {}, tmp_path / "r.log"), port=1, log=path)
    want = {(call_stream(CALL), t) for t in CALL_TYPES} | {(call_stream(OTHER), "call.failed")}
    want.add((call_stream(uuid.uuid4()), "call.failed"))  # never recorded: lost too

    counted = WebhookRow("7")
    tally(counted, receiver, SECRET, [dialed, ringing, ended, other], want)
    assert counted.events_expected == 5
    assert counted.events_recorded == 4
    assert counted.events_delivered == 3
    assert counted.events_lost == 2
    assert counted.duplicates == 1 and counted.duplicates_not_retries == 0
    assert counted.out_of_order == 1
    assert counted.bad_signatures == 1
    assert not counted.ok


def test_one_event_under_two_ids_is_a_duplicate_that_is_no_retry(tmp_path: Path) -> None:
    first = row(CALL, "call.dialed", 1)
    again = row(CALL, "call.dialed", 2)
    again.event_id = "evt_another"
    path = tmp_path / "receiver.jsonl"
    path.write_text("".join(json.dumps(attempt(d, 204)) + "\n" for d in (first, again)))
    receiver = Receiver(proc=Proc("receiver", [], {}, tmp_path / "r.log"), port=1, log=path)
    counted = WebhookRow("7")
    tally(counted, receiver, SECRET, [first, again], {(call_stream(CALL), "call.dialed")})
    assert counted.events_lost == 0 and counted.duplicates == 0
    assert counted.duplicates_not_retries == 1
    assert not counted.ok
