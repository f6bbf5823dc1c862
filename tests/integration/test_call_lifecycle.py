"""Following each call to its end with the simulated carrier, on the dev server with SQLite and
PostgreSQL: the magic numbers end completed / busy / no-answer in call-analytics and in the
workflow's search attribute, through the callbacks or, with callbacks dropped, by polling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from contracts.search_attributes import SA_CALL_STATUS
from store.models import CallSession
from tests.support.accounts import Account, make_account
from tests.support.rows import events_of, session_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.waiting import wait_until
from workflows.create_call import CreateCallWorkflow

FINAL = {
    "+12025550100": "completed",
    "+12025550101": "busy",
    "+12025550102": "no-answer",
}
# Statuses each call passes through, in order, in the timeline.
PATH = {
    "+12025550100": ["initiated", "ringing", "answered", "completed"],
    "+12025550101": ["initiated", "ringing", "busy"],
    "+12025550102": ["initiated", "ringing", "no-answer"],
}


async def _followed_to_the_end(stack: Stack, account: Account, number: str) -> dict[str, Any]:
    resp = await create_call(stack, account.headers, number, wait="dialed")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # The update answers at "dialed", long before the call ends.
    assert body["status"] == "success" and body["telephony_leg_id"]
    sid = body["call_session_id"]

    async def final() -> dict[str, Any] | None:
        r = await stack.http.get(
            "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
        )
        detail: dict[str, Any] = r.json()
        return detail if detail["call_status"] in FINAL.values() else None

    detail: dict[str, Any] = await wait_until(final, timeout=30)
    handle = stack.client.get_workflow_handle_for(CreateCallWorkflow.run, sid)
    result = await handle.result()
    assert result.call_status == detail["call_status"]
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert desc.typed_search_attributes.get(SA_CALL_STATUS) == detail["call_status"]
    return detail


@pytest.mark.parametrize("number", list(FINAL))
async def test_simulated_calls_end_in_their_final_status(stack: Stack, number: str) -> None:
    account = make_account(stack.engine)
    detail = await _followed_to_the_end(stack, account, number)

    assert detail["status"] == "success"
    assert detail["call_status"] == FINAL[number]
    assert detail["ended_at"] is not None
    statuses = [e["detail"]["status"] for e in detail["events"] if e["type"] == "call_status"]
    assert statuses == PATH[number]
    for event in detail["events"]:
        if event["type"] == "call_status":
            assert event["detail"]["at"], event
    if number == "+12025550100":
        assert detail["answered_at"] is not None
        assert detail["duration_seconds"] == 0  # the tests' simulated talk lasts 0.1 s
        assert detail["answered_at"] <= detail["ended_at"]
    else:
        assert detail["answered_at"] is None
        assert detail["duration_seconds"] is None


async def test_with_callbacks_dropped_every_call_ends_by_polling(
    stack_factory: StackFactory,
) -> None:
    async with stack_factory(
        simulated_callbacks=False, call_status_poll_seconds=0.3, call_status_poll_max_seconds=0.6
    ) as stack:
        account = make_account(stack.engine)
        sids = {}
        for number in FINAL:
            resp = await create_call(stack, account.headers, number, wait="dialed")
            assert resp.json()["telephony_leg_id"], resp.text
            sids[number] = resp.json()["call_session_id"]

        for number, sid in sids.items():

            def ended(sid: str = sid) -> CallSession | None:
                r = session_row(stack.engine, sid)
                return r if r and r.ended_at else None

            row = await wait_until(ended, timeout=30)
            assert row.call_status == FINAL[number]
            sources = {
                e.detail and json.loads(e.detail)["source"]
                for e in events_of(stack.engine, sid)
                if e.type == "call_status"
            }
            assert sources == {"poll"}, sources  # no callback was sent
            result = await stack.client.get_workflow_handle_for(
                CreateCallWorkflow.run, sid
            ).result()
            assert result.call_status == FINAL[number]
