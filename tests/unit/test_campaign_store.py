"""Campaign creation and ticks against the database: duplicates and suppressed numbers are
skipped, the concurrency bound holds, a claimed recipient keeps its call id across a crash,
and busy calls are redialed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.campaign_input import parse_csv
from contracts.calls import CallPolicies
from contracts.campaigns import TickInput
from services.calls import request_fingerprint
from store import campaign_ticks, campaigns
from store.db import session_scope
from store.models import CampaignRecipient, SuppressedNumber
from tests.support.accounts import make_account
from tests.support.campaigns import fictional_numbers, make_campaign

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def _tick(
    engine: Engine, campaign_id: uuid.UUID, limit: int, now: datetime = NOW
) -> campaign_ticks.TickPlan:
    return campaign_ticks.prepare_tick(
        engine,
        TickInput(campaign_id=str(campaign_id), now=now, limit=limit, begin=True),
        CallPolicies(),
    )


def _rows(engine: Engine, campaign_id: uuid.UUID) -> list[CampaignRecipient]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(CampaignRecipient)
                .where(CampaignRecipient.campaign_id == campaign_id)
                .order_by(col(CampaignRecipient.row_number))
            ).all()
        )


def test_duplicates_and_suppressed_numbers_are_skipped(engine: Engine) -> None:
    user = make_account(engine).user
    with session_scope(engine) as session:
        session.add(SuppressedNumber(user_id=user.id, number="+12025550152"))
    campaign_id = make_campaign(
        engine, user.id, ["+12025550150", "(202) 555-0150", "+12025550152", "+12025550153"]
    )
    rows = _rows(engine, campaign_id)
    assert [(r.state, r.failure_code) for r in rows] == [
        ("not_started", None),
        ("skipped", "duplicate"),
        ("skipped", "suppressed_number"),
        ("not_started", None),
    ]


def test_a_foreign_flow_is_refused_and_nothing_is_written(engine: Engine) -> None:
    owner, other = make_account(engine).user, make_account(engine).user
    make_campaign(engine, owner.id, ["+12025550150"])  # creates the owner's flow
    with Session(engine) as session:
        from store.models import Flow

        flow_id = session.exec(select(Flow.id).where(Flow.user_id == owner.id)).one()
    with pytest.raises(campaigns.CampaignNotFound, match="workflow not found"):
        make_campaign(engine, other.id, ["+12025550150"], flow_id=flow_id)


def test_concurrency_bound_and_stable_call_ids_across_a_crash(engine: Engine) -> None:
    user = make_account(engine).user
    campaign_id = make_campaign(engine, user.id, fictional_numbers(10), max_concurrency=3)
    plan = _tick(engine, campaign_id, limit=5)
    assert plan.result.started == 3 and plan.result.in_flight == 3
    first_ids = [c.call_session_id for c in plan.calls]
    # The worker died before the calls were marked as started: the next tick starts the same
    # recipients again, under the same ids (the server refuses a second start), and no more.
    again = _tick(engine, campaign_id, limit=5)
    assert [c.call_session_id for c in again.calls] == first_ids
    campaign_ticks.mark_calling(engine, again.recipient_ids)
    assert _tick(engine, campaign_id, limit=5).calls == []
    assert {r.state for r in _rows(engine, campaign_id)[:3]} == {"calling"}


def test_busy_is_redialed_after_the_delay_then_kept(engine: Engine) -> None:
    from store.models import CallSession

    user = make_account(engine).user
    campaign_id = make_campaign(
        engine,
        user.id,
        ["+12025550150"],
        redial_outcomes="busy",
        redial_max_attempts=2,
        redial_delay_seconds=60,
    )

    def dial_and_end(now: datetime) -> str:
        plan = _tick(engine, campaign_id, limit=1, now=now)
        assert len(plan.calls) == 1
        call = plan.calls[0]
        campaign_ticks.mark_calling(engine, plan.recipient_ids)
        with session_scope(engine) as session:
            session.add(
                CallSession(
                    id=uuid.UUID(call.call_session_id),
                    request_id=uuid.UUID(call.request_id),
                    user_id=user.id,
                    campaign_id=campaign_id,
                    requested_number=call.phone_number,
                    status="success",
                    call_status="busy",
                    request_hash=request_fingerprint(call, "US"),
                )
            )
        return call.call_session_id

    first = dial_and_end(NOW)
    waiting = _tick(engine, campaign_id, limit=1, now=NOW + timedelta(seconds=1))
    assert waiting.calls == [] and waiting.result.pending == 1
    assert waiting.result.next_due_at == NOW + timedelta(seconds=61)
    second = dial_and_end(NOW + timedelta(seconds=61))
    assert second != first
    done = _tick(engine, campaign_id, limit=1, now=NOW + timedelta(seconds=62))
    assert done.result.done and done.result.state == "completed"
    row = _rows(engine, campaign_id)[0]
    assert (row.state, row.attempts, row.failure_code) == ("busy", 2, "busy")


def test_csv_parsing_reports_each_bad_row() -> None:
    data = (
        "\ufeffPhone_Number,name,external_id\n"
        '"+12025550150","Doe, Jane",x1\n'
        "\n"
        ",nobody,x2\n"
        "+12025550151,a,b,c\n"
        "+12025550152\n"
    ).encode()
    rows, errors = parse_csv(data, max_rows=10)
    assert [(r.row_number, r.phone_number, r.variables, r.external_id) for r in rows] == [
        (2, "+12025550150", {"name": "Doe, Jane"}, "x1"),
        (6, "+12025550152", {}, None),
    ]
    assert [(e.row, e.reason) for e in errors] == [
        (4, "phone_number is empty"),
        (5, "4 fields, the header has 3"),
    ]
