"""The store under concurrent writers: a retried or duplicated activity never writes a second
row, and neither writer fails. Runs on SQLite and on PostgreSQL (`database_url`)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import ColumnElement, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from contracts.calls import (
    CreateCallInput,
    FailureCode,
    PersistSessionInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from store import calls, lifecycle
from store.db import make_engine, session_scope
from store.models import CallEvent, CallSession
from tests.support.accounts import make_account

THREADS = 12
T = TypeVar("T")


def _together(fn: Callable[[int], T], n: int = THREADS) -> list[T]:
    """Run `fn(i)` in n threads released at the same instant, so their writes overlap."""
    gate = threading.Barrier(n)

    def run(i: int) -> T:
        gate.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _call(user_id: uuid.UUID) -> CreateCallInput:
    return CreateCallInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=str(user_id),
        phone_number="+12025550100",
        request_hash="h" * 64,
    )


def _ok() -> ValidationResult:
    return ValidationResult(ok=True, target_number="+12025550100", from_number="+12025550199")


# SQLModel types `Model.column == value` as bool, SQLAlchemy as a ColumnElement.
def _count(engine: Engine, model: type[SQLModel], *where: ColumnElement[bool] | bool) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def _pooled(database_url: str) -> Engine:
    # A pool as large as the writers, so every thread holds its own connection at once.
    return make_engine(database_url, pool_size=THREADS, max_overflow=0)


def test_concurrent_persist_session_writes_one_row(database_url: str) -> None:
    engine = _pooled(database_url)
    try:
        call = _call(make_account(engine).user.id)
        results = _together(
            lambda _: calls.persist_session(
                engine, PersistSessionInput(call=call, validation=_ok())
            )
        )
        sid = uuid.UUID(call.call_session_id)
        assert _count(engine, CallSession, CallSession.id == sid) == 1
        assert _count(engine, CallEvent, CallEvent.session_id == sid) == 1
        assert {r.status for r in results} == {"accepted"}
        assert not any(r.already_terminal for r in results)
    finally:
        engine.dispose()


def test_concurrent_same_event_key_lands_once(database_url: str) -> None:
    engine = _pooled(database_url)
    try:
        call = _call(make_account(engine).user.id)
        calls.persist_session(engine, PersistSessionInput(call=call, validation=_ok()))
        sid = uuid.UUID(call.call_session_id)

        keys = [f"attempt:{n}:placed" for n in range(1, 4)]
        for key in keys:  # a few rounds: each is one chance for the writers to collide

            def append(i: int, key: str = key) -> None:
                with session_scope(engine) as session:
                    calls.add_event(session, sid, key, "dial_attempt", writer=i)

            _together(append)
        with Session(engine) as session:
            written = session.exec(
                select(CallEvent.key).where(CallEvent.session_id == sid, CallEvent.key != "created")
            ).all()
        assert sorted(written) == keys
    finally:
        engine.dispose()


def test_concurrent_outcomes_keep_the_first_terminal_status(database_url: str) -> None:
    """Two outcomes racing (a retried record after a worker crash): the row takes exactly one
    of them, and each outcome event lands once."""
    engine = _pooled(database_url)
    try:
        call = _call(make_account(engine).user.id)
        calls.persist_session(engine, PersistSessionInput(call=call, validation=_ok()))

        def record(i: int) -> None:
            status, leg = (
                (SessionStatus.SUCCESS, f"CA{i:032d}") if i % 2 else (SessionStatus.FAILED, None)
            )
            lifecycle.record_outcome_and_statuses(
                engine,
                RecordOutcomeInput(
                    call_session_id=call.call_session_id,
                    status=status,
                    attempts=1,
                    telephony_leg_id=leg,
                    failure_code=None if leg else FailureCode.RETRIES_EXHAUSTED,
                ),
            )

        _together(record)
        sid = uuid.UUID(call.call_session_id)
        with Session(engine) as session:
            row = session.get(CallSession, sid)
            assert row is not None
            events = session.exec(
                select(CallEvent).where(CallEvent.session_id == sid, CallEvent.type != "created")
            ).all()
        # The row is consistent with one writer: a success has its leg id, a failure none.
        assert (row.status == "success") == (row.telephony_leg_id is not None)
        assert sorted(e.key for e in events) == ["outcome:failed", "outcome:success"]
    finally:
        engine.dispose()


def test_racing_writers_of_a_terminal_row_see_it_as_terminal(database_url: str) -> None:
    """A session recorded as failed (e.g. by the API, Temporal unreachable) by several racing
    writers: exactly one inserted it; every other one, whether it found the row or lost the
    insert race, must report it as already terminal, so a workflow run does not dial."""
    engine = _pooled(database_url)
    try:
        call = _call(make_account(engine).user.id)
        failed = ValidationResult(ok=False, failure_code=FailureCode.ORCHESTRATOR_UNAVAILABLE)
        results = _together(
            lambda _: calls.persist_session(
                engine, PersistSessionInput(call=call, validation=failed)
            )
        )
        assert {r.status for r in results} == {SessionStatus.FAILED}
        assert {r.failure_code for r in results} == {FailureCode.ORCHESTRATOR_UNAVAILABLE}
        assert sum(not r.already_terminal for r in results) == 1
    finally:
        engine.dispose()
