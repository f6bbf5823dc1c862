"""A call reaches its agent: create_call's variables and a CSV campaign's columns arrive in a
real WebSocket server's `start.customParameters`, through the API, the workflow, the dial
worker and the simulated carrier's media stream; the stream's end is in the timeline."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection

from tests.support.accounts import Account, make_account
from tests.support.media_agent import Agent, AgentCall, media_agent, unused_url
from tests.support.rows import terminal_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.waiting import wait_until

TO = "+12025550100"
CAMPAIGNS = "/api/v1/batch-call/create"


async def new_agent(stack: Stack, account: Account, url: str) -> str:
    resp = await stack.http.post(
        "/api/v1/agents",
        json={"name": "agent under test", "media_stream_url": url},
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    agent_id: str = resp.json()["id"]
    return agent_id


async def ended(stack: Stack, account: Account, sid: str) -> dict[str, Any]:
    """call-analytics of the call once it ended."""

    async def final() -> dict[str, Any] | None:
        resp = await stack.http.get(
            "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
        )
        body: dict[str, Any] = resp.json()
        return body if body["call_status"] == "completed" else None

    return await wait_until(final, timeout=30)


CALLBACKS_ONLY = {"call_status_poll_seconds": 30.0, "call_status_poll_max_seconds": 60.0}


def stream_end(call: dict[str, Any]) -> dict[str, Any]:
    (event,) = [
        e["detail"]
        for e in call["events"]
        if e["type"] == "call_status" and e["detail"]["status"] == "completed"
    ]
    return dict(event)


async def connections(agent: Agent, count: int) -> list[AgentCall]:
    async def done() -> list[AgentCall] | None:
        closed = [c for c in agent.calls if c.closed.is_set()]
        return closed if len(closed) >= count else None

    return await wait_until(done, timeout=30)


async def test_create_call_variables_arrive_in_the_agents_start_message(
    stack_factory: StackFactory,
) -> None:
    async with (
        media_agent() as agent,
        stack_factory(simulated_talk_seconds=0.3) as stack,
    ):
        account = make_account(stack.engine)
        agent_id = await new_agent(stack, account, agent.url + "?call={call_session_id}")
        resp = await create_call(
            stack,
            account.headers,
            TO,
            agent_id=agent_id,
            body={"variables": {"first_name": "Ada", "balance_due": 42.5, "vip": True}},
        )
        assert resp.status_code == 200, resp.text
        ids = resp.json()
        (call,) = await connections(agent, 1)
        detail = await ended(stack, account, ids["call_session_id"])

    assert call.path == f"/media?call={ids['call_session_id']}"  # the placeholder filled
    start = call.start
    assert start["customParameters"] == {
        "request_id": ids["request_id"],
        "call_session_id": ids["call_session_id"],
        "user_id": str(account.user.id),
        "agent_id": agent_id,
        "first_name": "Ada",
        "balance_due": "42.5",
        "vip": "true",
    }
    assert start["callSid"] == detail["telephony_leg_id"]
    assert call.events()[-1] == "stop"  # the callee hung up after the talk time
    end = stream_end(detail)
    assert end["detail"].startswith("the callee hung up")
    assert end["telephony_leg_id"] == detail["telephony_leg_id"]


async def test_csv_campaign_columns_arrive_as_the_agents_parameters(
    stack_factory: StackFactory,
) -> None:
    csv = (
        "phone_number,external_id,first_name,plan\n"
        "+12025550120,crm-1,Ada,gold\n"
        "+12025550121,crm-2,Grace,\n"
    )
    async with (
        media_agent() as agent,
        stack_factory(simulated_talk_seconds=0.2) as stack,
    ):
        account = make_account(stack.engine)
        agent_id = await new_agent(stack, account, agent.url)
        resp = await stack.http.post(
            CAMPAIGNS,
            data={
                "batch_name": "csv to the agent",
                "agent_id": agent_id,
                "variables": '{"plan": "basic"}',
                "options": '{"calls_per_second": 50}',
            },
            files={"file": ("r.csv", csv.encode(), "text/csv")},
            headers=account.headers,
        )
        assert resp.status_code == 201, resp.text
        campaign_id = resp.json()["campaign"]["id"]
        calls = await connections(agent, 2)

    received = sorted((c.start["customParameters"] for c in calls), key=lambda p: p["first_name"])
    for parameters in received:
        assert parameters["campaign_id"] == campaign_id
        assert parameters["agent_id"] == agent_id
        assert parameters["user_id"] == str(account.user.id)
        uuid.UUID(parameters["call_session_id"])
        assert "external_id" not in parameters  # the client's metadata, not the agent's
    assert [(p["first_name"], p["plan"]) for p in received] == [("Ada", "gold"), ("Grace", "basic")]


async def test_an_agent_that_hangs_up_ends_the_call_with_its_duration(
    stack_factory: StackFactory,
) -> None:
    async def hang_up(ws: ServerConnection, _: dict[str, Any]) -> None:
        await asyncio.sleep(1.1)
        await ws.close()

    async with (
        media_agent(hang_up) as agent,
        # The end and its reason come by callback; no poll may find the end first (it would
        # record it without the stream's reason).
        stack_factory(simulated_talk_seconds=30, **CALLBACKS_ONLY) as stack,
    ):
        account = make_account(stack.engine)
        agent_id = await new_agent(stack, account, agent.url)
        resp = await create_call(stack, account.headers, TO, agent_id=agent_id)
        sid = resp.json()["call_session_id"]
        detail = await ended(stack, account, sid)
        await wait_until(terminal_row(stack.engine, sid))

    assert detail["duration_seconds"] == 1  # not the 30 s the callee would have talked
    assert stream_end(detail)["detail"].startswith("the agent hung up")


async def test_an_unreachable_agent_ends_the_call_and_says_why(
    stack_factory: StackFactory,
) -> None:
    async with stack_factory(simulated_talk_seconds=30, **CALLBACKS_ONLY) as stack:
        account = make_account(stack.engine)
        agent_id = await new_agent(stack, account, unused_url())
        resp = await create_call(stack, account.headers, TO, agent_id=agent_id)
        sid = resp.json()["call_session_id"]
        detail = await ended(stack, account, sid)
        await wait_until(terminal_row(stack.engine, sid))

    assert detail["duration_seconds"] == 0
    assert stream_end(detail)["detail"] == (
        "the agent's media stream could not be reached: connection refused"
    )
