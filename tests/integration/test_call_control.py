"""Call control over HTTP on the dev server (issue 16), with both providers: a scheduled call
canceled never dials; a live call hung up is ended at the carrier (the simulated one sends
`stop` on its media stream, the Twilio-compatible server records the call update); max
duration; a machine's answer in each mode; 409 on a call already over; who asked, in the
timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.security import key_prefix
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.test_agent_stream import new_agent
from tests.support.accounts import Account, make_account
from tests.support.media_agent import media_agent
from tests.support.rows import dial_count, stored_row
from tests.support.stack import Stack, StackFactory, create_call, running_workers
from tests.support.twilio import callback_url, post_callback, status_params, twilio_settings
from tests.support.waiting import wait_until

TO = "+12025550100"
MACHINE = "+12025550108"
LATE_HUMAN = "+12025550109"
# A simulated call answered within half a second that would talk for a minute.
QUICK = dict(simulated_ring_seconds=0.2, simulated_answer_seconds=0.2)
LONG_TALK = dict(QUICK, simulated_talk_seconds=60.0)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


async def placed(
    stack: Stack, account: Account, number: str = TO, wait: str | None = None, **body: Any
) -> str:
    resp = await create_call(stack, account.headers, number, wait=wait, body=body or None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "success", resp.text
    sid: str = resp.json()["call_session_id"]
    return sid


async def control(stack: Stack, account: Account, sid: str, action: str) -> httpx.Response:
    return await stack.http.post(f"/api/v1/calls/{sid}/{action}", headers=account.headers)


async def analytics(stack: Stack, account: Account, sid: str) -> dict[str, Any]:
    resp = await stack.http.get(
        "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def ended(stack: Stack, account: Account, sid: str, timeout: float = 30) -> dict[str, Any]:
    """call-analytics of the call once it has its ended_reason (watched in the database: the
    API's request limit would refuse a poll this fast)."""
    await wait_until(lambda: stored_row(stack.engine, sid).ended_reason, timeout=timeout)
    return await analytics(stack, account, sid)


def asked_by(call: dict[str, Any], account: Account) -> list[str]:
    """Who asked for each control request in the timeline: the API key's prefix."""
    who = [e["detail"]["requested_by"] for e in call["events"] if e["type"] == "control_requested"]
    assert set(who) <= {f"api key {key_prefix(account.key)}"}, who
    return who


# --- the simulated carrier -------------------------------------------------------------------


async def test_a_canceled_scheduled_call_never_dials(stack_factory: StackFactory) -> None:
    async with stack_factory(**QUICK) as stack:
        account = make_account(stack.engine)
        at = datetime.now(UTC) + timedelta(seconds=4)
        sid = await placed(stack, account, scheduled_at=at.isoformat())
        call = await analytics(stack, account, sid)
        assert call["call_status"] == "scheduled" and call["scheduled_at"] is not None

        resp = await control(stack, account, sid, "cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["outcome"] == "canceled"
        again = await control(stack, account, sid, "cancel")  # idempotent
        assert again.status_code == 200 and again.json()["outcome"] == "canceled"

        await asyncio.sleep(max((at - datetime.now(UTC)).total_seconds(), 0) + 1.5)
        assert dial_count(stack.engine, sid) == 0
        call = await analytics(stack, account, sid)
        assert call["call_status"] == "canceled" and call["ended_reason"] == "canceled"
        assert call["failure_code"] == "canceled"
        assert len(asked_by(call, account)) == 1


async def test_latest_at_passed_with_every_dial_worker_down_never_dials(
    stack_factory: StackFactory,
) -> None:
    # The dial's schedule-to-start ends at latest_at: no attempt can start after it, and the
    # workflow then fails the call (the time-skipping server cannot show this: its clock
    # stands still while an activity task waits for a worker).
    async with (
        stack_factory(workers=False, **QUICK) as stack,
        running_workers(stack.client, stack.settings, stack.engine, dial=False),
    ):
        account = make_account(stack.engine)
        now = datetime.now(UTC)
        sid = await placed(
            stack,
            account,
            scheduled_at=(now + timedelta(seconds=1)).isoformat(),
            latest_at=(now + timedelta(seconds=3)).isoformat(),
        )
        call = await ended(stack, account, sid)
        assert call["failure_code"] == "latest_at_passed", call
        assert call["status"] == "failed" and call["ended_reason"] == "not_dialed"
        assert dial_count(stack.engine, sid) == 0


async def test_hangup_ends_a_live_call_and_its_stream_gets_stop(
    stack_factory: StackFactory,
) -> None:
    async with media_agent() as agent, stack_factory(**LONG_TALK) as stack:
        account = make_account(stack.engine)
        agent_id = await new_agent(stack, account, agent.url)
        resp = await create_call(stack, account.headers, TO, agent_id=agent_id)
        sid = resp.json()["call_session_id"]
        await wait_until(lambda: stored_row(stack.engine, sid).call_status == "answered")
        await asyncio.wait_for(agent.connected.wait(), 10)

        resp = await control(stack, account, sid, "hangup")
        assert resp.status_code == 200, resp.text
        assert resp.json()["outcome"] == "hangup_sent"
        stream = await agent.call()
        assert "stop" in stream.events()
        call = await ended(stack, account, sid)
        assert call["call_status"] == "completed" and call["ended_reason"] == "hangup_requested"
        kinds = [e["type"] for e in call["events"]]
        assert "control_requested" in kinds and "hangup_sent" in kinds
        assert len(asked_by(call, account)) == 1
        # A repeat answers as the first did; a cancel of the ended call too (it ended by
        # request). dial_count: the one call, never a second.
        again = await control(stack, account, sid, "hangup")
        assert again.status_code == 200 and again.json()["outcome"] == "hangup_sent"
        assert dial_count(stack.engine, sid) == 1


async def test_409_on_a_call_already_over(stack_factory: StackFactory) -> None:
    async with stack_factory(**QUICK, simulated_talk_seconds=0.2) as stack:
        account = make_account(stack.engine)
        sid = await placed(stack, account)
        call = await ended(stack, account, sid)
        assert call["ended_reason"] == "callee_hung_up"
        for action in ("hangup", "cancel"):
            resp = await control(stack, account, sid, action)
            assert resp.status_code == 409, resp.text
        assert asked_by(await analytics(stack, account, sid), account) == []


async def test_max_duration_is_enforced_by_the_workflow(stack_factory: StackFactory) -> None:
    async with stack_factory(**LONG_TALK) as stack:
        account = make_account(stack.engine)
        sid = await placed(stack, account, max_duration_seconds=2)
        call = await ended(stack, account, sid)
        assert call["ended_reason"] == "max_duration" and call["max_duration_seconds"] == 2
        assert call["call_status"] == "completed" and call["duration_seconds"] <= 4
        filtered = await stack.http.get(
            "/api/v1/call-analytics",
            params={"ended_reason": "max_duration"},
            headers=account.headers,
        )
        assert filtered.status_code == 200, filtered.text


@pytest.mark.parametrize(
    ("number", "mode", "message", "answered_by", "reason", "hung_up"),
    [
        (MACHINE, "detect", None, "machine_start", "voicemail", False),
        (MACHINE, "detect_and_hang_up", None, "machine_start", "voicemail", True),
        (
            MACHINE,
            "detect_and_leave_message",
            "Hi, Dialer here.",
            "machine_end_beep",
            "voicemail",
            True,
        ),
        (LATE_HUMAN, "detect_and_hang_up", None, "human", "callee_hung_up", False),
    ],
)
async def test_a_machine_answer_in_each_mode(
    stack_factory: StackFactory,
    number: str,
    mode: str,
    message: str | None,
    answered_by: str,
    reason: str,
    hung_up: bool,
) -> None:
    # The call talks 6 s unless the workflow hangs up: the verdict comes 1 s (a machine) or
    # 4 s (the late human) after the answer.
    async with stack_factory(**QUICK, simulated_talk_seconds=6.0) as stack:
        account = make_account(stack.engine)
        body: dict[str, Any] = {"machine_detection": mode}
        if message:
            body["voicemail_message"] = message
        sid = await placed(stack, account, number, **body)
        call = await ended(stack, account, sid)
        assert call["machine_detection"] == mode
        assert call["answered_by"] == answered_by and call["ended_reason"] == reason
        kinds = [e["type"] for e in call["events"]]
        assert ("hangup_sent" in kinds) == hung_up, kinds
        if hung_up:
            assert call["duration_seconds"] < 6
        listed = await stack.http.get(
            "/api/v1/call-analytics", params={"answered_by": answered_by}, headers=account.headers
        )
        assert listed.status_code == 200, listed.text


# --- Twilio ----------------------------------------------------------------------------------


async def test_twilio_gets_time_limit_and_async_amd_and_a_machine_is_hung_up(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        sid = await placed(
            stack,
            account,
            wait="dialed",
            max_duration_seconds=120,
            machine_detection="detect_and_hang_up",
        )
        (call,) = fake.calls_for(sid)
        url = callback_url(fake, sid)
        assert call.params["TimeLimit"] == ["120"]
        assert call.params["MachineDetection"] == ["Enable"] and call.params["AsyncAmd"] == ["true"]
        assert call.params["AsyncAmdStatusCallback"] == [url]
        assert fake.updates == []

        resp = await post_callback(stack, fake, url, status_params(call.sid, "in-progress"))
        assert resp.status_code == 204, resp.text
        await wait_until(lambda: stored_row(stack.engine, sid).call_status == "answered")
        # AsyncAmd's callback: the verdict, no CallStatus.
        amd = status_params(call.sid, "in-progress", AnsweredBy="machine_start")
        del amd["CallStatus"]
        resp = await post_callback(stack, fake, url, amd)
        assert resp.status_code == 204, resp.text
        await wait_until(lambda: bool(fake.updates))
        [(updated, form)] = fake.updates
        assert updated == call.sid and form["Status"] == ["completed"]
        resp = await post_callback(
            stack, fake, url, status_params(call.sid, "completed", CallDuration="3")
        )
        assert resp.status_code == 204
        row = await ended(stack, account, sid)
        assert row["answered_by"] == "machine_start" and row["ended_reason"] == "voicemail"
        assert fake.created == 1


async def test_twilio_hangup_by_request_and_a_voicemail_message(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        live = await placed(stack, account, wait="dialed")
        voicemail = await placed(
            stack,
            account,
            "+12025550110",
            wait="dialed",
            machine_detection="detect_and_leave_message",
            voicemail_message="Please call us back.",
        )
        (live_call,) = fake.calls_for(live)
        (vm_call,) = fake.calls_for(voicemail)
        assert "MachineDetection" not in live_call.params
        assert vm_call.params["MachineDetection"] == ["DetectMessageEnd"]
        live_url, vm_url = callback_url(fake, live), callback_url(fake, voicemail)
        for leg, url in ((live_call.sid, live_url), (vm_call.sid, vm_url)):
            await post_callback(stack, fake, url, status_params(leg, "in-progress"))
        await wait_until(
            lambda: all(
                stored_row(stack.engine, s).call_status == "answered" for s in (live, voicemail)
            )
        )

        resp = await control(stack, account, live, "hangup")
        assert resp.status_code == 200, resp.text
        amd = status_params(vm_call.sid, "in-progress", AnsweredBy="machine_end_beep")
        del amd["CallStatus"]
        await post_callback(stack, fake, vm_url, amd)
        await wait_until(lambda: len(fake.updates) == 2)
        forms = dict(fake.updates)
        assert forms[live_call.sid]["Status"] == ["completed"]
        twiml = forms[vm_call.sid]["Twiml"][0]
        assert "<Say>Please call us back.</Say>" in twiml and "<Hangup" in twiml
        for leg, url in ((live_call.sid, live_url), (vm_call.sid, vm_url)):
            await post_callback(stack, fake, url, status_params(leg, "completed", CallDuration="9"))
        assert (await ended(stack, account, live))["ended_reason"] == "hangup_requested"
        assert (await ended(stack, account, voicemail))["ended_reason"] == "voicemail"
        # Over: a new hang-up of the voicemail call is a 409 (it was not ended by request).
        resp = await control(stack, account, voicemail, "hangup")
        assert resp.status_code == 409, resp.text
