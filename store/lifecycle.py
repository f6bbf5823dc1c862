"""The call's lifecycle on the session row and its timeline.

One writer function, used by the workflow's local activity and by the webhook when the
workflow has already closed. It is idempotent and monotonic: a status is written to the
timeline once, and the session's `call_status` only ever moves forward (telephony.status)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from store.calls import add_event
from store.db import session_scope
from store.models import CallSession, utcnow
from telephony.status import ANSWERED, advances, is_final, normalize_status
from workflows.dto import RecordCallStatusInput


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
    sid = uuid.UUID(input.call_session_id)
    with session_scope(engine) as session:
        row = session.get(CallSession, sid)
        if row is None:
            raise LookupError(f"session {sid} does not exist")
        for update in input.updates:
            status = normalize_status(update.status)
            if status is None:
                continue
            at = _parse(update.occurred_at)
            if advances(row.call_status, status):
                row.call_status = status
                if status == ANSWERED:
                    row.answered_at = at or utcnow()
                if is_final(status):
                    row.ended_at = at or utcnow()
                    if update.duration_seconds is not None:
                        row.duration_seconds = update.duration_seconds
                row.updated_at = utcnow()
            # The timeline keeps every status once, even one that arrived too late to move
            # the call (it still happened, at its own time).
            add_event(
                session,
                sid,
                f"call:{status}",
                "call_status",
                status=status,
                at=at.isoformat() if at else None,
                duration_seconds=update.duration_seconds,
                answered_by=update.answered_by,
                source=update.source,
                telephony_leg_id=update.telephony_leg_id,
            )
        if input.gave_up_after_seconds is not None and not is_final(row.call_status):
            add_event(
                session,
                sid,
                "call:gave_up",
                "call_follow_expired",
                last_status=row.call_status,
                after_seconds=round(input.gave_up_after_seconds),
            )
        session.add(row)
        return row.call_status
