"""Twilio end to end on the dev server: the real `twilio` client of the worker dials the local
Twilio-compatible server, and signed status callbacks (computed with the package's
RequestValidator and a per-test fake token) reach the API's webhook, which moves the session
through its lifecycle. Every test counts the calls the server created."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from contracts.search_attributes import SA_CALL_STATUS
from tests.fakes.twilio_server import FakeTwilio, Fault
from tests.support.accounts import Account, make_account
from tests.support.rows import events_of, stored_row, table_counts, terminal_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.twilio import PUBLIC, callback_url, post_callback, status_params, twilio_settings
from tests.support.waiting import wait_until
from workflows.create_call import CreateCallWorkflow

WEBHOOK = "/telephony/twilio/status"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


async def dialed(stack: Stack, account: Account, number: str = "+12025550100") -> dict[str, Any]:
    resp = await create_call(stack, account.headers, number, wait="dialed")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_twilio_success_one_call_and_a_full_signed_lifecycle(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)  # its line's label says "simulated"
        body = await dialed(stack, account)
        assert body["status"] == "success", body
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        assert leg in fake.calls and fake.created == 1
        url = callback_url(fake, sid)
        assert url.startswith(f"{PUBLIC}{WEBHOOK}?call_session_id={sid}&attempt={sid}.1")

        for status in ("initiated", "ringing", "in-progress"):
            resp = await post_callback(stack, fake, url, status_params(leg, status))
            assert resp.status_code == 204, resp.text
        await wait_until(lambda: stored_row(stack.engine, sid).call_status == "answered")
        resp = await post_callback(
            stack, fake, url, status_params(leg, "completed", CallDuration="43")
        )
        assert resp.status_code == 204

        handle = stack.client.get_workflow_handle_for(CreateCallWorkflow.run, sid)
        result = await handle.result()
        assert result.call_status == "completed" and result.duration_seconds == 43
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(SA_CALL_STATUS) == "completed"
        row = stored_row(stack.engine, sid)
        assert row.call_status == "completed" and row.duration_seconds == 43
        assert row.answered_at is not None and row.ended_at is not None
        analytics = await stack.http.get(
            "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
        )
        detail = analytics.json()
        assert detail["call_status"] == "completed" and detail["duration_seconds"] == 43
        statuses = [e["detail"]["status"] for e in detail["events"] if e["type"] == "call_status"]
        assert statuses == ["initiated", "ringing", "answered", "completed"]
        # History stays small: one call is far below a few hundred events.
        history = await handle.fetch_history()
        assert len(history.events) < 120, len(history.events)
        assert fake.created == 1


async def test_twilio_permanent_code_fails_with_the_provider_code(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        fake.inject(Fault("error", status=400, code=21214, message="To number not reachable"))
        body = await dialed(stack, account)
        assert body["status"] == "failed"
        assert body["failure_code"] == "provider_rejected"
        row = stored_row(stack.engine, body["call_session_id"])
        assert row.provider_error_code == "21214" and row.attempts == 1
        assert fake.created == 0


# Twilio's own words for 21210, with its name and its link.
UNVERIFIED = (
    "The source phone number provided, +12025550199, is not yet verified for your account. "
    "You may only make calls from phone numbers that you've verified or purchased from "
    "Twilio. See https://www.twilio.com/docs/errors/21210"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("case", ["rejected", "timed-out", "5xx", "refused"])
async def test_no_public_answer_names_the_vendor(
    stack_factory: StackFactory, fake: FakeTwilio, case: str
) -> None:
    overrides: dict[str, Any] = {}
    if case == "refused":  # nothing listens: every attempt is refused, the call fails
        overrides = {"twilio_api_base_url": f"http://127.0.0.1:{closed_port()}"}
        overrides["dial_max_attempts"] = 2
    async with stack_factory(**twilio_settings(fake, **overrides)) as stack:
        account = make_account(stack.engine)
        if case == "rejected":
            fake.inject(Fault("error", status=400, code=21210, message=UNVERIFIED))
        elif case == "timed-out":  # placed, the answer comes too late: reconciled
            fake.inject(Fault("timeout_after_create", delay=1.5))
        elif case == "5xx":
            fake.inject(Fault("error_after_create", status=500, code=20500, message="Twilio 500"))
        answer = await dialed(stack, account)
        sid = answer["call_session_id"]
        await wait_until(terminal_row(stack.engine, sid))
        detail = await analytics(stack, account, sid)
        page = await stack.http.get("/api/v1/call-analytics", headers=account.headers)
        assert page.status_code == 200
        for public in (answer, detail, page.json()):
            assert "twilio" not in json.dumps(public).lower(), public

        events = detail["events"]
        if case == "rejected":
            assert (answer["status"], answer["failure_code"]) == ("failed", "provider_rejected")
            assert answer["failure_reason"] == "the carrier refused the request"
            assert detail["provider_error_code"] == "21210"
            # Twilio's text stays for whoever reads the timeline, without Twilio's name.
            (outcome,) = [e["detail"] for e in events if e["type"] == "failed"]
            assert "is not yet verified for your account" in outcome["provider_message"]
            assert outcome["provider_message"].endswith("purchased from the carrier. See")
        elif case == "refused":
            assert (answer["status"], answer["failure_code"]) == ("failed", "retries_exhausted")
            assert answer["failure_reason"] == (
                "gave up after 2 attempts: could not connect to the carrier"
            )
            attempts = [e["detail"] for e in events if e["type"] == "dial_attempt"]
            assert [a["provider_message"] for a in attempts] == ["ConnectionError"] * 2
            assert fake.created == 0
        else:
            assert answer["status"] == "success" and fake.created == 1
            (lost, found) = [e["detail"] for e in events if e["type"] == "dial_attempt"]
            assert (lost["result"], found["result"]) == ("ambiguous", "reconciled_found")
            if case == "timed-out":
                assert lost["detail"] == "the carrier did not answer in time"
                assert lost["provider_message"] == "ReadTimeout"
            else:
                assert lost["detail"] == "the carrier answered with an error (HTTP 500)"
                assert lost["provider_message"].endswith("the carrier 500")
                assert lost["provider_error_code"] == "20500"


async def test_twilio_20429_then_success(stack_factory: StackFactory, fake: FakeTwilio) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        fake.inject(Fault("error", status=429, code=20429, message="Too Many Requests"))
        body = await dialed(stack, account)
        assert body["status"] == "success", body
        row = stored_row(stack.engine, body["call_session_id"])
        assert row.attempts == 2
        assert fake.created == 1
        # The second attempt carries its own tag.
        assert f"attempt={row.id}.2" in callback_url(fake, str(row.id))


@pytest.mark.parametrize(
    "fault",
    [
        Fault("error_after_create", status=500, code=20500, message="Internal Server Error"),
        Fault("timeout_after_create", delay=1.5),
    ],
    ids=["5xx-after-create", "lost-response"],
)
async def test_twilio_ambiguous_answer_is_reconciled_to_the_one_call(
    stack_factory: StackFactory, fake: FakeTwilio, fault: Fault
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        fake.inject(fault)
        body = await dialed(stack, account)
        assert body["status"] == "success", body
        (call,) = fake.calls_for(body["call_session_id"])
        assert body["telephony_leg_id"] == call.sid
        assert fake.created == 1  # exactly one call at the server
        results = [
            (e.type, e.detail)
            for e in events_of(stack.engine, body["call_session_id"])
            if e.type == "dial_attempt"
        ]
        assert [r[0] for r in results] == ["dial_attempt", "dial_attempt"]
        details = [detail or "" for _, detail in results]
        assert '"ambiguous"' in details[0] and '"reconciled_found"' in details[1]


async def test_a_lookup_whose_page_fails_is_asked_again_never_dialed_again(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        # The dial's answer is lost, and the first lookup fails while paging the call list.
        fake.inject(Fault("timeout_after_create", delay=1.5))
        fake.failing_pages = 1
        body = await dialed(stack, account)
        assert body["status"] == "success", body
        (call,) = fake.calls_for(body["call_session_id"])
        assert body["telephony_leg_id"] == call.sid
        assert fake.created == 1
        assert fake.failing_pages == 0  # the failed page was asked for, and then asked again
        results = [
            json.loads(e.detail or "{}")["result"]
            for e in events_of(stack.engine, body["call_session_id"])
            if e.type == "dial_attempt"
        ]
        assert results == ["ambiguous", "reconciled_found"]


async def test_forged_or_unsigned_callbacks_get_403_and_change_nothing(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        body = await dialed(stack, account)
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        url = callback_url(fake, sid)
        before = table_counts(stack.engine)
        params = status_params(leg, "completed", CallDuration="5")

        forged = await post_callback(stack, fake, url, params, token="f" * 32)
        unsigned = await stack.http.post(
            urlsplit(url).path + "?" + urlsplit(url).query, data=params
        )
        # A valid signature of other parameters does not cover these ones.
        signature = RequestValidator(fake.auth_token).compute_signature(
            url, status_params(leg, "ringing")
        )
        tampered = await post_callback(stack, fake, url, params, signature=signature)
        # Nor does a valid signature of another URL (another session).
        other = url.replace(sid, str(uuid.uuid4()))
        moved = await post_callback(
            stack,
            fake,
            url,
            params,
            signature=RequestValidator(fake.auth_token).compute_signature(other, params),
        )

        for resp in (forged, unsigned, tampered, moved):
            assert resp.status_code == 403, resp.text
        assert table_counts(stack.engine) == before
        row = stored_row(stack.engine, sid)
        assert row.call_status is None
        desc = await stack.client.get_workflow_handle(sid).describe()
        assert desc.close_time is None  # still following the call


async def test_replayed_and_out_of_order_callbacks_leave_the_right_final_state(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        body = await dialed(stack, account, "+12025550101")
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        url = callback_url(fake, sid)

        ringing = status_params(leg, "ringing")
        busy = status_params(leg, "busy")
        token = {"I-Twilio-Idempotency-Token": "tok-ringing"}
        assert (await post_callback(stack, fake, url, ringing, headers=token)).status_code == 204
        assert (await post_callback(stack, fake, url, ringing, headers=token)).status_code == 204
        assert (await post_callback(stack, fake, url, busy)).status_code == 204
        # Late and repeated: initiated after the final status, busy again, and a stray
        # completed from the provider's retry queue.
        for late in (status_params(leg, "initiated"), busy, busy):
            assert (await post_callback(stack, fake, url, late)).status_code == 204

        result = await stack.client.get_workflow_handle_for(CreateCallWorkflow.run, sid).result()
        assert result.call_status == "busy"
        for late in (status_params(leg, "in-progress"), status_params(leg, "completed")):
            assert (await post_callback(stack, fake, url, late)).status_code == 204
        row = stored_row(stack.engine, sid)
        assert row.call_status == "busy" and row.answered_at is None
        statuses = [e.detail or "" for e in events_of(stack.engine, sid) if e.type == "call_status"]
        assert sum('"busy"' in d for d in statuses) == 1  # absorbed duplicates
        assert sum('"ringing"' in d for d in statuses) == 1


async def analytics(stack: Stack, account: Account, sid: str) -> dict[str, Any]:
    resp = await stack.http.get(
        "/api/v1/call-analytics", params={"call_session_id": sid}, headers=account.headers
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_a_provider_time_before_the_call_existed_is_not_stored(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        body = await dialed(stack, account)
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        url = callback_url(fake, sid)
        created = stored_row(stack.engine, sid).created_at
        # A signed callback whose clock says the call ended a day before it was created.
        stale = format_datetime(created - timedelta(days=1), usegmt=True)
        params = {**status_params(leg, "completed", CallDuration="12"), "Timestamp": stale}
        assert (await post_callback(stack, fake, url, params)).status_code == 204
        result = await stack.client.get_workflow_handle_for(CreateCallWorkflow.run, sid).result()
        assert result.call_status == "completed"

        detail = await analytics(stack, account, sid)
        assert detail["call_status"] == "completed" and detail["duration_seconds"] == 12
        ended = datetime.fromisoformat(detail["ended_at"])
        assert ended >= datetime.fromisoformat(detail["created_at"])
        (note,) = [e["detail"] for e in detail["events"] if e["type"] == "provider_time_ignored"]
        assert note["status"] == "completed"
        assert datetime.fromisoformat(note["reported_at"]) == created.replace(
            microsecond=0
        ) - timedelta(days=1)
        assert "before the call was created" in note["reason"]


async def test_a_callback_about_another_call_sid_is_ignored_running_or_closed(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        body = await dialed(stack, account)
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        url = callback_url(fake, sid)
        other = "CA" + "e" * 32
        # While the workflow runs: signed, for this session, about another call.
        ringing = status_params(other, "ringing")
        assert (await post_callback(stack, fake, url, ringing)).status_code == 204
        done = status_params(leg, "completed", CallDuration="20")
        assert (await post_callback(stack, fake, url, done)).status_code == 204
        result = await stack.client.get_workflow_handle_for(CreateCallWorkflow.run, sid).result()
        assert result.call_status == "completed"
        before = await analytics(stack, account, sid)
        assert [e["detail"]["status"] for e in before["events"] if e["type"] == "call_status"] == [
            "completed"
        ]

        # The workflow has closed: the webhook writes to the session itself, and must ignore
        # the other call as the workflow did.
        for status in ("ringing", "in-progress", "no-answer"):
            resp = await post_callback(stack, fake, url, status_params(other, status))
            assert resp.status_code == 204
        after = await analytics(stack, account, sid)
        assert after == before
        assert fake.created == 1


async def test_signature_behind_a_proxy_uses_the_forwarded_url(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    # Twilio called https://dialer.example.test; the proxy forwards to us over plain HTTP.
    async with stack_factory(**twilio_settings(fake, public_base_url=None)) as stack:
        account = make_account(stack.engine)
        body = await dialed(stack, account)
        sid, leg = body["call_session_id"], body["telephony_leg_id"]
        # Without a public URL the provider asks for no callbacks; sign what Twilio would.
        public = f"https://proxy.example.test{WEBHOOK}?call_session_id={sid}&attempt={sid}.1"
        params = status_params(leg, "ringing")
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example.test"}
        ok = await post_callback(stack, fake, public, params, headers=forwarded)
        assert ok.status_code == 204, ok.text
        wrong_host = {**forwarded, "X-Forwarded-Host": "elsewhere.example.test"}
        bad = await post_callback(stack, fake, public, params, headers=wrong_host)
        assert bad.status_code == 403
        await wait_until(lambda: stored_row(stack.engine, sid).call_status == "ringing")


async def test_twilio_calls_end_by_polling_when_callbacks_never_come(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(
        **twilio_settings(fake, call_status_poll_seconds=0.3, call_status_poll_max_seconds=0.6)
    ) as stack:
        account = make_account(stack.engine)
        outcomes = {"completed": 12, "busy": None, "no-answer": None}
        sessions = {}
        for status in outcomes:
            body = await dialed(stack, account)
            sessions[status] = body
        for status, body in sessions.items():
            fake.set_status(body["telephony_leg_id"], status, duration=outcomes[status])
        for status, body in sessions.items():
            result = await stack.client.get_workflow_handle_for(
                CreateCallWorkflow.run, body["call_session_id"]
            ).result()
            assert result.call_status == status
            row = stored_row(stack.engine, body["call_session_id"])
            assert row.call_status == status and row.ended_at is not None
            assert row.duration_seconds == outcomes[status]
        assert fake.created == 3
