"""The steps of a running campaign (CampaignWorkflow's activities): bring recipients up to date
from their sessions, claim the next ones, count. Every step is idempotent: it may run again
after a crash or a retry. Calls are started by services/calls.py, never here."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.calls import CallOptions, CallPolicies, CallSpec, MachineDetection, SessionStatus
from contracts.campaigns import (
    CAMPAIGN_FINAL,
    IN_FLIGHT,
    CampaignConfig,
    CampaignState,
    RecipientState,
    TickInput,
    TickResult,
)
from contracts.context import merged_variables
from contracts.lifecycle import CallStatus
from contracts.webhooks import EventType
from core.ids import campaign_call_ids
from core.windows import Window, is_open, next_open
from store import accounts, webhooks
from store.campaigns import counts
from store.db import session_scope
from store.models import CallSession, Campaign, CampaignRecipient, utcnow

SYNC_PAGE = 500  # calls brought up to date per tick
# Final lifecycle statuses of a placed call (`call_status`) and the recipient state they give.
_CALL_STATUS_OUTCOME: dict[str, RecipientState] = {
    CallStatus.COMPLETED: RecipientState.COMPLETED,
    CallStatus.BUSY: RecipientState.BUSY,
    CallStatus.NO_ANSWER: RecipientState.NO_ANSWER,
    CallStatus.CANCELED: RecipientState.FAILED,
    CallStatus.FAILED: RecipientState.FAILED,
}


def is_voicemail(answered_by: str | None) -> bool:
    """A machine answered: Twilio's machine_start / machine_end_* (a fax is not a voicemail)."""
    return answered_by is not None and answered_by.startswith("machine_")


def load_config(engine: Engine, campaign_id: str) -> CampaignConfig:
    with Session(engine) as session:
        row = session.get(Campaign, uuid.UUID(campaign_id))
        # The account's max_calls_per_second holds the campaign's pace when it is lower.
        rate = accounts.campaign_rate(session, row.user_id, row.calls_per_second) if row else 0.0
    if row is None:
        return CampaignConfig(found=False)
    return CampaignConfig(
        found=True,
        state=CampaignState(row.state),
        user_id=str(row.user_id),
        calls_per_second=rate,
        max_concurrency=row.max_concurrency,
        start_at=row.start_at,
    )


def recipient_outcome(
    row: CallSession, now: datetime, max_age: timedelta
) -> tuple[RecipientState, str | None, str | None] | None:
    """(recipient state, failure code, reason) once the session's call has ended, else None.

    A dial that failed ends the call. A placed call ends with its final lifecycle status
    (`call_status`: busy and no-answer map through, for redials); one still ringing or talking
    stays in flight until the call workflow's maximum age, after which it stops being followed
    and the recipient counts as called. A call a machine answered (answered_by machine_*)
    ends `voicemail`, whether it was hung up on, left a message or went on."""
    if row.status == SessionStatus.FAILED:
        return RecipientState.FAILED, row.failure_code, row.failure_reason
    if row.status != SessionStatus.SUCCESS:
        return None
    if row.call_status in _CALL_STATUS_OUTCOME:
        state = _CALL_STATUS_OUTCOME[row.call_status]
        if state == RecipientState.COMPLETED:
            if is_voicemail(row.answered_by):
                return RecipientState.VOICEMAIL, None, f"answered by {row.answered_by}"
            return RecipientState.COMPLETED, None, None
        return state, row.call_status.replace("-", "_"), f"the call ended {row.call_status}"
    dialed = row.dialed_at or row.updated_at
    if dialed is not None and dialed + max_age < now:
        return (
            RecipientState.COMPLETED,
            None,
            "the call was not followed to its end (maximum call age)",
        )
    return None


@dataclass
class TickPlan:
    result: TickResult
    calls: list[CallSpec]
    recipient_ids: list[uuid.UUID]


def _sync_outcomes(session: Session, campaign: Campaign, now: datetime, max_age: timedelta) -> None:
    """Bring calling recipients up to date from their sessions (one page per tick)."""
    rows = session.exec(
        select(CampaignRecipient, CallSession)
        .join(CallSession, col(CallSession.id) == col(CampaignRecipient.call_session_id))
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.state == RecipientState.CALLING,
        )
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
            recipient.state = RecipientState.NOT_STARTED
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
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.state == RecipientState.NOT_STARTED,
        )
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


def call_spec(campaign: Campaign, recipient: CampaignRecipient) -> CallSpec:
    assert recipient.call_session_id is not None
    session_id, request_id = campaign_call_ids(campaign.id, recipient.id, recipient.attempts)
    return CallSpec(
        call_session_id=session_id,
        request_id=request_id,
        user_id=str(campaign.user_id),
        phone_number=recipient.phone_number,
        agent_id=str(campaign.agent_id) if campaign.agent_id else None,
        flow_id=str(campaign.flow_id) if campaign.flow_id else None,
        phone_number_id=str(campaign.phone_number_id) if campaign.phone_number_id else None,
        campaign_id=str(campaign.id),
        variables=merged_variables(
            json.loads(campaign.variables) if campaign.variables else {},
            json.loads(recipient.variables) if recipient.variables else {},
        ),
        metadata={"external_id": recipient.external_id} if recipient.external_id else {},
        options=call_options(campaign),
    )


def call_options(campaign: Campaign) -> CallOptions | None:
    """The campaign's options for each of its calls; None when it asked for none (the
    settings' defaults, as before campaigns had them). A machine_detection left out was
    resolved to the setting's at creation (api/campaign_input.py)."""
    if (
        campaign.max_duration_seconds is None
        and campaign.machine_detection is None
        and campaign.voicemail_message is None
    ):
        return None
    return CallOptions(
        max_duration_seconds=campaign.max_duration_seconds,
        machine_detection=MachineDetection(campaign.machine_detection or MachineDetection.OFF),
        voicemail_message=campaign.voicemail_message,
    )


def prepare_tick(engine: Engine, input: TickInput, policies: CallPolicies) -> TickPlan:
    """One step of a campaign: sync ended calls, apply cancel, claim the next recipients
    (marked `queued` with their call id before any call is started), and count."""
    now = input.now
    with session_scope(engine) as session:
        campaign = session.get(Campaign, uuid.UUID(input.campaign_id), with_for_update=True)
        if campaign is None:
            return TickPlan(TickResult(state=CampaignState.CANCELED, done=True), [], [])
        if input.begin and campaign.state == CampaignState.SCHEDULED:
            first_start = campaign.started_at is None
            campaign.state = CampaignState.RUNNING
            campaign.started_at = campaign.started_at or now
            campaign.updated_at = now
            if first_start:
                session.flush()
                webhooks.add_campaign_event(
                    session, campaign, EventType.CAMPAIGN_STARTED, counts(session, campaign.id)[0]
                )
        _sync_outcomes(session, campaign, now, policies.max_age)
        if campaign.state == CampaignState.CANCELED:
            session.execute(
                update(CampaignRecipient)
                .where(
                    col(CampaignRecipient.campaign_id) == campaign.id,
                    col(CampaignRecipient.state) == RecipientState.NOT_STARTED,
                )
                .values(
                    state=RecipientState.CANCELED,
                    reason="the campaign was canceled",
                    updated_at=now,
                )
            )
        in_flight = _count(session, campaign.id, IN_FLIGHT)
        # Recipients claimed by a tick whose calls may not have started (a crash in between):
        # start them again; their deterministic ids make that a no-op if they did start.
        claimed = list(
            session.exec(
                select(CampaignRecipient)
                .where(
                    CampaignRecipient.campaign_id == campaign.id,
                    CampaignRecipient.state == RecipientState.QUEUED,
                )
                .order_by(col(CampaignRecipient.row_number))
            ).all()
        )
        open_zones, opens_next = _open_zones(session, campaign, now)
        # SQLModel types `Model.column == value` as bool, SQLAlchemy's operators as ColumnElement.
        due_filter: list[ColumnElement[bool] | bool] = [
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.state == RecipientState.NOT_STARTED,
            (col(CampaignRecipient.next_attempt_at).is_(None))
            | (col(CampaignRecipient.next_attempt_at) <= now),
        ]
        if open_zones is not None:
            due_filter.append(
                func.coalesce(CampaignRecipient.timezone, campaign.default_timezone).in_(open_zones)
            )
        capacity = max(0, min(input.limit, campaign.max_concurrency - in_flight))
        # The account's max_concurrent_calls, counted over all its calls: the campaign waits.
        room = accounts.campaign_room(session, campaign.user_id)
        account_limited = room is not None and room < capacity
        if room is not None:
            capacity = min(capacity, room)
        if campaign.state == CampaignState.RUNNING and capacity > 0:
            for recipient in session.exec(
                select(CampaignRecipient)
                .where(*due_filter)
                .order_by(col(CampaignRecipient.row_number))
                .limit(capacity)
            ).all():
                recipient.attempts += 1
                recipient.call_session_id = uuid.UUID(
                    campaign_call_ids(campaign.id, recipient.id, recipient.attempts)[0]
                )
                recipient.state = RecipientState.QUEUED
                recipient.next_attempt_at = None
                recipient.updated_at = now
                session.add(recipient)
                claimed.append(recipient)
                in_flight += 1
        session.flush()
        pending = _count(session, campaign.id, [RecipientState.NOT_STARTED])
        due = session.exec(
            select(func.count()).select_from(CampaignRecipient).where(*due_filter)
        ).one()
        next_due = opens_next
        redial_at = session.exec(
            select(func.min(CampaignRecipient.next_attempt_at)).where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.state == RecipientState.NOT_STARTED,
                col(CampaignRecipient.next_attempt_at) > now,
            )
        ).one()
        if redial_at is not None:
            next_due = redial_at if next_due is None else min(next_due, redial_at)
        done = in_flight == 0 and pending == 0
        completes = done and campaign.state not in CAMPAIGN_FINAL
        if completes:
            campaign.state = CampaignState.COMPLETED
        if done and campaign.finished_at is None:
            campaign.finished_at = now
            campaign.updated_at = now
        if completes:
            session.flush()
            webhooks.add_campaign_event(
                session, campaign, EventType.CAMPAIGN_COMPLETED, counts(session, campaign.id)[0]
            )
        session.add(campaign)
        calls = [call_spec(campaign, r) for r in claimed]
        result = TickResult(
            state=CampaignState(campaign.state),
            started=len(calls),
            in_flight=in_flight,
            pending=pending,
            due=due,
            next_due_at=next_due,
            calls_per_second=accounts.campaign_rate(
                session, campaign.user_id, campaign.calls_per_second
            ),
            max_concurrency=campaign.max_concurrency,
            done=done,
            window_opens_at=opens_next,
            account_limited=account_limited,
        )
        return TickPlan(result, calls, [r.id for r in claimed])


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
                    col(CampaignRecipient.state) == RecipientState.QUEUED,
                )
                .values(state=RecipientState.CALLING, updated_at=utcnow())
            )
