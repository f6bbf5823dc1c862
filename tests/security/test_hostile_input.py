"""Inputs found by the fuzzer that a database refuses (PostgreSQL text cannot hold NUL): a
clear 4xx or a recorded failure, never a 500 and never a workflow stuck retrying a write."""

from __future__ import annotations

from tests.support.accounts import make_account
from tests.support.rows import session_row
from tests.support.stack import Stack
from tests.support.waiting import wait_until


async def test_nul_in_a_name_is_refused_and_nothing_is_written(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post("/api/v1/agents", json={"name": "a\x00b"}, headers=account.headers)
    assert resp.status_code in (201, 422), resp.text  # SQLite stores it; PostgreSQL cannot
    if resp.status_code == 422:
        assert "cannot be stored" in resp.json()["detail"]
        listed = await stack.http.get("/api/v1/agents", headers=account.headers)
        assert listed.json() == []


async def test_nul_in_the_phone_number_is_recorded_as_invalid(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post(
        "/api/call/create_call",
        params={"phoneNumber": "+1202555\x000100"},
        headers=account.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "failed"
    assert body["failure_code"] == "invalid_number"
    row = await wait_until(lambda: session_row(stack.engine, body["call_session_id"]))
    assert row.status == "failed"
    assert "\x00" not in row.requested_number
