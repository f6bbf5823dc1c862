"""Readers of what the database holds: session rows, timelines, the simulated carrier's ledger."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from contracts.calls import TERMINAL
from store.models import ApiKey, CallEvent, CallSession, PhoneNumber, SimulatedCall


def session_row(engine: Engine, session_id: str | uuid.UUID) -> CallSession | None:
    with Session(engine) as session:
        return session.get(CallSession, uuid.UUID(str(session_id)))


def stored_row(engine: Engine, session_id: str | uuid.UUID) -> CallSession:
    """The session row, which must exist."""
    row = session_row(engine, session_id)
    assert row is not None, f"no session row {session_id}"
    return row


def sessions_of(engine: Engine, user_id: uuid.UUID) -> list[CallSession]:
    with Session(engine) as session:
        return list(session.exec(select(CallSession).where(CallSession.user_id == user_id)).all())


def events_of(engine: Engine, session_id: str | uuid.UUID) -> list[CallEvent]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(CallEvent)
                .where(CallEvent.session_id == uuid.UUID(str(session_id)))
                .order_by(col(CallEvent.id))
            ).all()
        )


def dial_count(engine: Engine, session_id: str | uuid.UUID) -> int:
    """Calls the simulated carrier placed for one session (its ledger, not our own rows)."""
    with Session(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(SimulatedCall)
            .where(SimulatedCall.session_id == uuid.UUID(str(session_id)))
        ).one()


def table_counts(engine: Engine) -> dict[str, int]:
    """Row counts of the tables a request could write to: proof that nothing was written."""
    with Session(engine) as session:
        return {
            model.__tablename__: session.exec(select(func.count()).select_from(model)).one()
            for model in (CallSession, CallEvent, SimulatedCall, PhoneNumber, ApiKey)
        }


def every_table_count(engine: Engine) -> dict[str, int]:
    """Row counts of every table of the schema: proof that a refused request wrote nothing,
    wherever it would have written (campaigns, mappings, agents, suppressions, ...)."""
    with Session(engine) as session:
        return {
            table.name: session.exec(select(func.count()).select_from(table)).one()
            for table in SQLModel.metadata.sorted_tables
        }


def is_terminal(row: CallSession | None) -> bool:
    return row is not None and row.status in TERMINAL


def terminal_row(engine: Engine, session_id: str | uuid.UUID) -> Callable[[], CallSession | None]:
    """A predicate for wait_until: the session row once it is terminal."""

    def check() -> CallSession | None:
        row = session_row(engine, session_id)
        return row if is_terminal(row) else None

    return check
