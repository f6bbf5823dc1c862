"""The simulated carrier's ledger in the application database (the `simulated_calls` table):
durable and shared by every process, like a real carrier's records, so reconciliation after a
lost answer and the one-dial-per-session checks work across worker restarts.

Implements telephony.simulated.SimulatedLedger; the carrier itself knows nothing of the
database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import session_scope
from store.models import SimulatedCall


class DatabaseLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        *,
        sid: str,
        call_session_id: str,
        attempt_tag: str,
        to_number: str,
        from_number: str,
        placed_at: datetime,
    ) -> SimulatedCall:
        row = SimulatedCall(
            created_at=placed_at,
            sid=sid,
            session_id=uuid.UUID(call_session_id),
            attempt_tag=attempt_tag,
            to_number=to_number,
            from_number=from_number,
        )
        with session_scope(self._engine) as session:
            session.add(row)
        return row

    def first_placed(self, attempt_tags: Sequence[str]) -> SimulatedCall | None:
        with Session(self._engine) as session:
            return session.exec(
                select(SimulatedCall)
                .where(col(SimulatedCall.attempt_tag).in_(attempt_tags))
                .order_by(col(SimulatedCall.created_at))
            ).first()

    def get(self, sid: str) -> SimulatedCall | None:
        with Session(self._engine) as session:
            return session.get(SimulatedCall, sid)

    def count(self, call_session_id: str) -> int:
        with Session(self._engine) as session:
            return session.exec(
                select(func.count())
                .select_from(SimulatedCall)
                .where(SimulatedCall.session_id == uuid.UUID(call_session_id))
            ).one()

    def finish(
        self, *, sid: str, status: str, ended_at: datetime, duration_seconds: int | None
    ) -> None:
        # Only the first end counts: a carrier's record of a call does not change afterwards.
        with session_scope(self._engine) as session:
            session.exec(
                update(SimulatedCall)
                .where(col(SimulatedCall.sid) == sid, col(SimulatedCall.ended_at).is_(None))
                .values(status=status, ended_at=ended_at, duration_seconds=duration_seconds)
            )
