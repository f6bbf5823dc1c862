"""The lifecycle vocabulary (contracts.lifecycle) and its writer (store.lifecycle), on SQLite and
PostgreSQL: a status moves the session only forward, a final one is final, each status lands in
the timeline once, an impossible provider time is not stored (with a note saying so), and reports
about another leg than the session's are ignored."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.calls import (
    CallStatusUpdate,
    CreateCallInput,
    RecordCallStatusInput,
    ValidationResult,
)
from contracts.lifecycle import advances, is_final, normalize_status
from store import crud, lifecycle
from store.calls import new_session_row
from store.db import session_scope
from store.models import CallEvent, CallSession


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("queued", "initiated"),
        ("initiated", "initiated"),
        ("Ringing", "ringing"),
        ("in-progress", "answered"),
        ("answered", "answered"),
        ("completed", "completed"),
        ("no-answer", "no-answer"),
        ("paused", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_status(raw: str | None, expected: str | None) -> None:
    assert normalize_status(raw) == expected


def test_only_forward_and_final_is_final() -> None:
    assert advances(None, "initiated") and advances("ringing", "answered")
    assert not advances("answered", "ringing") and not advances("ringing", "ringing")
    assert advances("answered", "busy")  # a final status ends any live one
    for final in ("completed", "busy", "no-answer", "canceled", "failed"):
        assert is_final(final)
        assert not advances(final, "completed") and not advances(final, "failed")


def _session(engine: Engine) -> str:
    user = crud.create_user(engine=engine, email=f"u{uuid.uuid4().hex[:8]}@example.test")
    call = CreateCallInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=str(user.id),
        phone_number="+12025550100",
        request_hash="h" * 64,
    )
    validation = ValidationResult(ok=True, target_number="+12025550100")
    with session_scope(engine) as session:
        session.add(new_session_row(call, validation))
    return call.call_session_id


def _record(engine: Engine, sid: str, *updates: CallStatusUpdate) -> str | None:
    return lifecycle.record_call_status(
        engine, RecordCallStatusInput(call_session_id=sid, updates=list(updates))
    )


def test_statuses_move_forward_and_land_once(engine: Engine) -> None:
    sid = _session(engine)
    # The provider's time of the answer, after the session was created (an earlier one is
    # ignored: test_impossible_provider_times_are_ignored_with_a_note).
    answered_time = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    answered = answered_time.isoformat()
    assert _record(engine, sid, CallStatusUpdate(status="ringing")) == "ringing"
    assert _record(engine, sid, CallStatusUpdate(status="in-progress", occurred_at=answered))
    # Late, repeated, then final, then a stray status after the end.
    assert _record(engine, sid, CallStatusUpdate(status="ringing")) == "answered"
    assert (
        _record(engine, sid, CallStatusUpdate(status="completed", duration_seconds=43))
        == "completed"
    )
    assert _record(engine, sid, CallStatusUpdate(status="busy")) == "completed"
    assert _record(engine, sid, CallStatusUpdate(status="bogus")) == "completed"

    with Session(engine) as session:
        row = session.get(CallSession, uuid.UUID(sid))
        assert row is not None
        assert row.call_status == "completed" and row.duration_seconds == 43
        assert row.answered_at == answered_time
        assert row.ended_at is not None
        keys = session.exec(
            select(CallEvent.key).where(CallEvent.session_id == uuid.UUID(sid))
        ).all()
    # Each status once, the late busy too (it happened), nothing for an unknown status.
    assert sorted(keys) == ["call:answered", "call:busy", "call:completed", "call:ringing"]


def test_giving_up_is_recorded_only_for_a_live_call(engine: Engine) -> None:
    sid = _session(engine)
    _record(engine, sid, CallStatusUpdate(status="ringing"))
    lifecycle.record_call_status(
        engine, RecordCallStatusInput(call_session_id=sid, gave_up_after_seconds=7200)
    )
    with Session(engine) as session:
        types = session.exec(
            select(CallEvent.type).where(CallEvent.session_id == uuid.UUID(sid))
        ).all()
    assert "call_follow_expired" in types


def _row(engine: Engine, sid: str) -> CallSession:
    with Session(engine) as session:
        row = session.get(CallSession, uuid.UUID(sid))
        assert row is not None
        return row


def _timeline(engine: Engine, sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    with Session(engine) as session:
        events = session.exec(
            select(CallEvent)
            .where(CallEvent.session_id == uuid.UUID(sid))
            .order_by(col(CallEvent.id))
        ).all()
    return [(e.key, e.type, json.loads(e.detail) if e.detail else {}) for e in events]


def test_impossible_provider_times_are_ignored_with_a_note(engine: Engine) -> None:
    sid = _session(engine)
    created = _row(engine, sid).created_at
    # Answered a day before the session existed; then ended after its creation but before the
    # (recorded) answer: neither time is possible, neither is stored as it came.
    before_creation = (created - timedelta(days=1)).isoformat()
    _record(engine, sid, CallStatusUpdate(status="in-progress", occurred_at=before_creation))
    answered_at = _row(engine, sid).answered_at
    assert answered_at is not None and answered_at >= created
    before_answer = (answered_at - timedelta(seconds=30)).isoformat()
    _record(engine, sid, CallStatusUpdate(status="completed", occurred_at=before_answer))
    # The same reports again (a retried activity, a repeated callback): nothing new.
    _record(engine, sid, CallStatusUpdate(status="in-progress", occurred_at=before_creation))
    _record(engine, sid, CallStatusUpdate(status="completed", occurred_at=before_answer))

    row = _row(engine, sid)
    assert row.call_status == "completed"
    assert row.answered_at == answered_at
    assert row.ended_at is not None and created <= answered_at <= row.ended_at
    timeline = _timeline(engine, sid)
    notes = {key: detail for key, type_, detail in timeline if type_ == "provider_time_ignored"}
    assert notes == {
        "time_ignored:answered": {
            "status": "answered",
            "reported_at": before_creation,
            "reason": "the provider's time is before the call was created",
            "used": "the time the report was recorded",
        },
        "time_ignored:completed": {
            "status": "completed",
            "reported_at": before_answer,
            "reason": "the provider's time is before the call was answered",
            "used": "the time the report was recorded",
        },
    }
    # The statuses themselves are kept, without the impossible time.
    statuses = {key: detail for key, type_, detail in timeline if type_ == "call_status"}
    assert set(statuses) == {"call:answered", "call:completed"}
    assert all("at" not in detail for detail in statuses.values())


def test_provider_times_in_whole_seconds_are_not_impossible(engine: Engine) -> None:
    # A provider's time rounded down to the second may fall just before our own microsecond
    # creation time: it is taken as the creation time, without a note.
    sid = _session(engine)
    created = _row(engine, sid).created_at
    rounded = (created - timedelta(microseconds=1)).replace(microsecond=0)
    ended = created + timedelta(seconds=7)
    _record(engine, sid, CallStatusUpdate(status="in-progress", occurred_at=rounded.isoformat()))
    _record(engine, sid, CallStatusUpdate(status="completed", occurred_at=ended.isoformat()))
    row = _row(engine, sid)
    assert (row.answered_at, row.ended_at) == (created, ended)
    assert all(type_ != "provider_time_ignored" for _, type_, _ in _timeline(engine, sid))


def test_reports_about_another_leg_are_ignored_once_the_leg_is_known(engine: Engine) -> None:
    sid = _session(engine)
    with session_scope(engine) as session:
        row = session.get(CallSession, uuid.UUID(sid))
        assert row is not None
        row.telephony_leg_id = "CA" + "1" * 32
    other = "CA" + "2" * 32
    assert _record(engine, sid, CallStatusUpdate(status="ringing", telephony_leg_id=other)) is None
    assert (
        _record(
            engine,
            sid,
            CallStatusUpdate(status="completed", telephony_leg_id=other, duration_seconds=9),
        )
        is None
    )
    assert _timeline(engine, sid) == []
    row = _row(engine, sid)
    assert (row.call_status, row.ended_at, row.duration_seconds) == (None, None, None)
    # Its own leg, and a report that names no leg, still count.
    own = CallStatusUpdate(status="ringing", telephony_leg_id="CA" + "1" * 32)
    assert _record(engine, sid, own) == "ringing"
    assert _record(engine, sid, CallStatusUpdate(status="in-progress")) == "answered"


def test_unknown_session_raises(engine: Engine) -> None:
    with pytest.raises(LookupError):
        _record(engine, str(uuid.uuid4()), CallStatusUpdate(status="ringing"))
