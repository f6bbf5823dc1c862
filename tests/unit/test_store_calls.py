"""store.calls against a real, migrated database (SQLite, then PostgreSQL): validation of a
call against the user's mappings, and the idempotent writes of the session and its events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.calls import CallActivities
from contracts.calls import (
    AttemptResult,
    CallStatusUpdate,
    CreateCallInput,
    FailureCode,
    PersistSessionInput,
    RecordAttemptInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from contracts.webhooks import call_stream
from store import accounts, calls, crud, lifecycle, webhooks
from store.db import session_scope
from store.models import (
    Agent,
    CallSession,
    Flow,
    LineMapping,
    PhoneNumber,
    SuppressedNumber,
    User,
    WebhookDelivery,
)
from store.simulated_ledger import DatabaseLedger
from telephony.registry import ProviderRegistry
from telephony.simulated import SimulatedProvider
from tests.support.rows import events_of

TARGET = "+12025550100"
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


# --- fixtures and builders --------------------------------------------------------------------


@dataclass
class Owner:
    engine: Engine
    user: User

    def line(
        self, number: str, *, created: int = 0, active: bool = True, provider: str = "simulated"
    ) -> PhoneNumber:
        """A line created `created` minutes after T0 (explicit, so the order is not luck)."""
        row = PhoneNumber(
            user_id=self.user.id,
            number=number,
            active=active,
            provider=provider,
            created_at=T0 + timedelta(minutes=created),
        )
        with session_scope(self.engine) as session:
            session.add(row)
        return row

    def agent(self, line: PhoneNumber | None = None) -> Agent:
        row = Agent(user_id=self.user.id, name="agent")
        with session_scope(self.engine) as session:
            session.add(row)
            session.flush()
            if line is not None:
                session.add(
                    LineMapping(user_id=self.user.id, phone_number_id=line.id, agent_id=row.id)
                )
        return row

    def flow(self, line: PhoneNumber | None = None) -> Flow:
        row = Flow(user_id=self.user.id, name="flow")
        with session_scope(self.engine) as session:
            session.add(row)
            session.flush()
            if line is not None:
                session.add(
                    LineMapping(user_id=self.user.id, phone_number_id=line.id, flow_id=row.id)
                )
        return row

    def suppress(self, number: str) -> None:
        with session_scope(self.engine) as session:
            session.add(SuppressedNumber(user_id=self.user.id, number=number))

    def call(self, phone_number: str = TARGET, /, **ids: object) -> CreateCallInput:
        return CreateCallInput(
            call_session_id=str(uuid.uuid4()),
            request_id=str(uuid.uuid4()),
            user_id=str(self.user.id),
            phone_number=phone_number,
            request_hash="h" * 64,
            agent_id=str(ids["agent"]) if ids.get("agent") else None,
            flow_id=str(ids["flow"]) if ids.get("flow") else None,
            phone_number_id=str(ids["line"]) if ids.get("line") else None,
        )

    def validate(self, phone_number: str = TARGET, /, **ids: object) -> ValidationResult:
        return calls.validate_call(self.engine, self.call(phone_number, **ids), "US")


def new_owner(engine: Engine) -> Owner:
    return Owner(engine, crud.create_user(engine=engine, email=f"{uuid.uuid4().hex}@x.test"))


@pytest.fixture
def me(engine: Engine) -> Owner:
    return new_owner(engine)


@pytest.fixture
def other(engine: Engine) -> Owner:
    return new_owner(engine)


def sessions(engine: Engine, session_id: str) -> list[CallSession]:
    with Session(engine) as session:
        return list(
            session.exec(select(CallSession).where(CallSession.id == uuid.UUID(session_id))).all()
        )


def row(engine: Engine, session_id: str) -> CallSession:
    (only,) = sessions(engine, session_id)
    return only


# --- validate_call: from-number resolution --------------------------------------------------


def test_valid_call_resolves_everything(me: Owner) -> None:
    line = me.line("+12025550199")
    result = me.validate("(202) 555-0100")
    assert result == ValidationResult(
        ok=True,
        target_number=TARGET,
        from_number="+12025550199",
        phone_number_id=str(line.id),
        provider="simulated",
    )


def test_explicit_line_wins_over_every_mapping(me: Owner) -> None:
    oldest = me.line("+12025550190", created=0)
    agent_line = me.line("+12025550191", created=1)
    flow_line = me.line("+12025550192", created=2)
    explicit = me.line("+12025550193", created=3, provider="twilio")
    agent, flow = me.agent(agent_line), me.flow(flow_line)
    result = me.validate(agent=agent.id, flow=flow.id, line=explicit.id)
    assert result.ok
    assert (result.from_number, result.phone_number_id) == ("+12025550193", str(explicit.id))
    assert result.provider == "twilio"
    assert oldest.number != result.from_number


def test_agent_line_wins_over_flow_line_and_default(me: Owner) -> None:
    me.line("+12025550190", created=0)
    agent_line = me.line("+12025550191", created=1)
    flow_line = me.line("+12025550192", created=2)
    agent, flow = me.agent(agent_line), me.flow(flow_line)
    assert me.validate(agent=agent.id, flow=flow.id).phone_number_id == str(agent_line.id)
    assert me.validate(agent=agent.id).phone_number_id == str(agent_line.id)


def test_flow_line_is_next_when_the_agent_has_none(me: Owner) -> None:
    me.line("+12025550190", created=0)
    flow_line = me.line("+12025550192", created=2)
    unmapped_agent, flow = me.agent(), me.flow(flow_line)
    assert me.validate(agent=unmapped_agent.id, flow=flow.id).phone_number_id == str(flow_line.id)
    assert me.validate(flow=flow.id).phone_number_id == str(flow_line.id)


def test_an_inactive_mapped_line_falls_through_to_the_next_rule(me: Owner) -> None:
    oldest = me.line("+12025550190", created=0)
    agent_line = me.line("+12025550191", created=1, active=False)
    flow_line = me.line("+12025550192", created=2)
    agent, flow = me.agent(agent_line), me.flow(flow_line)
    assert me.validate(agent=agent.id, flow=flow.id).phone_number_id == str(flow_line.id)
    assert me.validate(agent=agent.id).phone_number_id == str(oldest.id)


def test_default_is_the_first_active_line_by_creation_time(me: Owner) -> None:
    # Inserted newest first, so insertion order and creation order disagree.
    me.line("+12025550193", created=30)
    second = me.line("+12025550192", created=20)
    me.line("+12025550191", created=10, active=False)
    result = me.validate()
    assert result.ok and result.phone_number_id == str(second.id)
    assert result.from_number == "+12025550192"
    # Deterministic: asking again gives the same line.
    assert me.validate().phone_number_id == str(second.id)


def test_unmapped_agent_and_flow_use_the_default_line(me: Owner) -> None:
    line = me.line("+12025550199")
    assert me.validate(agent=me.agent().id, flow=me.flow().id).phone_number_id == str(line.id)


def test_another_users_lines_and_mappings_are_never_used(me: Owner, other: Owner) -> None:
    mine = me.line("+12025550199", created=50)
    other.line("+12025550188", created=0)
    assert me.validate().phone_number_id == str(mine.id)


# --- validate_call: failures, and foreign ids that look exactly like missing ones ------------


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("agent", FailureCode.AGENT_NOT_FOUND),
        ("flow", FailureCode.WORKFLOW_NOT_FOUND),
        ("line", FailureCode.PHONE_NUMBER_NOT_FOUND),
    ],
)
def test_a_foreign_id_gives_exactly_the_answer_of_a_missing_one(
    me: Owner, other: Owner, kind: str, code: str
) -> None:
    me.line("+12025550199")
    their_line = other.line("+12025550188")
    foreign = {
        "agent": lambda: other.agent(their_line).id,
        "flow": lambda: other.flow(their_line).id,
        "line": lambda: their_line.id,
    }[kind]()
    with_foreign = me.validate(**{kind: foreign})
    with_missing = me.validate(**{kind: uuid.uuid4()})
    assert with_foreign == with_missing
    assert with_foreign.ok is False
    assert with_foreign.failure_code == code
    assert with_foreign.from_number is None and with_foreign.phone_number_id is None
    assert str(foreign) not in (with_foreign.failure_reason or "")


def test_a_foreign_inactive_line_looks_missing_not_inactive(me: Owner, other: Owner) -> None:
    me.line("+12025550199")
    their_inactive = other.line("+12025550188", active=False)
    assert me.validate(line=their_inactive.id) == me.validate(line=uuid.uuid4())
    assert me.validate(line=their_inactive.id).failure_code == FailureCode.PHONE_NUMBER_NOT_FOUND


def test_an_inactive_explicit_line_is_refused_without_falling_back(me: Owner) -> None:
    me.line("+12025550190", created=0)
    inactive = me.line("+12025550191", created=1, active=False)
    result = me.validate(line=inactive.id)
    assert result.ok is False
    assert result.failure_code == FailureCode.PHONE_NUMBER_INACTIVE
    assert result.target_number == TARGET
    assert result.from_number is None


def test_no_line_at_all(me: Owner) -> None:
    result = me.validate()
    assert (result.ok, result.failure_code) == (False, FailureCode.NO_ACTIVE_LINE)
    assert result.target_number == TARGET
    assert result.failure_reason


def test_only_inactive_lines_is_no_active_line(me: Owner) -> None:
    line = me.line("+12025550199", active=False)
    agent = me.agent(line)
    for result in (me.validate(), me.validate(agent=agent.id)):
        assert (result.ok, result.failure_code) == (False, FailureCode.NO_ACTIVE_LINE)


def test_a_suppressed_number_is_refused_in_any_format(me: Owner) -> None:
    line = me.line("+12025550199")
    me.suppress(TARGET)
    for raw in (TARGET, "(202) 555-0100", "+1 202 555 0100"):
        result = me.validate(raw)
        assert (result.ok, result.failure_code) == (False, FailureCode.SUPPRESSED_NUMBER)
        # What was resolved is kept, so the failed session shows which line would have called.
        assert result.target_number == TARGET
        assert result.phone_number_id == str(line.id)
    assert me.validate("+12025550101").ok


def test_another_users_suppression_list_does_not_apply(me: Owner, other: Owner) -> None:
    me.line("+12025550199")
    other.suppress(TARGET)
    assert me.validate().ok


@pytest.mark.parametrize("raw", ["not a number", "+1 202 555 01", "", "+1" + "5" * 50])
def test_an_invalid_number_fails_before_anything_else(me: Owner, raw: str) -> None:
    me.line("+12025550199")
    result = me.validate(raw, agent=uuid.uuid4())  # even an unknown agent is not looked at
    assert (result.ok, result.failure_code) == (False, FailureCode.INVALID_NUMBER)
    assert result.target_number is None
    assert result.failure_reason and result.failure_reason.startswith("phone number")


# --- persist_session ------------------------------------------------------------------------


def test_persist_twice_writes_one_row_and_one_created_event(me: Owner) -> None:
    me.line("+12025550199")
    call = me.call()
    validation = calls.validate_call(me.engine, call, "US")
    first = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    again = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    assert first.status == again.status == "accepted"
    assert first.already_terminal is False and again.already_terminal is False
    stored = row(me.engine, call.call_session_id)
    assert stored.status == "accepted"
    assert (stored.target_number, stored.from_number) == (TARGET, "+12025550199")
    assert str(stored.request_id) == call.request_id
    assert str(stored.phone_number_id) == validation.phone_number_id
    assert [e.type for e in events_of(me.engine, call.call_session_id)] == ["created"]


def test_a_validation_failure_is_persisted_as_failed(me: Owner) -> None:
    call = me.call("garbage")
    validation = calls.validate_call(me.engine, call, "US")
    result = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    assert result.status == "failed"
    assert result.already_terminal is False  # this run wrote it: nothing was there before
    assert result.failure_code == FailureCode.INVALID_NUMBER
    stored = row(me.engine, call.call_session_id)
    assert (stored.status, stored.failure_code) == ("failed", FailureCode.INVALID_NUMBER)
    assert stored.requested_number == "garbage" and stored.target_number is None
    (created,) = events_of(me.engine, call.call_session_id)
    assert json.loads(created.detail or "{}")["failure_code"] == FailureCode.INVALID_NUMBER


def test_a_failure_with_unknown_ids_is_persisted_with_the_ids_as_given(
    me: Owner, other: Owner
) -> None:
    """Ids that do not exist (or are another user's) must not block the write: a write
    that cannot succeed would be retried by the workflow forever."""
    their_line = other.line("+12025550188")
    call = me.call(agent=uuid.uuid4(), flow=uuid.uuid4(), line=their_line.id)
    validation = calls.validate_call(me.engine, call, "US")
    assert validation.failure_code == FailureCode.AGENT_NOT_FOUND
    result = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    assert (result.status, result.failure_code) == ("failed", FailureCode.AGENT_NOT_FOUND)
    stored = row(me.engine, call.call_session_id)
    assert (str(stored.agent_id), str(stored.flow_id)) == (call.agent_id, call.flow_id)
    assert str(stored.phone_number_id) == str(their_line.id)
    assert stored.user_id == me.user.id


def test_a_terminal_row_already_there_wins(me: Owner) -> None:
    """The API recorded `orchestrator_unavailable`, then the workflow ran after all."""
    me.line("+12025550199")
    call = me.call()
    unavailable = ValidationResult(
        ok=False,
        target_number=TARGET,
        failure_code=FailureCode.ORCHESTRATOR_UNAVAILABLE,
        failure_reason="the call orchestrator is unreachable",
    )
    calls.persist_session(me.engine, PersistSessionInput(call=call, validation=unavailable))
    ok = calls.validate_call(me.engine, call, "US")
    assert ok.ok
    result = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=ok))
    assert result.already_terminal is True
    assert result.status == "failed"
    assert result.failure_code == FailureCode.ORCHESTRATOR_UNAVAILABLE
    assert result.failure_reason == "the call orchestrator is unreachable"
    stored = row(me.engine, call.call_session_id)
    assert (stored.status, stored.failure_code) == ("failed", FailureCode.ORCHESTRATOR_UNAVAILABLE)
    assert stored.from_number is None  # the later, successful validation changed nothing
    assert len(events_of(me.engine, call.call_session_id)) == 1


def test_a_successful_row_already_there_reports_its_leg(me: Owner) -> None:
    me.line("+12025550199")
    call = me.call()
    validation = calls.validate_call(me.engine, call, "US")
    calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    lifecycle.record_outcome_and_statuses(
        me.engine,
        RecordOutcomeInput(
            call_session_id=call.call_session_id,
            status=SessionStatus.SUCCESS,
            attempts=1,
            telephony_leg_id="L1",
        ),
    )
    result = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    assert (result.already_terminal, result.status, result.telephony_leg_id) == (
        True,
        "success",
        "L1",
    )


def test_a_non_terminal_row_already_there_is_not_terminal(me: Owner) -> None:
    me.line("+12025550199")
    call = me.call()
    validation = calls.validate_call(me.engine, call, "US")
    calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    calls.record_attempt(
        me.engine,
        RecordAttemptInput(
            call_session_id=call.call_session_id, attempt=1, result=AttemptResult.NOT_PLACED
        ),
    )
    result = calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    assert (result.already_terminal, result.status) == (False, "accepted")
    assert row(me.engine, call.call_session_id).attempts == 1


# --- record_attempt / record_outcome --------------------------------------------------------


@pytest.fixture
def accepted(me: Owner) -> str:
    """An accepted session; returns its id."""
    me.line("+12025550199")
    call = me.call()
    validation = calls.validate_call(me.engine, call, "US")
    calls.persist_session(me.engine, PersistSessionInput(call=call, validation=validation))
    return call.call_session_id


def attempt(
    session_id: str, n: int, result: AttemptResult, **extra: str | None
) -> RecordAttemptInput:
    return RecordAttemptInput(call_session_id=session_id, attempt=n, result=result, **extra)


def test_record_attempt_is_idempotent(me: Owner, accepted: str) -> None:
    first = attempt(
        accepted, 1, AttemptResult.NOT_PLACED, provider_error_code="20429", detail="Too Many"
    )
    calls.record_attempt(me.engine, first)
    calls.record_attempt(me.engine, first)
    calls.record_attempt(me.engine, attempt(accepted, 2, AttemptResult.AMBIGUOUS))
    calls.record_attempt(me.engine, attempt(accepted, 2, AttemptResult.RECONCILED_NOT_FOUND))
    calls.record_attempt(me.engine, attempt(accepted, 2, AttemptResult.AMBIGUOUS))
    timeline = events_of(me.engine, accepted)
    assert [e.type for e in timeline] == ["created"] + ["dial_attempt"] * 3
    assert [json.loads(e.detail or "{}").get("result") for e in timeline[1:]] == [
        "not_placed",
        "ambiguous",
        "reconciled_not_found",
    ]
    assert json.loads(timeline[1].detail or "{}")["provider_error_code"] == "20429"
    stored = row(me.engine, accepted)
    assert stored.attempts == 2 and stored.status == "accepted"


def test_a_late_attempt_never_lowers_the_count(me: Owner, accepted: str) -> None:
    calls.record_attempt(me.engine, attempt(accepted, 3, AttemptResult.NOT_PLACED))
    calls.record_attempt(me.engine, attempt(accepted, 1, AttemptResult.NOT_PLACED))
    assert row(me.engine, accepted).attempts == 3


def test_record_outcome_is_idempotent(me: Owner, accepted: str) -> None:
    outcome = RecordOutcomeInput(
        call_session_id=accepted, status=SessionStatus.SUCCESS, attempts=2, telephony_leg_id="LEG-1"
    )
    lifecycle.record_outcome_and_statuses(me.engine, outcome)
    lifecycle.record_outcome_and_statuses(me.engine, outcome)
    stored = row(me.engine, accepted)
    assert (stored.status, stored.telephony_leg_id, stored.attempts) == ("success", "LEG-1", 2)
    assert stored.dialed_at is not None and stored.failure_code is None
    assert [e.type for e in events_of(me.engine, accepted)] == ["created", "success"]


def test_a_failed_outcome_records_its_codes(me: Owner, accepted: str) -> None:
    lifecycle.record_outcome_and_statuses(
        me.engine,
        RecordOutcomeInput(
            call_session_id=accepted,
            status=SessionStatus.FAILED,
            attempts=1,
            failure_code=FailureCode.PROVIDER_REJECTED,
            failure_reason="invalid destination",
            provider_error_code="21211",
        ),
    )
    stored = row(me.engine, accepted)
    assert (stored.status, stored.failure_code, stored.provider_error_code) == (
        "failed",
        FailureCode.PROVIDER_REJECTED,
        "21211",
    )
    assert stored.telephony_leg_id is None and stored.dialed_at is None


@pytest.mark.parametrize("first", [SessionStatus.SUCCESS, SessionStatus.FAILED])
def test_a_terminal_row_is_never_overwritten(
    me: Owner, accepted: str, first: SessionStatus
) -> None:
    lifecycle.record_outcome_and_statuses(
        me.engine,
        RecordOutcomeInput(
            call_session_id=accepted,
            status=first,
            attempts=1,
            telephony_leg_id="LEG-1" if first == "success" else None,
            failure_code=None if first == "success" else FailureCode.RETRIES_EXHAUSTED,
            failure_reason=None if first == "success" else "gave up",
        ),
    )
    before = row(me.engine, accepted)
    lifecycle.record_outcome_and_statuses(
        me.engine,
        RecordOutcomeInput(
            call_session_id=accepted,
            status=SessionStatus.FAILED if first == "success" else SessionStatus.SUCCESS,
            attempts=4,
            telephony_leg_id=None if first == "success" else "LEG-2",
            failure_code=FailureCode.PROVIDER_REJECTED if first == "success" else None,
            provider_error_code="21211" if first == "success" else None,
        ),
    )
    calls.record_attempt(me.engine, attempt(accepted, 1, AttemptResult.AMBIGUOUS))
    after = row(me.engine, accepted)
    for field in (
        "status",
        "telephony_leg_id",
        "failure_code",
        "failure_reason",
        "provider_error_code",
        "dialed_at",
    ):
        assert getattr(after, field) == getattr(before, field), field
    assert after.status == first


@pytest.mark.parametrize(
    "write",
    [
        lambda engine, sid: calls.record_attempt(engine, attempt(sid, 1, AttemptResult.NOT_PLACED)),
        lambda engine, sid: lifecycle.record_outcome_and_statuses(
            engine,
            RecordOutcomeInput(call_session_id=sid, status=SessionStatus.SUCCESS, attempts=1),
        ),
    ],
    ids=["record_attempt", "record_outcome"],
)
def test_writes_for_an_unknown_session_fail_loudly(
    engine: Engine, write: Callable[[Engine, str], object]
) -> None:
    sid = str(uuid.uuid4())
    with pytest.raises(LookupError):
        write(engine, sid)
    assert sessions(engine, sid) == [] and events_of(engine, sid) == []


# --- the local activities that wrap these writes ---------------------------------------------


def activities(engine: Engine) -> CallActivities:
    carrier = SimulatedProvider(DatabaseLedger(engine), latency_ms=0)
    providers = ProviderRegistry({"simulated": carrier}, "simulated")
    return CallActivities(engine, providers, "US")


async def test_prepare_call_validates_then_persists_once(me: Owner) -> None:
    me.line("+12025550199", provider="legacy-carrier")  # not configured: the default dials
    call = me.call("(202) 555-0100")
    first = await activities(me.engine).prepare_call(call)
    again = await activities(me.engine).prepare_call(call)
    for prepared in (first, again):
        assert prepared.validation.ok and prepared.validation.target_number == TARGET
        assert prepared.validation.provider == "simulated"
        assert (prepared.stored.status, prepared.stored.already_terminal) == ("accepted", False)
    stored = row(me.engine, call.call_session_id)
    assert (stored.target_number, stored.provider) == (TARGET, "simulated")
    assert [e.type for e in events_of(me.engine, call.call_session_id)] == ["created"]


async def test_prepare_call_run_again_counts_the_call_once_in_its_rate(me: Owner) -> None:
    """A worker crash before prepare_call's result was recorded runs it again: the call was
    counted in its account's calls per second the first time and must not be refused (nor
    use up the window) the second."""
    me.line("+12025550199")
    accounts.set_limits(me.engine, me.user.id, max_calls_per_second=0.1)  # 1 per 10 s
    call = me.call("(202) 555-0100")
    steps = activities(me.engine)
    for _ in range(2):
        prepared = await steps.prepare_call(call)
        assert prepared.validation.ok, prepared.validation.failure_reason
    assert not prepared.stored.created  # the second run found the row
    # A second call within the 10 s is the one beyond the rate.
    later = await steps.prepare_call(me.call("(202) 555-0100"))
    assert later.validation.failure_code == FailureCode.CALLS_PER_SECOND_LIMIT


async def test_prepare_call_persists_a_refused_call_as_failed(me: Owner) -> None:
    call = me.call()  # the user has no line at all
    prepared = await activities(me.engine).prepare_call(call)
    assert not prepared.validation.ok
    assert prepared.validation.failure_code == FailureCode.NO_ACTIVE_LINE
    assert row(me.engine, call.call_session_id).status == "failed"


async def test_record_outcome_writes_the_statuses_that_came_with_the_dial(
    me: Owner, accepted: str
) -> None:
    outcome = RecordOutcomeInput(
        call_session_id=accepted,
        status=SessionStatus.SUCCESS,
        attempts=1,
        telephony_leg_id="LEG-1",
        statuses=[
            CallStatusUpdate(status=s, telephony_leg_id="LEG-1", duration_seconds=d)
            for s, d in (("initiated", None), ("ringing", None), ("completed", 12))
        ],
    )
    await activities(me.engine).record_outcome(outcome)
    await activities(me.engine).record_outcome(outcome)  # a retry writes nothing twice
    stored = row(me.engine, accepted)
    assert (stored.status, stored.call_status, stored.duration_seconds) == (
        "success",
        "completed",
        12,
    )
    assert [e.type for e in events_of(me.engine, accepted)] == ["created", "success"] + [
        "call_status"
    ] * 3


def _statements(engine: Engine) -> list[str]:
    """The SQL the engine runs from now on (a listener; SQLAlchemy keeps it for the engine)."""
    seen: list[str] = []

    def note(*args: object) -> None:
        seen.append(" ".join(str(args[2]).split()))

    event.listen(engine, "before_cursor_execute", note)
    return seen


def test_an_outcome_with_its_statuses_reads_row_and_endpoints_once(
    me: Owner, accepted: str
) -> None:
    """The dial's outcome and the three statuses that came with it: one read of the session
    row (after its UPDATE) and one of the user's webhook endpoints for all four customer
    events (each read per event used to flush and read again), and every event still
    reaches the endpoint. Statements per call are CPU per call (bench/notes.md)."""
    webhooks.create_endpoint(
        me.engine,
        webhooks.EndpointSpec(
            user_id=me.user.id,
            url="https://example.test/hook",
            events=None,
            description=None,
            include_phone_numbers=False,
            sealed_secret="sealed",
        ),
    )
    outcome = RecordOutcomeInput(
        call_session_id=accepted,
        status=SessionStatus.SUCCESS,
        attempts=1,
        telephony_leg_id="LEG-1",
        statuses=[
            CallStatusUpdate(status=s, telephony_leg_id="LEG-1", duration_seconds=d)
            for s, d in (("ringing", None), ("answered", None), ("completed", 12))
        ],
    )
    seen = _statements(me.engine)
    lifecycle.record_outcome_and_statuses(me.engine, outcome)
    selects = [s for s in seen if s.startswith("SELECT")]
    assert len([s for s in selects if "FROM call_sessions" in s]) == 1, selects
    assert len([s for s in selects if "FROM webhook_endpoints" in s]) == 1, selects
    with Session(me.engine) as session:
        types = session.exec(
            select(WebhookDelivery.event_type).where(
                WebhookDelivery.call_session_id == uuid.UUID(accepted)
            )
        ).all()
    assert sorted(types) == ["call.answered", "call.dialed", "call.ended", "call.ringing"]
    assert row(me.engine, accepted).call_status == "completed"


def test_an_outcome_for_a_missing_session_still_fails_loudly(me: Owner) -> None:
    """The UPDATE comes first now: when it matches nothing, the row is looked for."""
    missing = RecordOutcomeInput(
        call_session_id=str(uuid.uuid4()), status=SessionStatus.SUCCESS, attempts=1
    )
    with pytest.raises(LookupError):
        lifecycle.record_outcome_and_statuses(me.engine, missing)


async def test_prepare_call_reads_the_account_once_without_a_concurrency_limit(me: Owner) -> None:
    """An account without max_concurrent_calls has nothing to count: prepare_call reads its
    limits once and does not open another session to count its calls in flight."""
    me.line("+12025550199")
    seen = _statements(me.engine)
    prepared = await activities(me.engine).prepare_call(me.call())
    assert prepared.validation.ok
    users = [s for s in seen if s.startswith("SELECT") and "FROM users" in s]
    assert len(users) == 1, users
    assert not [s for s in seen if "count(" in s.lower()], seen


class _Kicks:
    """A WebhookKicker that notes the streams it was handed."""

    def __init__(self) -> None:
        self.streams: list[str] = []

    async def kick(self, streams: Sequence[str]) -> None:
        self.streams += streams


async def test_record_outcome_hands_over_events_only_when_it_wrote_one(
    me: Owner, accepted: str
) -> None:
    """The kick after an outcome reads the stream's pending deliveries (a statement and a
    thread per call): a user without webhook endpoints has none, so nothing is read; one
    with an endpoint has the stream handed over as before."""
    kicks = _Kicks()
    carrier = SimulatedProvider(DatabaseLedger(me.engine), latency_ms=0)
    steps = CallActivities(
        me.engine, ProviderRegistry({"simulated": carrier}, "simulated"), "US", webhooks=kicks
    )
    outcome = RecordOutcomeInput(
        call_session_id=accepted, status=SessionStatus.SUCCESS, attempts=1, telephony_leg_id="L"
    )
    await steps.record_outcome(outcome)
    assert kicks.streams == []
    webhooks.create_endpoint(
        me.engine,
        webhooks.EndpointSpec(
            user_id=me.user.id,
            url="https://example.test/hook",
            events=None,
            description=None,
            include_phone_numbers=False,
            sealed_secret="sealed",
        ),
    )
    second = me.call()
    validation = calls.validate_call(me.engine, second, "US")
    calls.persist_session(me.engine, PersistSessionInput(call=second, validation=validation))
    await steps.record_outcome(replace(outcome, call_session_id=second.call_session_id))
    assert kicks.streams == [call_stream(second.call_session_id)]
