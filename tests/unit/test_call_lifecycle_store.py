"""The lifecycle vocabulary (contracts.lifecycle) and its writer (store.lifecycle), on SQLite and
PostgreSQL: a status moves the session only forward, a final one is final, each status lands in
the timeline once."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

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
    answered = "2026-11-27T10:00:05+00:00"
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
        assert row.answered_at is not None and row.answered_at.isoformat().startswith(
            "2026-11-27T10:00:05"
        )
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


def test_unknown_session_raises(engine: Engine) -> None:
    with pytest.raises(LookupError):
        _record(engine, str(uuid.uuid4()), CallStatusUpdate(status="ringing"))
