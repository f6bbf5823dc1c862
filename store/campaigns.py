"""Queries behind the campaign routes: creation (one transaction), reading, counts and control.
The steps of a running campaign are in store/campaign_ticks.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.calls import FailureCode
from contracts.campaigns import CampaignState, RecipientState
from contracts.context import merged_variables, variables_problem
from contracts.webhooks import EventType
from core.phone import InvalidNumber, normalize
from core.windows import timezone_of
from store import webhooks
from store.db import session_scope, table_of
from store.models import (
    Agent,
    Campaign,
    CampaignRecipient,
    Flow,
    PhoneNumber,
    SuppressedNumber,
    utcnow,
)

SKIP_DUPLICATE = "duplicate"


class CampaignNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    pass


class NoValidRecipients(ValueError):
    def __init__(self, rejected: list[RejectedRow]) -> None:
        super().__init__("no valid recipients")
        self.rejected = rejected


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
    # Every call's variables; a recipient's own win (contracts.context.merged_variables).
    variables: dict[str, Any] = field(default_factory=dict)
    # Every call's options (contracts.calls.CallOptions); all None: the settings' defaults.
    max_duration_seconds: int | None = None
    machine_detection: str | None = None
    voicemail_message: str | None = None


@dataclass
class CreationReport:
    campaign: Campaign
    accepted: int
    skipped: int
    rejected: list[RejectedRow]


# The models a campaign may name by id; a TypeVar, not a union, so `session.get` returns the
# model asked for (with its user_id) rather than their common base.
_Owned = TypeVar("_Owned", Agent, Flow, PhoneNumber)


def _missing_or_foreign(
    session: Session, model: type[_Owned], value: uuid.UUID | None, user_id: uuid.UUID
) -> bool:
    if value is None:
        return False
    row = session.get(model, value)
    return row is None or row.user_id != user_id


def check_ownership(session: Session, spec: CampaignSpec) -> str | None:
    """The name of the first id that is missing or not the user's (both look the same)."""
    if _missing_or_foreign(session, Agent, spec.agent_id, spec.user_id):
        return "agent"
    if _missing_or_foreign(session, Flow, spec.flow_id, spec.user_id):
        return "workflow"
    if _missing_or_foreign(session, PhoneNumber, spec.phone_number_id, spec.user_id):
        return "phone number"
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
            variables=json.dumps(spec.variables) if spec.variables else None,
            max_duration_seconds=spec.max_duration_seconds,
            machine_detection=spec.machine_detection,
            voicemail_message=spec.voicemail_message,
        )
        session.add(campaign)
        session.flush()
        seen: set[str] = set()
        accepted = skipped = 0
        batch: list[dict[str, Any]] = []
        recipients = table_of(CampaignRecipient)
        now = utcnow()
        for row in rows:
            try:
                number = normalize(row.phone_number, region)
            except InvalidNumber as exc:
                rejected.append(RejectedRow(row.row_number, str(exc)))
                continue
            if problem := variables_problem(merged_variables(spec.variables, row.variables)):
                rejected.append(RejectedRow(row.row_number, problem))
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
                "state": RecipientState.NOT_STARTED,
                "reason": None,
                "failure_code": None,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            if number in seen:
                values.update(
                    state=RecipientState.SKIPPED,
                    failure_code=SKIP_DUPLICATE,
                    reason="the number appears earlier in this campaign",
                )
                skipped += 1
            elif number in suppressed:
                seen.add(number)
                values.update(
                    dedupe_key=number,
                    state=RecipientState.SKIPPED,
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
                session.execute(recipients.insert(), batch)
                batch = []
        if batch:
            session.execute(recipients.insert(), batch)
        if accepted + skipped == 0:
            raise NoValidRecipients(rejected)
        campaign.total_recipients = accepted + skipped
        if spec.start_at is None:
            # It starts now: `running` in the very first answer, never `scheduled` for the
            # moment before its workflow's first tick.
            campaign.state = CampaignState.RUNNING
            campaign.started_at = now
        if accepted == 0:
            # Nothing to call: the campaign is complete the moment it exists.
            campaign.state = CampaignState.COMPLETED
            campaign.finished_at = now
        if campaign.state != CampaignState.SCHEDULED:
            # campaign.started (it starts now) or campaign.completed (nothing to call).
            session.flush()
            event = (
                EventType.CAMPAIGN_STARTED
                if campaign.state == CampaignState.RUNNING
                else EventType.CAMPAIGN_COMPLETED
            )
            webhooks.add_campaign_event(session, campaign, event, counts(session, campaign.id)[0])
    return CreationReport(campaign=campaign, accepted=accepted, skipped=skipped, rejected=rejected)


def delete_campaign(engine: Engine, campaign_id: uuid.UUID) -> None:
    """Undo a creation whose workflow could not be started (nothing is left half-written)."""
    with session_scope(engine) as session:
        session.execute(
            table_of(CampaignRecipient)
            .delete()
            .where(col(CampaignRecipient.campaign_id) == campaign_id)
        )
        # Its campaign.started event, never sent: the campaign never was.
        webhooks.delete_campaign_events(session, campaign_id)
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
    by_state = {state.value: 0 for state in RecipientState}
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
        if code is not None  # the query left them out; this narrows the type
    }
    return by_state, by_code


_TRANSITIONS = {
    CampaignState.PAUSED: (
        {CampaignState.SCHEDULED, CampaignState.RUNNING},
        "only a scheduled or running campaign can be paused",
    ),
    CampaignState.RUNNING: ({CampaignState.PAUSED}, "only a paused campaign can be resumed"),
    CampaignState.CANCELED: (
        {CampaignState.SCHEDULED, CampaignState.RUNNING, CampaignState.PAUSED},
        "the campaign has finished already",
    ),
}


def transition(
    engine: Engine, campaign_id: uuid.UUID, user_id: uuid.UUID, target: CampaignState
) -> Campaign:
    """pause / resume / cancel, written before the workflow is told (the row is the truth)."""
    allowed, message = _TRANSITIONS[target]
    with session_scope(engine) as session:
        # Row lock (PostgreSQL): a tick finishing the campaign and this request serialize.
        row = get_owned(session, campaign_id, user_id, lock=True)
        if row.state == target:
            return row  # repeating a control request is harmless
        if row.state not in allowed:
            raise InvalidTransition(f"{message} (it is {row.state})")
        if target == CampaignState.RUNNING and row.started_at is None:
            # Resuming a campaign that never started: back to waiting.
            target = CampaignState.SCHEDULED
        row.state = target
        row.updated_at = utcnow()
        session.add(row)
        session.flush()
        webhooks.add_campaign_event(
            session,
            row,
            _CONTROL_EVENTS[target],
            counts(session, row.id)[0],
            transition=uuid.uuid4().hex,  # pause and resume may repeat: each is its own event
        )
    return row


# The customer's event for each control target (a resumed campaign that never started goes
# back to `scheduled`: that is a resume too).
_CONTROL_EVENTS = {
    CampaignState.PAUSED: EventType.CAMPAIGN_PAUSED,
    CampaignState.RUNNING: EventType.CAMPAIGN_RESUMED,
    CampaignState.SCHEDULED: EventType.CAMPAIGN_RESUMED,
    CampaignState.CANCELED: EventType.CAMPAIGN_CANCELED,
}
