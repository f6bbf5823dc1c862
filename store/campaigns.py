"""Queries behind campaigns: creation (one transaction), control, counts, and the steps of a
campaign tick (bring recipients up to date from their sessions, claim the next ones).

Every step of a tick is idempotent: it may run again after a crash or a retry."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dialer.phone import InvalidNumber, normalize
from dialer.windows import Window, is_open, next_open, timezone_of
from store.db import session_scope
from store.models import (
    Agent,
    CallSession,
    Campaign,
    CampaignRecipient,
    Flow,
    PhoneNumber,
    SuppressedNumber,
    utcnow,
)
from telephony import status as call_status
from workflows.campaign_dto import (
    BUSY,
    CALLING,
    CAMPAIGN_FINAL,
    CANCELED,
    COMPLETED,
    IN_FLIGHT,
    NO_ANSWER,
    NOT_STARTED,
    PAUSED,
    QUEUED,
    R_CANCELED,
    R_COMPLETED,
    R_FAILED,
    RECIPIENT_STATES,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    CampaignConfig,
    TickInput,
    TickResult,
)
from workflows.dto import (
    FAILED,
    SUCCESS,
    CreateCallInput,
    DialPolicy,
    FailureCode,
    FollowPolicy,
)

# Campaign call ids derive from (campaign, recipient, attempt): the same recipient attempt
# always maps to the same workflow id, so no restart can start it twice.
_CALL_NS = uuid.UUID("0b7d6c1e-3f4a-4c2d-8e9f-a1b2c3d4e501")
_REQUEST_NS = uuid.UUID("0b7d6c1e-3f4a-4c2d-8e9f-a1b2c3d4e502")
SYNC_PAGE = 500  # calls brought up to date per tick
SKIP_DUPLICATE = "duplicate"
# Final lifecycle statuses of a placed call (`call_status`) and the recipient state they give.
_CALL_STATUS_OUTCOME = {
    call_status.COMPLETED: R_COMPLETED,
    call_status.BUSY: BUSY,
    call_status.NO_ANSWER: NO_ANSWER,
    call_status.CANCELED: R_FAILED,
    call_status.FAILED: R_FAILED,
}


class CampaignNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    pass


class NoValidRecipients(ValueError):
    def __init__(self, rejected: list[RejectedRow]) -> None:
        super().__init__("no valid recipients")
        self.rejected = rejected


def call_ids(campaign_id: uuid.UUID, recipient_id: uuid.UUID, attempt: int) -> tuple[str, str]:
    name = f"{campaign_id}:{recipient_id}:{attempt}"
    return str(uuid.uuid5(_CALL_NS, name)), str(uuid.uuid5(_REQUEST_NS, name))


def campaign_workflow_id(campaign_id: uuid.UUID | str) -> str:
    return str(campaign_id)


# --- creation -------------------------------------------------------------------------------


@dataclass
class RecipientRow:
    row_number: int
    phone_number: str
    variables: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None


@dataclass
class RejectedRow:
    row_number: int
    reason: str


@dataclass
class CampaignSpec:
    user_id: uuid.UUID
    name: str
    agent_id: uuid.UUID | None
    flow_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    calls_per_second: float
    max_concurrency: int
    default_timezone: str
    window_start: str | None = None
    window_end: str | None = None
    window_days: str | None = None
    start_at: datetime | None = None
    redial_outcomes: str | None = None
    redial_max_attempts: int = 1
    redial_delay_seconds: int = 0


@dataclass
class CreationReport:
    campaign: Campaign
    accepted: int
    skipped: int
    rejected: list[RejectedRow]


def check_ownership(session: Session, spec: CampaignSpec) -> str | None:
    """The name of the first id that is missing or not the user's (both look the same)."""
    for model, value, name in (
        (Agent, spec.agent_id, "agent"),
        (Flow, spec.flow_id, "workflow"),
        (PhoneNumber, spec.phone_number_id, "phone number"),
    ):
        if value is None:
            continue
        row = session.get(model, value)
        if row is None or row.user_id != spec.user_id:
            return name
    return None


def create_campaign(
    engine: Engine, spec: CampaignSpec, rows: Iterable[RecipientRow], region: str
) -> CreationReport:
    """Insert the campaign and its recipients in one transaction. Invalid rows are reported,
    not inserted; duplicates and suppressed numbers are inserted as skipped with a reason.

    Raises CampaignNotFound when an id is missing or not the user's, and NoValidRecipients when
    no row is valid (nothing is written in either case)."""
    rejected: list[RejectedRow] = []
    with session_scope(engine) as session:
        missing = check_ownership(session, spec)
        if missing:
            raise CampaignNotFound(f"{missing} not found")
        suppressed = set(
            session.exec(
                select(SuppressedNumber.number).where(SuppressedNumber.user_id == spec.user_id)
            ).all()
        )
        campaign = Campaign(
            user_id=spec.user_id,
            name=spec.name,
            agent_id=spec.agent_id,
            flow_id=spec.flow_id,
            phone_number_id=spec.phone_number_id,
            calls_per_second=spec.calls_per_second,
            max_concurrency=spec.max_concurrency,
            window_start=spec.window_start,
            window_end=spec.window_end,
            window_days=spec.window_days,
            default_timezone=spec.default_timezone,
            start_at=spec.start_at,
            redial_outcomes=spec.redial_outcomes,
            redial_max_attempts=spec.redial_max_attempts,
            redial_delay_seconds=spec.redial_delay_seconds,
        )
        session.add(campaign)
        session.flush()
        seen: set[str] = set()
        accepted = skipped = 0
        batch: list[dict[str, Any]] = []
        now = utcnow()
        for row in rows:
            try:
                number = normalize(row.phone_number, region)
            except InvalidNumber as exc:
                rejected.append(RejectedRow(row.row_number, str(exc)))
                continue
            values: dict[str, Any] = {
                "id": uuid.uuid4(),
                "campaign_id": campaign.id,
                "row_number": row.row_number,
                "phone_number": number,
                "dedupe_key": None,
                "timezone": timezone_of(number),
                "variables": json.dumps(row.variables) if row.variables else None,
                "external_id": row.external_id,
                "state": NOT_STARTED,
                "reason": None,
                "failure_code": None,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            if number in seen:
                values.update(
                    state=SKIPPED,
                    failure_code=SKIP_DUPLICATE,
                    reason="the number appears earlier in this campaign",
                )
                skipped += 1
            elif number in suppressed:
                seen.add(number)
                values.update(
                    dedupe_key=number,
                    state=SKIPPED,
                    failure_code=FailureCode.SUPPRESSED_NUMBER,
                    reason="the number is on the do-not-call list",
                )
                skipped += 1
            else:
                seen.add(number)
                values["dedupe_key"] = number
                accepted += 1
            batch.append(values)
            if len(batch) >= 1000:
                session.execute(CampaignRecipient.__table__.insert(), batch)  # type: ignore[attr-defined]
                batch = []
        if batch:
            session.execute(CampaignRecipient.__table__.insert(), batch)  # type: ignore[attr-defined]
        if accepted + skipped == 0:
            raise NoValidRecipients(rejected)
        campaign.total_recipients = accepted + skipped
        if accepted == 0:
            # Nothing to call: the campaign is complete the moment it exists.
            campaign.state = COMPLETED
            campaign.finished_at = now
    return CreationReport(campaign=campaign, accepted=accepted, skipped=skipped, rejected=rejected)


def delete_campaign(engine: Engine, campaign_id: uuid.UUID) -> None:
    """Undo a creation whose workflow could not be started (nothing is left half-written)."""
    with session_scope(engine) as session:
        session.execute(
            CampaignRecipient.__table__.delete().where(  # type: ignore[attr-defined]
                CampaignRecipient.campaign_id == campaign_id
            )
        )
        row = session.get(Campaign, campaign_id)
        if row is not None:
            session.delete(row)


# --- reading and control --------------------------------------------------------------------


def get_owned(
    session: Session, campaign_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
) -> Campaign:
    row = session.get(Campaign, campaign_id, with_for_update=lock)
    if row is None or row.user_id != user_id:
        raise CampaignNotFound("campaign not found")
    return row


def counts(session: Session, campaign_id: uuid.UUID) -> tuple[dict[str, int], dict[str, int]]:
    """Recipients per state (every state present, zeros included) and per failure code."""
    by_state = dict.fromkeys(RECIPIENT_STATES, 0)
    for state, n in session.exec(
        select(CampaignRecipient.state, func.count())
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(CampaignRecipient.state)
    ).all():
        by_state[state] = n
    by_code = {
        code: n
        for code, n in session.exec(
            select(CampaignRecipient.failure_code, func.count())
            .where(
                CampaignRecipient.campaign_id == campaign_id,
                col(CampaignRecipient.failure_code).is_not(None),
            )
            .group_by(CampaignRecipient.failure_code)
        ).all()
    }
    return by_state, by_code


_TRANSITIONS = {
    PAUSED: ({SCHEDULED, RUNNING}, "only a scheduled or running campaign can be paused"),
    RUNNING: ({PAUSED}, "only a paused campaign can be resumed"),
    CANCELED: ({SCHEDULED, RUNNING, PAUSED}, "the campaign has finished already"),
}


def transition(engine: Engine, campaign_id: uuid.UUID, user_id: uuid.UUID, target: str) -> Campaign:
    """pause / resume / cancel, written before the workflow is told (the row is the truth)."""
    allowed, message = _TRANSITIONS[target]
    with session_scope(engine) as session:
        # Row lock (PostgreSQL): a tick finishing the campaign and this request serialize.
        row = get_owned(session, campaign_id, user_id, lock=True)
        if row.state == target:
            return row  # repeating a control request is harmless
        if row.state not in allowed:
            raise InvalidTransition(f"{message} (it is {row.state})")
        if target == RUNNING and row.started_at is None:
            target = SCHEDULED  # resuming a campaign that never started: back to waiting
        row.state = target
        row.updated_at = utcnow()
        session.add(row)
    return row


# --- the campaign workflow's activities -----------------------------------------------------


def load_config(engine: Engine, campaign_id: str) -> CampaignConfig:
    with Session(engine) as session:
        row = session.get(Campaign, uuid.UUID(campaign_id))
    if row is None:
        return CampaignConfig(found=False)
    return CampaignConfig(
        found=True,
        state=row.state,
        user_id=str(row.user_id),
        calls_per_second=row.calls_per_second,
        max_concurrency=row.max_concurrency,
        start_at=_aware(row.start_at) if row.start_at else None,
    )


def recipient_outcome(
    row: CallSession, now: datetime, max_age: timedelta
) -> tuple[str, str | None, str | None] | None:
    """(recipient state, failure code, reason) once the session's call has ended, else None.

    A dial that failed ends the call. A placed call ends with its final lifecycle status
    (`call_status`: busy and no-answer map through, for redials); one still ringing or talking
    stays in flight until the call workflow's maximum age, after which it stops being followed
    and the recipient counts as called."""
    if row.status == FAILED:
        return R_FAILED, row.failure_code, row.failure_reason
    if row.status != SUCCESS:
        return None
    if row.call_status in _CALL_STATUS_OUTCOME:
        state = _CALL_STATUS_OUTCOME[row.call_status]
        if state == R_COMPLETED:
            return R_COMPLETED, None, None
        return state, row.call_status.replace("-", "_"), f"the call ended {row.call_status}"
    dialed = row.dialed_at or row.updated_at
    if dialed is not None and _aware(dialed) + max_age < now:
        return R_COMPLETED, None, "the call was not followed to its end (maximum call age)"
    return None


@dataclass
class TickPlan:
    result: TickResult
    calls: list[CreateCallInput]
    recipient_ids: list[uuid.UUID]


def _sync_outcomes(session: Session, campaign: Campaign, now: datetime, max_age: timedelta) -> None:
    """Bring calling recipients up to date from their sessions (one page per tick)."""
    rows = session.exec(
        select(CampaignRecipient, CallSession)
        .join(CallSession, col(CallSession.id) == col(CampaignRecipient.call_session_id))
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.state == CALLING)
        .order_by(col(CampaignRecipient.row_number))
        .limit(SYNC_PAGE * 4)
    ).all()
    redial = set((campaign.redial_outcomes or "").split(",")) - {""}
    synced = 0
    for recipient, call in rows:
        outcome = recipient_outcome(call, now, max_age)
        if outcome is None:
            continue
        state, code, reason = outcome
        recipient.failure_code, recipient.reason = code, reason
        recipient.updated_at = now
        if state in redial and recipient.attempts < campaign.redial_max_attempts:
            recipient.state = NOT_STARTED
            recipient.next_attempt_at = now + timedelta(seconds=campaign.redial_delay_seconds)
            recipient.reason = f"{state} on attempt {recipient.attempts}; redial scheduled"
        else:
            recipient.state = state
        session.add(recipient)
        synced += 1
        if synced >= SYNC_PAGE:
            break


def _open_zones(
    session: Session, campaign: Campaign, now: datetime
) -> tuple[list[str] | None, datetime | None]:
    """Zones whose window is open now (None: no window, all open), and when the next closed
    zone that has pending recipients opens."""
    if not (campaign.window_start and campaign.window_end):
        return None, None
    window = Window.parse(campaign.window_start, campaign.window_end, campaign.window_days)
    zones = session.exec(
        select(func.coalesce(CampaignRecipient.timezone, campaign.default_timezone))
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.state == NOT_STARTED)
        .distinct()
    ).all()
    open_zones: list[str] = []
    opens_next: datetime | None = None
    for tz in zones:
        if is_open(window, tz, now):
            open_zones.append(tz)
        else:
            at = next_open(window, tz, now)
            opens_next = at if opens_next is None else min(opens_next, at)
    return open_zones, opens_next


def _count(session: Session, campaign_id: uuid.UUID, states: Sequence[str]) -> int:
    return session.exec(
        select(func.count())
        .select_from(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign_id, col(CampaignRecipient.state).in_(states)
        )
    ).one()


@dataclass(frozen=True)
class CallPolicies:
    """How campaign calls dial and are followed (from settings, like single calls)."""

    dial: DialPolicy = field(default_factory=DialPolicy)
    follow: FollowPolicy = field(default_factory=FollowPolicy)

    @property
    def max_age(self) -> timedelta:
        # A little beyond the call workflow's own limit, so its last word is in the row first.
        return timedelta(seconds=self.follow.max_age_seconds + 60)


def call_input(
    campaign: Campaign, recipient: CampaignRecipient, policies: CallPolicies
) -> CreateCallInput:
    assert recipient.call_session_id is not None
    session_id, request_id = call_ids(campaign.id, recipient.id, recipient.attempts)
    parts = [recipient.phone_number, campaign.agent_id, campaign.flow_id, campaign.phone_number_id]
    fingerprint = hashlib.sha256(
        json.dumps([str(p) if p else None for p in parts]).encode()
    ).hexdigest()
    return CreateCallInput(
        call_session_id=session_id,
        request_id=request_id,
        user_id=str(campaign.user_id),
        phone_number=recipient.phone_number,
        request_hash=fingerprint,
        agent_id=str(campaign.agent_id) if campaign.agent_id else None,
        flow_id=str(campaign.flow_id) if campaign.flow_id else None,
        phone_number_id=str(campaign.phone_number_id) if campaign.phone_number_id else None,
        campaign_id=str(campaign.id),
        policy=policies.dial,
        follow=policies.follow,
    )


def prepare_tick(engine: Engine, input: TickInput, policies: CallPolicies) -> TickPlan:
    """One step of a campaign: sync ended calls, apply cancel, claim the next recipients
    (marked `queued` with their call id before any call is started), and count."""
    now = input.now
    with session_scope(engine) as session:
        campaign = session.get(Campaign, uuid.UUID(input.campaign_id), with_for_update=True)
        if campaign is None:
            return TickPlan(TickResult(state=CANCELED, done=True), [], [])
        if input.begin and campaign.state == SCHEDULED:
            campaign.state = RUNNING
            campaign.started_at = campaign.started_at or now
            campaign.updated_at = now
        _sync_outcomes(session, campaign, now, policies.max_age)
        if campaign.state == CANCELED:
            session.execute(
                update(CampaignRecipient)
                .where(
                    col(CampaignRecipient.campaign_id) == campaign.id,
                    col(CampaignRecipient.state) == NOT_STARTED,
                )
                .values(state=R_CANCELED, reason="the campaign was canceled", updated_at=now)
            )
        in_flight = _count(session, campaign.id, IN_FLIGHT)
        # Recipients claimed by a tick whose calls may not have started (a crash in between):
        # start them again; their deterministic ids make that a no-op if they did start.
        claimed = list(
            session.exec(
                select(CampaignRecipient)
                .where(
                    CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.state == QUEUED
                )
                .order_by(col(CampaignRecipient.row_number))
            ).all()
        )
        open_zones, opens_next = _open_zones(session, campaign, now)
        due_filter = [
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.state == NOT_STARTED,
            (col(CampaignRecipient.next_attempt_at).is_(None))
            | (col(CampaignRecipient.next_attempt_at) <= now),
        ]
        if open_zones is not None:
            due_filter.append(
                func.coalesce(CampaignRecipient.timezone, campaign.default_timezone).in_(open_zones)
            )
        capacity = max(0, min(input.limit, campaign.max_concurrency - in_flight))
        if campaign.state == RUNNING and capacity > 0:
            for recipient in session.exec(
                select(CampaignRecipient)
                .where(*due_filter)
                .order_by(col(CampaignRecipient.row_number))
                .limit(capacity)
            ).all():
                recipient.attempts += 1
                recipient.call_session_id = uuid.UUID(
                    call_ids(campaign.id, recipient.id, recipient.attempts)[0]
                )
                recipient.state = QUEUED
                recipient.next_attempt_at = None
                recipient.updated_at = now
                session.add(recipient)
                claimed.append(recipient)
                in_flight += 1
        session.flush()
        pending = _count(session, campaign.id, [NOT_STARTED])
        due = session.exec(
            select(func.count()).select_from(CampaignRecipient).where(*due_filter)
        ).one()
        next_due = opens_next
        redial_at = session.exec(
            select(func.min(CampaignRecipient.next_attempt_at)).where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.state == NOT_STARTED,
                col(CampaignRecipient.next_attempt_at) > now,
            )
        ).one()
        if redial_at is not None:
            redial_at = _aware(redial_at)
            next_due = redial_at if next_due is None else min(next_due, redial_at)
        done = in_flight == 0 and pending == 0
        if done and campaign.state not in CAMPAIGN_FINAL:
            campaign.state = COMPLETED
        if done and campaign.finished_at is None:
            campaign.finished_at = now
            campaign.updated_at = now
        session.add(campaign)
        calls = [call_input(campaign, r, policies) for r in claimed]
        result = TickResult(
            state=campaign.state,
            started=len(calls),
            in_flight=in_flight,
            pending=pending,
            due=due,
            next_due_at=next_due,
            calls_per_second=campaign.calls_per_second,
            max_concurrency=campaign.max_concurrency,
            done=done,
        )
        return TickPlan(result, calls, [r.id for r in claimed])


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def mark_calling(engine: Engine, recipient_ids: list[uuid.UUID]) -> None:
    """Their call workflows exist now: in flight until the session says the call ended."""
    if not recipient_ids:
        return
    with session_scope(engine) as session:
        for start in range(0, len(recipient_ids), 500):
            session.execute(
                update(CampaignRecipient)
                .where(
                    col(CampaignRecipient.id).in_(recipient_ids[start : start + 500]),
                    col(CampaignRecipient.state) == QUEUED,
                )
                .values(state=CALLING, updated_at=utcnow())
            )
