"""Provider callbacks that must change nothing: forged (no signature, a wrong key, a tampered
body, another URL), replayed (the same signed callback again) and stale (a status behind the
one the call already has)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment
from twilio.request_validator import RequestValidator

from contracts.calls import (
    CreateCallInput,
    PersistSessionInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from store import calls as store_calls
from store.lifecycle import record_outcome_and_statuses
from store.models import CallEvent, CallSession
from telephony.twilio import STATUS_CALLBACK_PATH
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import Stack, open_stack

TOKEN = "twilio-token-for-tests-only-0123456789abcdef"
PUBLIC = "https://dialer.example.test"


@pytest.fixture
async def hook(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    settings = settings_for(tmp_path, database_url, twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    async with open_stack(settings, engine, dev_env.client, workers=False) as stack:
        yield stack


def dialed_session(engine: Engine) -> tuple[str, str]:
    """A session whose call was placed (no workflow runs for it: callbacks are written to the
    row directly, so every change below is the callback's own doing)."""
    account = make_account(engine)
    sid = str(uuid.uuid4())
    call = CreateCallInput(
        call_session_id=sid,
        request_id=str(uuid.uuid4()),
        user_id=str(account.user.id),
        phone_number="+12025550100",
        request_hash="h",
    )
    validation = ValidationResult(ok=True, target_number="+12025550100", provider="twilio")
    store_calls.persist_session(engine, PersistSessionInput(call=call, validation=validation))
    leg = "CA" + uuid.uuid4().hex
    record_outcome_and_statuses(
        engine,
        RecordOutcomeInput(
            call_session_id=sid, status=SessionStatus.SUCCESS, attempts=1, telephony_leg_id=leg
        ),
    )
    return sid, leg


def snapshot(engine: Engine, sid: str) -> tuple[Any, ...]:
    with Session(engine) as session:
        row = session.get(CallSession, uuid.UUID(sid))
        assert row is not None
        events = session.exec(
            select(CallEvent.key).where(CallEvent.session_id == row.id).order_by(col(CallEvent.id))
        ).all()
        return (row.status, row.call_status, row.ended_at, row.duration_seconds, tuple(events))


async def post(
    stack: Stack,
    sid: str,
    params: dict[str, str],
    *,
    token: str = TOKEN,
    signed_params: dict[str, str] | None = None,
    signed_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    path = f"{STATUS_CALLBACK_PATH}?call_session_id={sid}&attempt={sid}.1"
    signature = RequestValidator(token).compute_signature(
        signed_url or PUBLIC + path, signed_params or params
    )
    resp = await stack.http.post(
        path,
        data=params,
        headers={"X-Twilio-Signature": signature, **(headers or {})},
    )
    return resp.status_code


def status(leg: str, value: str, **more: str) -> dict[str, str]:
    return {"CallSid": leg, "CallStatus": value, **more}


async def test_forged_callbacks_change_nothing(hook: Stack) -> None:
    sid, leg = dialed_session(hook.engine)
    before = snapshot(hook.engine, sid)
    completed = status(leg, "completed", CallDuration="42")
    path = f"{STATUS_CALLBACK_PATH}?call_session_id={sid}&attempt={sid}.1"

    unsigned = await hook.http.post(path, data=completed)
    assert unsigned.status_code == 403
    assert await post(hook, sid, completed, token="another-account-token-0123456789") == 403
    # Signed for "ringing", sent as "completed": the body was tampered with.
    assert await post(hook, sid, completed, signed_params=status(leg, "ringing")) == 403
    # Signed for another session's URL, replayed against this one.
    other = f"{PUBLIC}{STATUS_CALLBACK_PATH}?call_session_id={uuid.uuid4()}&attempt=x.1"
    assert await post(hook, sid, completed, signed_url=other) == 403
    # Signed for another host (a proxy can't make us trust an arbitrary Host).
    assert await post(hook, sid, completed, signed_url="https://evil.example.test" + path) == 403
    assert snapshot(hook.engine, sid) == before


async def test_replayed_callback_changes_nothing(hook: Stack) -> None:
    sid, leg = dialed_session(hook.engine)
    answered = status(leg, "in-progress")
    token = {"I-Twilio-Idempotency-Token": "tok-" + uuid.uuid4().hex}
    assert await post(hook, sid, answered, headers=token) == 204
    after_first = snapshot(hook.engine, sid)
    assert after_first[1] == "answered"
    for headers in (token, {"I-Twilio-Idempotency-Token": "tok-other"}, {}):
        assert await post(hook, sid, answered, headers=headers) == 204
        assert snapshot(hook.engine, sid) == after_first


async def test_stale_callbacks_never_move_a_call_backwards(hook: Stack) -> None:
    sid, leg = dialed_session(hook.engine)
    assert await post(hook, sid, status(leg, "ringing")) == 204
    assert await post(hook, sid, status(leg, "completed", CallDuration="42")) == 204
    final = snapshot(hook.engine, sid)
    assert final[1] == "completed" and final[3] == 42
    # Late and replayed reports: earlier statuses, and another final status.
    for late in ("ringing", "queued", "initiated", "in-progress", "busy", "no-answer"):
        assert await post(hook, sid, status(leg, late)) == 204
        current = snapshot(hook.engine, sid)
        assert current[:4] == final[:4], late
