"""The call lifecycle's vocabulary, shared by providers, the webhook and the workflow.

Pure functions only (the workflow imports this module). Statuses are ranked so a late or
replayed report can never move a call backwards, and a final status is final."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.calls import EndedReason, StatusSource


class CallStatus(StrEnum):
    """Where a placed call is; completed, busy, no-answer, canceled and failed are final."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"
    FAILED = "failed"
    # Not a carrier status: a call waiting for its scheduled_at (never ranked, so no provider
    # report can be read as it, and every report moves the call on from it).
    SCHEDULED = "scheduled"


FINAL = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.CANCELED,
        CallStatus.FAILED,
    }
)
_RANK: dict[str, int] = {
    CallStatus.INITIATED: 1,
    CallStatus.RINGING: 2,
    CallStatus.ANSWERED: 3,
    **{s: 4 for s in FINAL},
}

# Twilio's CallStatus values (callbacks and the Call resource) in Dialer's vocabulary.
_ALIASES = {"queued": CallStatus.INITIATED, "in-progress": CallStatus.ANSWERED}


def normalize_status(raw: str | None) -> CallStatus | None:
    """Dialer's name for a provider status, or None for a value it does not know."""
    if not raw:
        return None
    value = raw.strip().lower()
    value = _ALIASES.get(value, value)
    return CallStatus(value) if value in _RANK else None


def rank(status: str | None) -> int:
    return _RANK.get(status or "", 0)


def is_final(status: str | None) -> bool:
    return status in FINAL


def advances(current: str | None, new: str) -> bool:
    """Whether `new` moves a call whose status is `current` forward."""
    return not is_final(current) and rank(new) > rank(current)


_ENDED_BY_STATUS = {
    CallStatus.COMPLETED: EndedReason.CALLEE_HUNG_UP,
    CallStatus.BUSY: EndedReason.BUSY,
    CallStatus.NO_ANSWER: EndedReason.NO_ANSWER,
    CallStatus.FAILED: EndedReason.FAILED,
    # A placed call the carrier reports canceled: someone ended it before it was answered.
    CallStatus.CANCELED: EndedReason.HANGUP_REQUESTED,
}


def ended_reason_for(status: str, known: str | None = None) -> EndedReason:
    """Why a call that reached the final `status` ended: `known` (what the workflow or the
    carrier knew better, e.g. agent_hung_up, max_duration) when given, else the status's
    own reason (completed: the callee hung up)."""
    if known:
        return EndedReason(known)
    return _ENDED_BY_STATUS.get(CallStatus(status), EndedReason.CALLEE_HUNG_UP)


@dataclass(frozen=True)
class StatusEvent:
    """One status report about a placed call, from a callback or from asking the provider."""

    call_session_id: str
    sid: str
    status: CallStatus
    occurred_at: datetime | None = None
    duration_seconds: int | None = None
    source: StatusSource = StatusSource.CALLBACK
    answered_by: str | None = None
    detail: str | None = None  # what the carrier said beyond the status, for the timeline
    ended_reason: str | None = None  # an EndedReason the carrier knows (agent_hung_up, ...)


# Where a provider's status reports go: the workflow of the session (services/call_status.py).
# One delivery carries the reports about one session that were ready at the same time.
StatusSink = Callable[[Sequence[StatusEvent]], Awaitable[object]]
