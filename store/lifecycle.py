"""The call's lifecycle on the session row and its timeline.

One writer function, used by the workflow's local activity and by the webhook when the
workflow has already closed. It is idempotent and monotonic: a status is written to the
timeline once, and the session's `call_status` only ever moves forward (contracts.lifecycle)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from contracts.calls import CallStatusUpdate, RecordCallStatusInput, RecordOutcomeInput
from contracts.lifecycle import CallStatus, advances, is_final, normalize_status
from store.calls import add_events, write_outcome
from store.db import session_scope
from store.models import CallSession, utcnow


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def record_call_status(engine: Engine, input: RecordCallStatusInput) -> str | None:
    """Apply status reports to the session; return its call_status afterwards.

    Raises LookupError when the session does not exist."""
    with session_scope(engine) as session:
        return apply_call_statuses(
            session, input.call_session_id, input.updates, input.gave_up_after_seconds
        )


def record_outcome_and_statuses(engine: Engine, input: RecordOutcomeInput) -> None:
    """The dial's outcome and the status reports that came with it, in one transaction."""
    with session_scope(engine) as session:
        write_outcome(session, input)
        if input.statuses:
            apply_call_statuses(session, input.call_session_id, input.statuses)


def apply_call_statuses(
    session: Session,
    call_session_id: str,
    updates: list[CallStatusUpdate],
    gave_up_after_seconds: float | None = None,
) -> str | None:
    """record_call_status in the caller's transaction."""
    sid = uuid.UUID(call_session_id)
    row = session.get(CallSession, sid)
    if row is None:
        raise LookupError(f"session {sid} does not exist")
    events: list[tuple[str, str, dict[str, Any]]] = []
    for update in updates:
        status = normalize_status(update.status)
        if status is None:
            continue
        at = _parse(update.occurred_at)
        if advances(row.call_status, status):
            row.call_status = status
            if status == CallStatus.ANSWERED:
                row.answered_at = at or utcnow()
            if is_final(status):
                row.ended_at = at or utcnow()
                if update.duration_seconds is not None:
                    row.duration_seconds = update.duration_seconds
            row.updated_at = utcnow()
        # The timeline keeps every status once, even one that arrived too late to move
        # the call (it still happened, at its own time).
        detail = {
            "status": status,
            "at": at.isoformat() if at else None,
            "duration_seconds": update.duration_seconds,
            "answered_by": update.answered_by,
            "source": update.source,
            "telephony_leg_id": update.telephony_leg_id,
        }
        events.append((f"call:{status}", "call_status", detail))
    if gave_up_after_seconds is not None and not is_final(row.call_status):
        detail = {"last_status": row.call_status, "after_seconds": round(gave_up_after_seconds)}
        events.append(("call:gave_up", "call_follow_expired", detail))
    session.add(row)
    add_events(session, sid, events)
    return row.call_status
