"""Every magic number of the simulated carrier through POST /api/call/create_call, on the real
dev server with SQLite and PostgreSQL: the answer, the session row, the call-analytics
timeline and the carrier's own ledger of placed calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest

from tests.support.accounts import Account, make_account
from tests.support.rows import dial_count, session_row, terminal_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Expected:
    status: str
    failure_code: str | None
    provider_error_code: str | None
    attempts: int
    dials: int
    # (attempt, result) of each dial_attempt event, in order
    attempt_events: tuple[tuple[int, str], ...]


MAGIC = {
    "+12025550100": Expected("success", None, None, 1, 1, ()),
    "+12025550103": Expected("failed", "provider_rejected", "21211", 1, 0, ()),
    "+12025550104": Expected("success", None, None, 3, 1, ((1, "not_placed"), (2, "not_placed"))),
    "+12025550105": Expected(
        "success", None, None, 1, 1, ((1, "ambiguous"), (1, "reconciled_found"))
    ),
    "+12025550106": Expected(
        "failed",
        "retries_exhausted",
        "connect",
        5,
        0,
        tuple((n, "not_placed") for n in range(1, 6)),
    ),
    "+12025550107": Expected("success", None, None, 2, 1, ((1, "not_placed"),)),
}


async def test_magic_numbers_wait_dialed(stack: Stack, subtests: pytest.Subtests) -> None:
    """All six at once (one account, one line), each checked on its own."""
    account = make_account(stack.engine)
    responses = await asyncio.gather(
        *(create_call(stack, account.headers, number, wait="dialed") for number in MAGIC)
    )
    for number, resp in zip(MAGIC, responses, strict=True):
        with subtests.test(number=number):
            await _check(stack, account, number, resp)


async def _check(stack: Stack, account: Account, number: str, resp: httpx.Response) -> None:
    expected = MAGIC[number]
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == expected.status, body
    assert body["failure_code"] == expected.failure_code
    assert body["target_number"] == number
    assert body["user_id"] == str(account.user.id)
    assert body["telephony_provider"] == "pstn"
    assert body["from_phone_number"] == "+12025550199"
    sid = body["call_session_id"]
    if expected.status == "success":
        assert body["telephony_leg_id"], "wait=dialed on success must carry the leg id"
        assert body["failure_reason"] is None
    else:
        assert body["telephony_leg_id"] is None
        assert body["failure_reason"]

    # The carrier's ledger, not our own bookkeeping: one dial per success, none otherwise.
    assert dial_count(stack.engine, sid) == expected.dials
    row = session_row(stack.engine, sid)
    assert row is not None
    assert row.failure_code == expected.failure_code
    assert row.provider_error_code == expected.provider_error_code
    assert row.attempts == expected.attempts
    if expected.status == "success":
        assert row.telephony_leg_id == body["telephony_leg_id"]

    analytics = await stack.http.get(
        "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
    )
    assert analytics.status_code == 200, analytics.text
    detail = analytics.json()
    assert detail["request_id"] == body["request_id"]
    assert detail["provider_error_code"] == expected.provider_error_code
    assert detail["attempts"] == expected.attempts
    assert detail["failure_code"] == expected.failure_code
    events = detail["events"]
    assert events[0]["type"] == "created"
    attempts = [
        (e["detail"]["attempt"], e["detail"]["result"])
        for e in events
        if e["type"] == "dial_attempt"
    ]
    assert tuple(attempts) == expected.attempt_events
    assert expected.status in [e["type"] for e in events], events

    # The same page by request_id.
    by_request = await stack.http.get(
        "/api/v1/call-analytics", params={"request_id": body["request_id"]}, headers=account.headers
    )
    assert by_request.json()["call_session_id"] == sid


async def test_wait_accepted_answers_before_the_leg_id_is_known(
    stack_factory: StackFactory,
) -> None:
    # A slow carrier: the answer must come back after persist, long before the dial ends.
    async with stack_factory(simulated_latency_ms=1500) as stack:
        account = make_account(stack.engine)
        resp = await create_call(stack, account.headers, "+12025550100")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "success"
        assert body["request_id"] and body["call_session_id"]
        assert body["from_phone_number"] == "+12025550199"
        assert body["telephony_leg_id"] is None
        assert body["failure_code"] is None
        sid = body["call_session_id"]
        # Already persisted when the answer came back, and nothing dialed yet.
        assert session_row(stack.engine, sid) is not None
        assert dial_count(stack.engine, sid) == 0

        row = await wait_until(terminal_row(stack.engine, sid), timeout=20)
        assert row.telephony_leg_id
        assert dial_count(stack.engine, sid) == 1
