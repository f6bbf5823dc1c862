"""The call lifecycle's vocabulary, shared by providers, the webhook and the workflow.

Pure functions only (the workflow imports this module). Statuses are ranked so a late or
replayed report can never move a call backwards, and a final status is final."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.calls import StatusSource


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


# Where a provider's status reports go: the workflow of the session (services/call_status.py).
# One delivery carries the reports about one session that were ready at the same time.
StatusSink = Callable[[Sequence[StatusEvent]], Awaitable[object]]
