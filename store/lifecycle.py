"""The call's lifecycle on the session row and its timeline.

One writer function, used by the workflow's local activity and by the webhook when the
workflow has already closed. It is idempotent and monotonic: a status is written to the
timeline once, and the session's `call_status` only ever moves forward (contracts.lifecycle).
Its times keep their order too: `created_at <= answered_at <= ended_at`, whatever a provider
reports; and once the session has a leg id, reports about any other leg are ignored."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from contracts.calls import (
    CallStatusUpdate,
    EndedReason,
    RecordCallStatusInput,
    RecordOutcomeInput,
)
from contracts.lifecycle import CallStatus, advances, ended_reason_for, is_final, normalize_status
from contracts.webhooks import EventType
from store import webhooks
from store.calls import add_events, write_outcome
from store.db import session_scope
from store.models import CallSession, utcnow

log = logging.getLogger(__name__)

# Provider times come in whole seconds (Twilio's callback Timestamp) and our own have
# microseconds: a time less than this before the bound is a rounding, not an impossibility.
PROVIDER_TIME_PRECISION = timedelta(seconds=1)


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


def record_outcome_and_statuses(engine: Engine, input: RecordOutcomeInput) -> bool:
    """The dial's outcome and the status reports that came with it, in one transaction.
    True when it wrote a customer's event (a webhook delivery) for the workflows to send."""
    with session_scope(engine) as session:
        # Held, so the statuses below find the row in the session instead of reading it again.
        row = write_outcome(session, input)
        if input.statuses:
            apply_call_statuses(session, input.call_session_id, input.statuses)
        del row
        return webhooks.deliveries_written(session) > 0


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
        if row.telephony_leg_id and update.telephony_leg_id not in (None, row.telephony_leg_id):
            # Another call than the one this session placed (a stray or misrouted callback):
            # the workflow ignores it while it runs, and so does this writer after it closed.
            log.info(
                "status report about another call leg ignored",
                extra={"call_session_id": call_session_id, "status": status},
            )
            continue
        checked = _checked_time(row, status, _parse(update.occurred_at))
        if checked.ignored is not None:
            events.append((f"time_ignored:{status}", "provider_time_ignored", checked.ignored))
        at = checked.at
        reason = _ended_reason(status, update) if is_final(status) else None
        if update.answered_by and update.answered_by != row.answered_by:
            # Answering-machine detection's verdict, which may come after the answer.
            row.answered_by = update.answered_by[:32]
            row.updated_at = utcnow()
            verdict = {"answered_by": update.answered_by, "source": update.source}
            events.append((f"answered_by:{update.answered_by}"[:64], "answered_by", verdict))
        if advances(row.call_status, status):
            row.call_status = status
            if status == CallStatus.ANSWERED:
                row.answered_at = at or checked.recorded
            if is_final(status):
                row.ended_at = at or checked.recorded
                if update.duration_seconds is not None:
                    row.duration_seconds = update.duration_seconds
                row.ended_reason = reason
            row.updated_at = utcnow()
            _customer_event(session, row, status, update, at or checked.recorded)
        # The timeline keeps every status once, even one that arrived too late to move
        # the call (it still happened, at its own time).
        detail = {
            "status": status,
            "at": at.isoformat() if at else None,
            "duration_seconds": update.duration_seconds,
            "answered_by": update.answered_by,
            "source": update.source,
            "telephony_leg_id": update.telephony_leg_id,
            "detail": update.detail,
            "ended_reason": reason,
        }
        events.append((f"call:{status}", "call_status", detail))
    if gave_up_after_seconds is not None and not is_final(row.call_status):
        row.ended_reason = EndedReason.EXPIRED
        detail = {"last_status": row.call_status, "after_seconds": round(gave_up_after_seconds)}
        events.append(("call:gave_up", "call_follow_expired", detail))
    session.add(row)
    add_events(session, sid, events)
    return row.call_status


def _ended_reason(status: CallStatus, update: CallStatusUpdate) -> str:
    """Why the call ended: the workflow's or the carrier's word, else the status's own."""
    try:
        return ended_reason_for(status, update.ended_reason)
    except ValueError:  # a reason this version does not know: the status says enough
        return ended_reason_for(status)


def _customer_event(
    session: Session, row: CallSession, status: CallStatus, update: CallStatusUpdate, at: datetime
) -> None:
    """The customer's webhook event for a status the call has just moved to, in this
    transaction (store/webhooks.py); `initiated` has none (call.dialed said it)."""
    if status == CallStatus.RINGING:
        webhooks.add_call_event(session, row, EventType.CALL_RINGING, at=at)
    elif status == CallStatus.ANSWERED:
        answered = {"answered_at": at.isoformat(), "answered_by": update.answered_by}
        webhooks.add_call_event(session, row, EventType.CALL_ANSWERED, answered, at=at)
    elif is_final(status):
        extra: dict[str, Any] = {
            "ended_at": at.isoformat(),
            "duration_seconds": row.duration_seconds,
            # The session's verdict: detection may have reported it before this status.
            "answered_by": row.answered_by,
        }
        webhooks.add_call_event(session, row, EventType.CALL_ENDED, extra, at=at)


@dataclass(frozen=True)
class _CheckedTime:
    at: datetime | None  # the provider's time, when it is possible; else None
    recorded: datetime  # the time to use instead: when the report was recorded, in order
    ignored: dict[str, Any] | None = None  # the timeline note about an impossible time


def _checked_time(row: CallSession, status: CallStatus, reported: datetime | None) -> _CheckedTime:
    """The time of a status report, kept in the session's order: nothing happens to a call
    before its session was created, and it cannot end before it was answered. A provider
    time before that bound (a clock that is wrong, a provider's bug) is ignored: the report is
    treated like one without a time (the session's field gets the time it was recorded, the
    timeline's status has no `at`), and a note keeps what was reported and why."""
    floor, after = row.created_at, "created"
    if is_final(status) and row.answered_at is not None and row.answered_at > floor:
        floor, after = row.answered_at, "answered"
    recorded = max(utcnow(), floor)
    if reported is None:
        return _CheckedTime(at=None, recorded=recorded)
    if reported >= floor - PROVIDER_TIME_PRECISION:
        return _CheckedTime(at=max(reported, floor), recorded=recorded)
    note = {
        "status": status,
        "reported_at": reported.isoformat(),
        "reason": f"the provider's time is before the call was {after}",
        "used": "the time the report was recorded",
    }
    return _CheckedTime(at=None, recorded=recorded, ignored=note)
