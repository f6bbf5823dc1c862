"""Idempotency-Key: a replay returns the same ids and the current state and never dials again,
also once the workflow has closed; other parameters under the same key answer 409; a burst of
concurrent requests with one key makes one session and one dial."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import WorkflowExecutionStatus

from tests.support.accounts import make_account
from tests.support.rows import dial_count, sessions_of, stored_row, terminal_row
from tests.support.stack import Stack, create_call
from tests.support.waiting import wait_until

IDS = ("request_id", "call_session_id", "user_id")


async def _closed(stack: Stack, workflow_id: str) -> bool:
    desc = await stack.client.get_workflow_handle(workflow_id).describe()
    return desc.status != WorkflowExecutionStatus.RUNNING


async def test_replay_returns_same_ids_and_never_dials_twice(stack: Stack) -> None:
    account = make_account(stack.engine)
    key = f"order-{uuid.uuid4()}"
    first = await create_call(stack, account.headers, "+12025550104", idempotency_key=key)
    assert first.status_code == 200, first.text
    ids = {k: first.json()[k] for k in IDS}
    sid = ids["call_session_id"]

    # While it runs: same ids; wait=dialed joins the running call and gets its leg id.
    dialed = await create_call(
        stack, account.headers, "+12025550104", wait="dialed", idempotency_key=key
    )
    assert dialed.status_code == 200, dialed.text
    body = dialed.json()
    assert {k: body[k] for k in IDS} == ids
    assert body["status"] == "success" and body["telephony_leg_id"]
    await wait_until(terminal_row(stack.engine, sid))
    assert dial_count(stack.engine, sid) == 1

    # Once the workflow has closed (after the call when its lifecycle is followed; a bound
    # covers that), a replay must not start a new run: still the same ids, still one dial.
    handle = stack.client.get_workflow_handle(sid)
    try:
        await wait_until(lambda: _closed(stack, sid), timeout=3)
    except AssertionError:
        await handle.terminate(reason="test: close the run to replay after it")
    assert await _closed(stack, sid)
    for wait in ("accepted", "dialed"):
        again = await create_call(
            stack, account.headers, "+1 (202) 555-0104", wait=wait, idempotency_key=key
        )
        assert again.status_code == 200, again.text
        body = again.json()
        assert {k: body[k] for k in IDS} == ids
        assert body["status"] == "success"
        assert body["telephony_leg_id"] == stored_row(stack.engine, sid).telephony_leg_id
    assert dial_count(stack.engine, sid) == 1
    assert len(sessions_of(stack.engine, account.user.id)) == 1


async def test_replay_of_a_failed_call_reports_its_failure(stack: Stack) -> None:
    account = make_account(stack.engine)
    key = "k-failed"
    first = await create_call(
        stack, account.headers, "+12025550103", wait="dialed", idempotency_key=key
    )
    again = await create_call(stack, account.headers, "+12025550103", idempotency_key=key)
    assert first.json()["failure_code"] == "provider_rejected"
    assert again.json() == first.json()
    assert dial_count(stack.engine, first.json()["call_session_id"]) == 0


async def test_same_key_other_parameters_is_409(stack: Stack) -> None:
    account = make_account(stack.engine)
    key = "k-conflict"
    first = await create_call(stack, account.headers, "+12025550100", idempotency_key=key)
    assert first.status_code == 200
    other_agent = str(uuid.uuid4())
    for number, params in (
        ("+12025550101", {}),
        ("+12025550100", {"agent_id": other_agent}),
        ("+12025550100", {"phone_number_id": str(uuid.uuid4())}),
    ):
        for wait in ("accepted", "dialed"):
            resp = await create_call(
                stack, account.headers, number, wait=wait, idempotency_key=key, **params
            )
            assert resp.status_code == 409, (number, params, resp.text)
            assert resp.json()["detail"]
    # The same key belongs to each user separately: another user gets a call of their own.
    other = make_account(stack.engine)
    theirs = await create_call(stack, other.headers, "+12025550101", idempotency_key=key)
    assert theirs.status_code == 200
    assert theirs.json()["call_session_id"] != first.json()["call_session_id"]
    assert len(sessions_of(stack.engine, account.user.id)) == 1


async def test_concurrent_requests_with_one_key_make_one_call(stack: Stack) -> None:
    account = make_account(stack.engine)
    key = f"burst-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(
            create_call(
                stack,
                account.headers,
                "+12025550100",
                wait="dialed" if i % 2 else "accepted",
                idempotency_key=key,
            )
            for i in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert {b["call_session_id"] for b in bodies} == {bodies[0]["call_session_id"]}
    assert {b["request_id"] for b in bodies} == {bodies[0]["request_id"]}
    assert {b["status"] for b in bodies} == {"success"}
    sid = bodies[0]["call_session_id"]
    await wait_until(terminal_row(stack.engine, sid))
    assert len(sessions_of(stack.engine, account.user.id)) == 1
    assert dial_count(stack.engine, sid) == 1
