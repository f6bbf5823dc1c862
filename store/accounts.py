"""Per-account limits (README "Accounts and their limits"): what an operator set, and what
the account uses now, counted in the database every process shares (never a process-local
counter), so the limits hold across every API and worker process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, exists, func, or_, true
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.calls import SessionStatus
from contracts.campaigns import RecipientState
from contracts.lifecycle import FINAL
from store.db import session_scope
from store.models import CallSession, Campaign, CampaignRecipient, User, utcnow

# A session older than this is not in flight whatever its row says (its workflow stops
# following a call after DIALER_CALL_MAX_AGE_SECONDS, 2 h by default; a lost one must not
# hold a slot for ever).
IN_FLIGHT_HORIZON = timedelta(hours=3)
# The call_status of an accepted call waiting for its scheduled_at: not dialing yet.
_SCHEDULED = "scheduled"


@dataclass(frozen=True)
class AccountLimits:
    max_concurrent_calls: int | None = None
    max_calls_per_second: float | None = None
    fairness_weight: float | None = None


def limits_of(user: User) -> AccountLimits:
    return AccountLimits(
        max_concurrent_calls=user.max_concurrent_calls,
        max_calls_per_second=user.max_calls_per_second,
        fairness_weight=user.fairness_weight,
    )


def get_limits(engine: Engine, user_id: str | uuid.UUID) -> AccountLimits:
    with Session(engine) as session:
        user = session.get(User, uuid.UUID(str(user_id)))
    return limits_of(user) if user is not None else AccountLimits()


_UNSET = object()


def set_limits(
    engine: Engine,
    user_id: uuid.UUID,
    *,
    max_concurrent_calls: int | None | object = _UNSET,
    max_calls_per_second: float | None | object = _UNSET,
    fairness_weight: float | None | object = _UNSET,
) -> AccountLimits:
    """Set the limits given (None removes one); the others stay."""
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise LookupError(f"no user {user_id}")
        if max_concurrent_calls is not _UNSET:
            user.max_concurrent_calls = max_concurrent_calls  # type: ignore[assignment]
        if max_calls_per_second is not _UNSET:
            user.max_calls_per_second = max_calls_per_second  # type: ignore[assignment]
        if fairness_weight is not _UNSET:
            user.fairness_weight = fairness_weight  # type: ignore[assignment]
        session.add(user)
        session.flush()
        return limits_of(user)


def _session_in_flight() -> object:
    """A session dialing, ringing or in progress: accepted (not waiting for its schedule)
    or dialing, or placed and not yet at a final status."""
    return or_(
        and_(
            col(CallSession.status) == SessionStatus.ACCEPTED,
            or_(col(CallSession.call_status).is_(None), col(CallSession.call_status) != _SCHEDULED),
        ),
        col(CallSession.status) == SessionStatus.DIALING,
        and_(
            col(CallSession.status) == SessionStatus.SUCCESS,
            or_(col(CallSession.call_status).is_(None), col(CallSession.call_status).not_in(FINAL)),
        ),
    )


def calls_in_flight(session: Session, user_id: uuid.UUID) -> int:
    """The account's calls in flight: its sessions in flight, and its campaigns' recipients
    claimed for a call whose session does not exist yet (about to start)."""
    since = utcnow() - IN_FLIGHT_HORIZON
    sessions = session.exec(
        select(func.count())
        .select_from(CallSession)
        .where(
            CallSession.user_id == user_id,
            col(CallSession.created_at) >= since,
            _session_in_flight(),  # type: ignore[arg-type]
        )
    ).one()
    return int(sessions) + _claimed_without_session(session, user_id)


def _claimed_without_session(session: Session, user_id: uuid.UUID) -> int:
    has_session = exists().where(col(CallSession.id) == col(CampaignRecipient.call_session_id))
    count = session.exec(
        select(func.count())
        .select_from(CampaignRecipient)
        .join(Campaign, col(Campaign.id) == col(CampaignRecipient.campaign_id))
        .where(
            Campaign.user_id == user_id,
            col(CampaignRecipient.state).in_([RecipientState.QUEUED, RecipientState.CALLING]),
            ~has_session,
        )
    ).one()
    return int(count)


def over_concurrency_limit(
    engine: Engine, user_id: str, call_session_id: str, *, at_its_time: bool = False
) -> int | None:
    """For a single call whose session is stored (and so counts as in flight): the account's
    limit when this call is beyond it, else None. Every call counts the calls in flight that
    were created before it (and claimed campaign calls), so of two calls racing for the last
    slot in two processes exactly the later one is refused, without a lock. A scheduled call
    at its time (`at_its_time`) was created long before the calls now in flight: it counts
    all of them."""
    uid = uuid.UUID(user_id)
    with Session(engine) as session:
        user = session.get(User, uid)
        if user is None or user.max_concurrent_calls is None:
            return None
        mine = session.get(CallSession, uuid.UUID(call_session_id))
        if mine is None:
            return None
        since = utcnow() - IN_FLIGHT_HORIZON
        earlier = or_(
            col(CallSession.created_at) < mine.created_at,
            and_(
                col(CallSession.created_at) == mine.created_at,
                col(CallSession.id) < mine.id,
            ),
        )
        ahead = session.exec(
            select(func.count())
            .select_from(CallSession)
            .where(
                CallSession.user_id == uid,
                col(CallSession.created_at) >= since,
                col(CallSession.id) != mine.id,
                _session_in_flight(),  # type: ignore[arg-type]
                true() if at_its_time else earlier,
            )
        ).one()
        ahead = int(ahead) + _claimed_without_session(session, uid)
        return user.max_concurrent_calls if ahead >= user.max_concurrent_calls else None


def campaign_rate(session: Session, user_id: uuid.UUID, calls_per_second: float) -> float:
    """A campaign's effective pace: its own calls_per_second, held to the account's
    max_calls_per_second when that is lower (README "Accounts and their limits")."""
    user = session.get(User, user_id)
    if user is None or user.max_calls_per_second is None:
        return calls_per_second
    return min(calls_per_second, user.max_calls_per_second)


def campaign_room(session: Session, user_id: uuid.UUID) -> int | None:
    """How many more calls the account may have in flight (None: no limit)."""
    user = session.get(User, user_id)
    if user is None or user.max_concurrent_calls is None:
        return None
    return max(0, user.max_concurrent_calls - calls_in_flight(session, user_id))
