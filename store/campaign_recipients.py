"""Each recipient of a campaign with every attempt's call and outcome: the recipients page and
its CSV export. The export reads keyset pages (by row_number, unique per campaign), one short
session each, so a 100,000-recipient campaign streams in bounded memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.calls import SessionStatus
from contracts.campaigns import AttemptOutcome, RecipientState
from contracts.lifecycle import CallStatus
from core.ids import campaign_call_ids
from store.models import CallSession, CampaignRecipient

EXPORT_PAGE = 1000  # recipients per query of the CSV export
_IN_CHUNK = 1000  # call ids per IN (...) of the attempts' sessions


def outcome_of(session: type[CallSession] = CallSession) -> ColumnElement[Any]:
    """An attempt's outcome in SQL from its session's columns, NULL while it is not over (or
    has no session yet). The same rules as store/campaign_ticks.py `recipient_outcome`."""
    success = col(session.status) == SessionStatus.SUCCESS
    call_status = col(session.call_status)
    return case(
        (col(session.status) == SessionStatus.FAILED, literal(AttemptOutcome.FAILED.value)),
        (
            and_(
                success,
                call_status == CallStatus.COMPLETED,
                func.substr(col(session.answered_by), 1, 8) == "machine_",
            ),
            literal(AttemptOutcome.VOICEMAIL.value),
        ),
        (
            and_(success, call_status == CallStatus.COMPLETED),
            literal(AttemptOutcome.COMPLETED.value),
        ),
        (and_(success, call_status == CallStatus.BUSY), literal(AttemptOutcome.BUSY.value)),
        (
            and_(success, call_status == CallStatus.NO_ANSWER),
            literal(AttemptOutcome.NO_ANSWER.value),
        ),
        (
            and_(success, call_status.in_([CallStatus.CANCELED, CallStatus.FAILED])),
            literal(AttemptOutcome.FAILED.value),
        ),
        else_=None,
    )


@dataclass
class Attempt:
    attempt: int
    call_session_id: str
    outcome: str | None = None  # an AttemptOutcome; None while not over
    call_status: str | None = None
    answered_by: str | None = None
    ended_reason: str | None = None
    failure_code: str | None = None


@dataclass
class RecipientView:
    row_number: int
    phone_number: str
    external_id: str | None
    state: str
    attempts: int
    failure_code: str | None
    reason: str | None
    outcome: str | None  # the latest attempt's
    calls: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class RecipientFilter:
    state: RecipientState | None = None
    outcome: AttemptOutcome | None = None


def _query(campaign_id: uuid.UUID, where: RecipientFilter) -> Any:
    outcome = outcome_of()
    query = (
        select(CampaignRecipient, outcome)
        .outerjoin(CallSession, col(CallSession.id) == col(CampaignRecipient.call_session_id))
        .where(CampaignRecipient.campaign_id == campaign_id)
    )
    if where.state is not None:
        query = query.where(CampaignRecipient.state == where.state)
    if where.outcome is not None:
        query = query.where(outcome == where.outcome.value)
    return query


def _views(session: Session, campaign_id: uuid.UUID, rows: Sequence[Any]) -> list[RecipientView]:
    """The rows with every attempt's session (read in chunks of ids, derived from the
    (campaign, recipient, attempt) as the ticks derive them)."""
    wanted: dict[str, tuple[int, int]] = {}  # call id -> (row index, attempt)
    views: list[RecipientView] = []
    for i, (recipient, outcome) in enumerate(rows):
        view = RecipientView(
            row_number=recipient.row_number,
            phone_number=recipient.phone_number,
            external_id=recipient.external_id,
            state=recipient.state,
            attempts=recipient.attempts,
            failure_code=recipient.failure_code,
            reason=recipient.reason,
            outcome=outcome,
        )
        for attempt in range(1, recipient.attempts + 1):
            call_id = campaign_call_ids(campaign_id, recipient.id, attempt)[0]
            view.calls.append(Attempt(attempt=attempt, call_session_id=call_id))
            wanted[call_id] = (i, attempt)
        views.append(view)
    ids = [uuid.UUID(c) for c in wanted]
    outcome = outcome_of()
    for start in range(0, len(ids), _IN_CHUNK):
        for call_id, outcome_value, call_status, answered_by, ended, code in session.execute(
            sa_select(
                col(CallSession.id),
                outcome,
                col(CallSession.call_status),
                col(CallSession.answered_by),
                col(CallSession.ended_reason),
                col(CallSession.failure_code),
            ).where(col(CallSession.id).in_(ids[start : start + _IN_CHUNK]))
        ).all():
            i, attempt = wanted[str(call_id)]
            views[i].calls[attempt - 1] = Attempt(
                attempt=attempt,
                call_session_id=str(call_id),
                outcome=outcome_value,
                call_status=call_status,
                answered_by=answered_by,
                ended_reason=ended,
                failure_code=code,
            )
    return views


def recipients_page(
    session: Session, campaign_id: uuid.UUID, where: RecipientFilter, offset: int, limit: int
) -> tuple[list[RecipientView], int]:
    """One page of the campaign's recipients in row order, and how many match in all."""
    query = _query(campaign_id, where)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(CampaignRecipient.row_number)).offset(offset).limit(limit)
    ).all()
    return _views(session, campaign_id, rows), total


def all_recipients(
    engine: Engine, campaign_id: uuid.UUID, where: RecipientFilter, page: int = EXPORT_PAGE
) -> Iterator[list[RecipientView]]:
    """Every matching recipient in row order, `page` at a time (keyset on row_number, a new
    short session per page: nothing of the campaign is held but one page)."""
    after: int | None = None
    while True:
        with Session(engine) as session:
            query = _query(campaign_id, where)
            if after is not None:
                query = query.where(col(CampaignRecipient.row_number) > after)
            rows = session.exec(query.order_by(col(CampaignRecipient.row_number)).limit(page)).all()
            if not rows:
                return
            views = _views(session, campaign_id, rows)
        yield views
        if len(rows) < page:
            return
        after = views[-1].row_number
