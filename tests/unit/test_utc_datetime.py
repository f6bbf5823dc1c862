"""store.db.UTCDateTime: every timestamp column stores UTC and reads back aware UTC, on SQLite
(which keeps no offset) as on PostgreSQL, so no reader of a row repairs a naive value."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import session_scope
from store.models import SimulatedCall

PARIS_WINTER = timezone(timedelta(hours=1))


def _place(engine: Engine, sid: str, at: datetime) -> None:
    with session_scope(engine) as session:
        session.add(
            SimulatedCall(
                sid=sid,
                session_id=uuid.uuid4(),
                attempt_tag=f"{sid}.1",
                to_number="+12025550100",
                from_number="+12025550199",
                created_at=at,
            )
        )


def test_values_read_back_aware_in_utc(engine: Engine) -> None:
    _place(engine, "offset", datetime(2026, 1, 1, 10, 0, tzinfo=PARIS_WINTER))
    _place(engine, "naive", datetime(2026, 1, 1, 9, 30))  # naive is taken to be UTC
    with Session(engine) as session:
        offset = session.get(SimulatedCall, "offset")
        naive = session.get(SimulatedCall, "naive")
        earliest = session.exec(select(func.min(SimulatedCall.created_at))).one()
    assert offset is not None and naive is not None
    assert offset.created_at == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert offset.created_at.tzinfo is UTC and naive.created_at.tzinfo is UTC
    assert naive.created_at == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    assert earliest == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def test_comparisons_are_between_instants(engine: Engine) -> None:
    _place(engine, "nine", datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
    bounds = [
        datetime(2026, 1, 1, 9, 30, tzinfo=PARIS_WINTER),  # 08:30 UTC
        datetime(2026, 1, 1, 8, 30),  # naive: UTC
    ]
    with Session(engine) as session:
        for bound in bounds:
            after = select(SimulatedCall.sid).where(col(SimulatedCall.created_at) >= bound)
            before = select(SimulatedCall.sid).where(col(SimulatedCall.created_at) < bound)
            assert session.exec(after).all() == ["nine"]
            assert session.exec(before).all() == []
