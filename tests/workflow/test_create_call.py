"""CreateCallWorkflow on the time-skipping server, with fake activities under the real names.

Assertions are on what the update answered, what the fakes were asked, and the history, so
they hold however the run continues after the dial."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.calls import (
    PACED_CODE,
    DialInput,
    DialResult,
    DialSlot,
    ErrorType,
    FailureCode,
    PersistSessionResult,
    SessionStatus,
    Stage,
    ValidationResult,
)
from contracts.search_attributes import SA_CALL_STATUS, SA_PROVIDER, SA_REQUEST_ID, SA_USER_ID
from tests.workflow.harness import (
    FROM,
    PHONE_DIGITS,
    TARGET,
    DialStep,
    Fakes,
    Run,
    ambiguous,
    gated,
    hangs,
    not_placed,
    placed,
    rejected,
    running,
)
from workflows.create_call import MAX_PACED_REFUSALS

# --- the happy path, for both wait stages ---------------------------------------------------


async def test_accepted_answers_before_the_dial_finishes(ts_env: WorkflowEnvironment) -> None:
    gate = asyncio.Event()
    fakes = Fakes(default_dial=gated(gate, placed()))
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.ACCEPTED)

        assert state.status == "accepted" and state.stage == "accepted"
        assert state.call_session_id == run.call.call_session_id
        assert state.request_id == run.call.request_id
        assert state.user_id == run.call.user_id
        assert (state.target_number, state.from_phone_number) == (TARGET, FROM)
        assert state.telephony_leg_id is None and state.failure_code is None
        # Validated and persisted before the answer; the dial has not come back.
        assert len(fakes.validations) == 1 and len(fakes.persists) == 1
        assert fakes.persists[0].validation == fakes.validation
        assert fakes.outcomes == []

        gate.set()
        await run.finish()

    assert fakes.dial_attempts == [1]
    assert fakes.outcome.status == "success"
    assert fakes.outcome.telephony_leg_id == "LEG-1"
    assert fakes.outcome.attempts == 1
    assert fakes.reconciles == [] and fakes.attempts == []


async def test_dialed_answers_with_the_leg_id(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)

        assert state.status == "success" and state.stage == "dialed"
        assert state.telephony_leg_id == "LEG-1"
        assert (state.target_number, state.from_phone_number) == (TARGET, FROM)
        assert state.failure_code is None and state.attempts == 1
        # The leg id is durable before any client hears of it.
        assert fakes.outcome.telephony_leg_id == "LEG-1"
        await run.finish()

    dial = fakes.dials[0]
    assert (dial.to_number, dial.from_number, dial.provider) == (TARGET, FROM, "simulated")
    assert dial.call_session_id == run.call.call_session_id
    assert fakes.dial_attempts == [1]


# --- provider answers ----------------------------------------------------------------------


async def test_provider_rejection_fails_with_its_code_after_one_dial(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(default_dial=rejected("21211", "The 'To' number is not valid"))
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)
        assert state.status == "failed"
        assert state.failure_code == FailureCode.PROVIDER_REJECTED
        assert state.provider_error_code == "21211"
        assert state.failure_reason == "The 'To' number is not valid"
        assert state.telephony_leg_id is None
        final = await run.finish()
        assert await run.scheduled("dial") == 1

    assert final.status == "failed" and final.failure_code == FailureCode.PROVIDER_REJECTED
    assert fakes.dial_attempts == [1]
    assert fakes.reconciles == []
    outcome = fakes.outcome
    assert (outcome.status, outcome.failure_code, outcome.provider_error_code) == (
        "failed",
        FailureCode.PROVIDER_REJECTED,
        "21211",
    )


async def test_the_providers_own_words_go_to_the_timeline_and_the_reason_stays_neutral(
    ts_env: WorkflowEnvironment,
) -> None:
    # As activities/dialing.py answers: a neutral message, the provider's words beside it.
    async def limited(fakes: Fakes, dial: DialInput) -> DialResult:
        raise ApplicationError(
            "the carrier is limiting the rate of requests",
            "20429",
            0.0,
            "Too Many Requests",
            type=ErrorType.DIAL_NOT_PLACED,
            non_retryable=True,
        )

    async def refused(fakes: Fakes, dial: DialInput) -> DialResult:
        return DialResult(
            placed=False,
            provider_error_code="21210",
            reason="the carrier refused the request",
            provider_message="The source phone number is not yet verified",
        )

    fakes = Fakes(dial_steps={1: limited}, default_dial=refused)
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)
        await run.finish()

    assert state.failure_reason == "the carrier refused the request"
    (attempt,) = fakes.attempts
    assert attempt.detail == "the carrier is limiting the rate of requests"
    assert attempt.provider_message == "Too Many Requests"
    outcome = fakes.outcome
    assert outcome.failure_reason == "the carrier refused the request"
    assert outcome.provider_message == "The source phone number is not yet verified"


async def test_two_not_placed_then_success_waits_1s_then_2s(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(dial_steps={1: not_placed(), 2: not_placed()})
    async with running(ts_env, fakes) as run:
        await run.create()
        final = await run.finish()
        assert await run.backoff_timers() == [1.0, 2.0]
        assert await run.scheduled("dial") == 3

    assert fakes.dial_attempts == [1, 2, 3]
    assert [(a.attempt, a.result) for a in fakes.attempts] == [
        (1, "not_placed"),
        (2, "not_placed"),
    ]
    assert fakes.attempts[0].provider_error_code == "connect"
    assert fakes.reconciles == []  # provably not placed: nothing to look up
    assert (fakes.outcome.status, fakes.outcome.attempts) == ("success", 3)
    assert fakes.outcome.telephony_leg_id == "LEG-3" == final.telephony_leg_id
    assert final.status == "success"


@pytest.mark.parametrize(
    ("backoff_initial", "retry_after", "expected_wait"),
    [
        (1.0, 7.0, 7.0),  # the provider asks for longer than the backoff: honoured
        (4.0, 1.0, 4.0),  # the backoff is longer: the backoff wins
    ],
)
async def test_rate_limited_waits_the_longer_of_retry_after_and_backoff(
    ts_env: WorkflowEnvironment, backoff_initial: float, retry_after: float, expected_wait: float
) -> None:
    fakes = Fakes(dial_steps={1: not_placed("20429", retry_after=retry_after)})
    async with running(ts_env, fakes, backoff_initial_seconds=backoff_initial) as run:
        await run.create()
        await run.finish()
        assert await run.backoff_timers() == [expected_wait]

    assert fakes.dial_attempts == [1, 2]
    assert [(a.attempt, a.result, a.provider_error_code) for a in fakes.attempts] == [
        (1, "not_placed", "20429")
    ]
    assert (fakes.outcome.status, fakes.outcome.attempts) == ("success", 2)


async def test_not_placed_on_every_attempt_exhausts_exactly_max_attempts(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(default_dial=not_placed("connect"))
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)
        final = await run.finish()
        # 1 s doubling, and no wait after the last attempt.
        assert await run.backoff_timers() == [1.0, 2.0, 4.0, 8.0]
        assert await run.scheduled("dial") == 5

    assert fakes.dial_attempts == [1, 2, 3, 4, 5]
    assert [a.attempt for a in fakes.attempts] == [1, 2, 3, 4, 5]
    assert fakes.reconciles == []
    for answer in (state, final):
        assert answer.status == "failed"
        assert answer.failure_code == FailureCode.RETRIES_EXHAUSTED
    outcome = fakes.outcome
    assert (outcome.status, outcome.failure_code, outcome.attempts) == (
        "failed",
        FailureCode.RETRIES_EXHAUSTED,
        5,
    )
    assert outcome.provider_error_code == "connect"
    assert outcome.failure_reason and "5 attempts" in outcome.failure_reason


async def test_backoff_is_capped_and_max_attempts_is_the_policys(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(default_dial=not_placed())
    async with running(
        ts_env, fakes, max_attempts=6, backoff_initial_seconds=2.0, backoff_max_seconds=5.0
    ) as run:
        await run.create()
        await run.finish()
        assert await run.backoff_timers() == [2.0, 4.0, 5.0, 5.0, 5.0]

    assert fakes.dial_attempts == [1, 2, 3, 4, 5, 6]
    assert fakes.outcome.failure_code == FailureCode.RETRIES_EXHAUSTED


# --- ambiguous outcomes: reconcile before any new attempt -----------------------------------


async def test_ambiguous_then_found_is_success_without_a_second_dial(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(dial_steps={1: ambiguous(was_placed=True)})
    async with running(ts_env, fakes) as run:
        await run.create()
        final = await run.finish()
        assert await run.scheduled("dial") == 1

    assert fakes.log == ["dial:1", "reconcile:1"]
    assert fakes.reconciles[0].call_session_id == run.call.call_session_id
    assert (fakes.reconciles[0].to_number, fakes.reconciles[0].from_number) == (TARGET, FROM)
    assert [(a.attempt, a.result) for a in fakes.attempts] == [
        (1, "ambiguous"),
        (1, "reconciled_found"),
    ]
    assert (fakes.outcome.status, fakes.outcome.telephony_leg_id) == ("success", "LEG-1")
    assert final.telephony_leg_id == "LEG-1"


async def test_ambiguous_then_not_found_dials_again(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(dial_steps={1: ambiguous(was_placed=False)})
    async with running(ts_env, fakes) as run:
        await run.create()
        await run.finish()

    # The lookup comes first; only a miss allows the next dial.
    assert fakes.log == ["dial:1", "reconcile:1", "dial:2"]
    assert [(a.attempt, a.result) for a in fakes.attempts] == [
        (1, "ambiguous"),
        (1, "reconciled_not_found"),
    ]
    assert (fakes.outcome.status, fakes.outcome.telephony_leg_id) == ("success", "LEG-2")
    assert fakes.outcome.attempts == 2
    assert list(fakes.ledger) == [2]


async def test_every_lookup_covers_all_attempts_so_far(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(
        dial_steps={1: ambiguous(was_placed=False), 2: not_placed()},
        default_dial=ambiguous(was_placed=False),
    )
    async with running(ts_env, fakes, max_attempts=3) as run:
        await run.create()
        await run.finish()

    assert fakes.log == ["dial:1", "reconcile:1", "dial:2", "dial:3", "reconcile:1,2,3"]
    assert fakes.outcome.failure_code == FailureCode.RETRIES_EXHAUSTED
    assert fakes.ledger == {}


async def test_a_dial_that_times_out_is_reconciled_not_retried(
    ts_env: WorkflowEnvironment,
) -> None:
    # The carrier placed the call, but the activity never answers: start_to_close ends it.
    fakes = Fakes(dial_steps={1: hangs(was_placed=True)})
    async with running(ts_env, fakes, timeout_seconds=0.5) as run:
        await run.create()
        final = await run.finish()
        events = await run.history()

    timed_out = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT]
    assert len(timed_out) == 1
    assert fakes.log == ["dial:1", "reconcile:1"]  # never a blind second dial
    assert [(a.attempt, a.result) for a in fakes.attempts] == [
        (1, "ambiguous"),
        (1, "reconciled_found"),
    ]
    assert (fakes.outcome.status, fakes.outcome.telephony_leg_id) == ("success", "LEG-1")
    assert final.telephony_leg_id == "LEG-1"


async def test_a_reconcile_that_keeps_failing_never_dials_again(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(dial_steps={1: ambiguous(was_placed=True)}, reconcile_fails=True)
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)
        final = await run.finish()
        assert await run.scheduled("dial") == 1

    assert fakes.dial_attempts == [1]
    assert fakes.reconcile_runs > 1  # it kept asking, with retries, before giving up
    for answer in (state, final):
        assert answer.status == "failed"
        assert answer.failure_code == FailureCode.DIAL_OUTCOME_UNKNOWN
    assert fakes.outcome.failure_code == FailureCode.DIAL_OUTCOME_UNKNOWN
    assert fakes.outcome.telephony_leg_id is None
    assert [(a.attempt, a.result) for a in fakes.attempts] == [(1, "ambiguous")]


# --- before any dial ------------------------------------------------------------------------


async def test_a_validation_failure_fails_without_dialing(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(
        validation=ValidationResult(
            ok=False,
            target_number=TARGET,
            failure_code=FailureCode.SUPPRESSED_NUMBER,
            failure_reason="the number is on the do-not-call list",
        ),
        persisted=PersistSessionResult(
            status=SessionStatus.FAILED,
            failure_code=FailureCode.SUPPRESSED_NUMBER,
            failure_reason="the number is on the do-not-call list",
        ),
    )
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.ACCEPTED)
        final = await run.finish()
        assert await run.scheduled("dial") == 0

    for answer in (state, final):
        assert answer.status == "failed"
        assert answer.failure_code == FailureCode.SUPPRESSED_NUMBER
        assert answer.failure_reason == "the number is on the do-not-call list"
        assert answer.telephony_leg_id is None
    # The failure is persisted with the session, through persist_session.
    assert fakes.persists[0].validation.failure_code == FailureCode.SUPPRESSED_NUMBER
    assert fakes.dials == [] and fakes.reconciles == []


async def test_a_session_already_terminal_is_never_dialed(ts_env: WorkflowEnvironment) -> None:
    """The API recorded orchestrator_unavailable, then the workflow started after all."""
    fakes = Fakes(
        persisted=PersistSessionResult(
            status=SessionStatus.FAILED,
            already_terminal=True,
            failure_code=FailureCode.ORCHESTRATOR_UNAVAILABLE,
            failure_reason="the call orchestrator is unreachable",
        )
    )
    async with running(ts_env, fakes) as run:
        state = await run.create(wait=Stage.DIALED)
        final = await run.finish()
        assert await run.scheduled("dial") == 0

    for answer in (state, final):
        assert answer.status == "failed"
        assert answer.failure_code == FailureCode.ORCHESTRATOR_UNAVAILABLE
    assert fakes.dials == [] and fakes.outcomes == [] and fakes.attempts == []


# --- the update: idempotency --------------------------------------------------------------


async def test_update_validator_refuses_another_request_hash(ts_env: WorkflowEnvironment) -> None:
    gate = asyncio.Event()
    fakes = Fakes(default_dial=gated(gate, placed()))
    async with running(ts_env, fakes) as run:
        first = await run.create(wait=Stage.ACCEPTED)

        # The same Idempotency-Key with other parameters, as the API sends it...
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await run.create(wait=Stage.ACCEPTED, request_hash="0" * 64)
        assert isinstance(info.value.cause, ApplicationError)
        assert info.value.cause.type == "IdempotencyConflict"
        # ...and straight to the running workflow.
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await run.update("accepted", request_hash="0" * 64)
        assert isinstance(info.value.cause, ApplicationError)
        assert info.value.cause.type == "IdempotencyConflict"
        # An unknown stage is refused too.
        with pytest.raises(WorkflowUpdateFailedError):
            await run.update("answered", request_hash=run.call.request_hash)

        # The same request again joins the running workflow and gets the same state.
        again = await run.create(wait=Stage.ACCEPTED)
        assert again == first
        assert await run.update("accepted", request_hash=run.call.request_hash) == first

        gate.set()
        await run.finish()
        events = await run.history()

        # A closed run is never started again: a retry after the end cannot dial twice.
        # (The real server says WorkflowAlreadyStartedError; the test server a bare
        # ALREADY_EXISTS.)
        with pytest.raises((WorkflowAlreadyStartedError, RPCError)) as refused:
            await run.create(wait=Stage.ACCEPTED)
        if isinstance(refused.value, RPCError):
            assert refused.value.status == RPCStatusCode.ALREADY_EXISTS

    # Rejected updates leave no trace; accepted ones are the three that returned.
    accepted = [
        e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert len(accepted) == 3
    assert len(fakes.validations) == 1 and len(fakes.persists) == 1
    assert fakes.dial_attempts == [1]


# --- what operators see -----------------------------------------------------------------


def _no_phone_number(text: str) -> None:
    # Drop what separates a number's digits when written down: +1 (202) 555-0100, 202.555.0100
    digits = re.sub(r"[\s\-().+]", "", text)
    for number in PHONE_DIGITS:
        assert number not in digits, f"phone number digits in {text!r}"


async def _metadata(run: Run) -> WorkflowMetadata:
    metadata: WorkflowMetadata
    metadata = await run.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata


async def test_search_attributes_summary_and_details_of_a_finished_run(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    async with running(ts_env, fakes) as run:
        await run.create()
        final = await run.finish()
        description = await run.handle.describe()
        metadata = await _metadata(run)

    attrs = description.typed_search_attributes
    assert attrs.get(SA_USER_ID) == run.call.user_id
    assert attrs.get(SA_REQUEST_ID) == run.call.request_id
    assert attrs.get(SA_PROVIDER) == "simulated"
    # The final status the run reported; "success" unless it then followed the call further.
    assert attrs.get(SA_CALL_STATUS) == (getattr(final, "call_status", None) or final.status)
    assert attrs.get(SA_CALL_STATUS) not in ("validating", "dialing", "accepted")

    summary = await description.static_summary()
    details = await description.static_details()
    assert run.call.agent_id is not None  # new_call names an agent
    assert summary and run.call.user_id[:8] in summary and run.call.agent_id in summary
    assert details and run.call.call_session_id in details and run.call.request_id in details
    assert metadata.current_details

    for pair in attrs:
        _no_phone_number(str(pair.value))
    for text in (summary, details, metadata.current_details):
        _no_phone_number(text)


async def test_a_failed_run_is_findable_as_failed(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(default_dial=rejected("21211"))
    async with running(ts_env, fakes) as run:
        await run.create()
        await run.finish()
        description = await run.handle.describe()
        metadata = await _metadata(run)

    attrs = description.typed_search_attributes
    assert attrs.get(SA_CALL_STATUS) == "failed"
    assert attrs.get(SA_USER_ID) == run.call.user_id
    assert metadata.current_details == f"failed: {FailureCode.PROVIDER_REJECTED}"
    # Red in the UI and counted by its failure views (ExecutionStatus = 'Failed').
    assert description.status == WorkflowExecutionStatus.FAILED
    with pytest.raises(WorkflowFailureError) as failure:
        await run.handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == ErrorType.CALL_FAILED
    assert cause.non_retryable
    assert cause.message == f"call failed: {FailureCode.PROVIDER_REJECTED}"
    for pair in attrs:
        _no_phone_number(str(pair.value))


# --- a campaign's pace ----------------------------------------------------------------------


def paced_then(*steps: DialStep) -> DialStep:
    """The dial's answers in order, whatever the attempt: what the pace and the carrier did."""
    queue = list(steps)

    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        return await queue.pop(0)(fakes, dial)

    return step


async def test_a_paced_refusal_spends_no_attempt_and_a_retry_keeps_the_pace(
    ts_env: WorkflowEnvironment,
) -> None:
    """The pace refused the first dial (nothing sent): the same attempt goes again after the
    wait; the carrier then refuses it once, and the retry carries the campaign's slot, so it
    reserves a moment in the campaign's pace like every first dial."""
    fakes = Fakes(
        default_dial=paced_then(not_placed(PACED_CODE, retry_after=3.0), not_placed(), placed())
    )
    async with running(ts_env, fakes) as run:
        slot = DialSlot(at=1.0, key="campaign-1", min_gap=0.05)
        run.call = replace(run.call, campaign_id=str(uuid.uuid4()), dial_slot=slot)
        await run.create()
        await run.finish()
        assert await run.backoff_timers() == [3.0, 1.0]

    assert fakes.dial_attempts == [1, 1, 2]
    # Only the carrier's refusal is an attempt on the timeline.
    assert [(a.attempt, a.result, a.provider_error_code) for a in fakes.attempts] == [
        (1, "not_placed", "connect")
    ]
    assert (fakes.outcome.status, fakes.outcome.attempts) == ("success", 2)
    first, again, retry = (d.slot for d in fakes.dials)
    assert first == again == slot
    assert retry is not None and (retry.key, retry.min_gap) == ("campaign-1", 0.05)
    assert retry.at > slot.at  # from the retry's own moment, not the first dial's


async def test_a_pace_that_never_has_room_ends_in_spent_attempts(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(default_dial=not_placed(PACED_CODE, retry_after=2.0))
    async with running(ts_env, fakes, max_attempts=2) as run:
        slot = DialSlot(at=1.0, key="campaign-2", min_gap=0.05)
        run.call = replace(run.call, campaign_id=str(uuid.uuid4()), dial_slot=slot)
        await run.create()
        await run.finish()

    # MAX_PACED_REFUSALS free refusals, then each counts: the policy's 2 attempts.
    assert len(fakes.dials) == MAX_PACED_REFUSALS + 2
    assert [a.attempt for a in fakes.attempts] == [1, 2]
    assert fakes.outcome.failure_code == FailureCode.RETRIES_EXHAUSTED
