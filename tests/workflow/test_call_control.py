"""Call control on the time-skipping server (issue 16): a scheduled call dials at its minute,
a latest_at passed fails it instead of dialing late, cancel before and during the dial, the
hang-up of a live call, max duration, and each answering-machine mode.

The session-wide time-skipping server's clock is shared: while time skipping is unlocked
(Run.create, Run.finish) it jumps to the next timer of any run on it. So these tests answer
create_call and poll for progress with it locked, and end every run they start. It also does
not skip while an activity task waits for a worker, or a workflow task for a worker that is
gone: a test that stops its workers to let latest_at pass waits in real time, and the
result's long poll then comes back empty ("No completion event found")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from contracts.calls import (
    AdmitCallResult,
    CallControlInput,
    CallControlResult,
    CallOptions,
    CallState,
    CallStatusUpdate,
    ControlAction,
    ControlOutcome,
    DialInput,
    DialResult,
    EndedReason,
    ErrorType,
    FailureCode,
    FetchCallStatusInput,
    FetchCallStatusResult,
    HangupInput,
    HangupResult,
    MachineDetection,
    RecordCallEventInput,
    RecordCallStatusInput,
    RecordOutcomeInput,
    SessionStatus,
    Stage,
    StatusSource,
    WaitForStageInput,
)
from tests.workflow.harness import WAIT_BOUND, Fakes, Run, gated, new_call, not_placed, placed
from workflows.create_call import ADMIT_RETRY, CreateCallWorkflow

REQUESTED_BY = "api key dk_test"


@dataclass
class LiveFakes(Fakes):
    """A placed call that stays answered until it is hung up (polls say so), the hang-ups,
    the timeline entries and the statuses the workflow recorded."""

    hangups: list[HangupInput] = field(default_factory=list)
    hangup_times: list[datetime] = field(default_factory=list)
    dial_times: list[datetime] = field(default_factory=list)
    events: list[RecordCallEventInput] = field(default_factory=list)
    recorded: list[CallStatusUpdate] = field(default_factory=list)
    ended_by_carrier_after: float | None = None  # seconds of talk, then completed (poll)

    @activity.defn(name="dial")
    async def dial(self, input: DialInput) -> DialResult:
        self.dial_times.append(activity.info().current_attempt_scheduled_time)
        return await super().dial(input)

    @activity.defn(name="hangup_call")
    async def hangup_call(self, input: HangupInput) -> HangupResult:
        self.hangups.append(input)
        self.hangup_times.append(activity.info().current_attempt_scheduled_time)
        return HangupResult(ended=True)

    @activity.defn(name="record_call_event")
    async def record_call_event(self, input: RecordCallEventInput) -> None:
        self.events.append(input)

    @activity.defn(name="record_outcome")
    async def record_outcome(self, input: RecordOutcomeInput) -> None:
        self.recorded.extend(input.statuses)
        await super().record_outcome(input)

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: RecordCallStatusInput) -> None:
        self.recorded.extend(input.updates)

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(  # type: ignore[override]  # typed, not the harness's dict
        self, input: FetchCallStatusInput
    ) -> FetchCallStatusResult:
        status = "completed" if self.hangups else "answered"
        return FetchCallStatusResult(
            update=CallStatusUpdate(
                status=status,
                telephony_leg_id=input.telephony_leg_id,
                duration_seconds=42 if status == "completed" else None,
                source=StatusSource.POLL,
            )
        )

    @property
    def final(self) -> CallStatusUpdate:
        [final] = [u for u in self.recorded if u.status in ("completed", "canceled")]
        return final


@asynccontextmanager
async def live(
    env: WorkflowEnvironment,
    fakes: LiveFakes,
    options: CallOptions,
) -> AsyncIterator[Run]:
    """The call and dial workers on this call's own task queues (a fresh call id each time:
    no test reuses another's workflow id or queue). The run is terminated on the way out,
    so a test that failed midway leaves no run behind on the session-wide server: its next
    timer would fire while a later test lets time skip, with no worker left for it."""
    run = Run(env=env, fakes=fakes, call=replace(new_call(), options=options))
    call_worker = Worker(
        env.client,
        task_queue=run.task_queue,
        workflows=[CreateCallWorkflow],
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[
            fakes.prepare_call,
            fakes.admit_call,
            fakes.record_attempt,
            fakes.record_outcome,
            fakes.record_call_status,
            fakes.fetch_call_status,
            fakes.record_call_event,
        ],
    )
    dialer = Worker(
        env.client,
        task_queue=run.call.policy.task_queue,
        activities=[fakes.dial, fakes.reconcile_dial, fakes.hangup_call],
    )
    try:
        async with call_worker, dialer:
            yield run
    finally:
        with suppress(RPCError):  # not found: the run is over, as it should be
            await run.handle.terminate("test over")


async def create(run: Run) -> CallState:
    """POST /api/call/create_call (update-with-start, answered when accepted) with time
    skipping locked: Run.create unlocks it while it waits, and the server then skips to the
    next timer as soon as the workflow waits on one, before the answer arrives. For a
    scheduled call that is its scheduled_at: it would be dialed before the test could cancel."""
    state: CallState = await asyncio.wait_for(
        run.client.execute_update_with_start_workflow(
            CreateCallWorkflow.wait_for_stage,
            WaitForStageInput(stage=Stage.ACCEPTED, request_hash=run.call.request_hash),
            start_workflow_operation=run.start_operation(),
        ),
        WAIT_BOUND,
    )
    return state


async def control(run: Run, action: ControlAction) -> CallControlResult:
    """The update as services/call_control.py sends it. Time is not skipped meanwhile: a
    scheduled call's timer would fire before the request arrives."""
    result: CallControlResult = await asyncio.wait_for(
        run.handle.execute_update(
            "call_control",
            CallControlInput(action=action, requested_by=REQUESTED_BY),
            result_type=CallControlResult,
        ),
        WAIT_BOUND,
    )
    return result


async def signal(run: Run, status: str, **fields: Any) -> None:
    leg = run.fakes.ledger.get(1, "LEG-1")
    update = CallStatusUpdate(status=status, telephony_leg_id=leg, **fields)
    await run.handle.signal(CreateCallWorkflow.call_statuses, [update])


async def wait_for(predicate: Any) -> None:
    """Until the predicate holds (the workflow moved on). Time skipping stays locked: were it
    unlocked, the server would skip to the follow-up's next timer while this polls, and a
    call that stays answered would reach its maximum age and end before the test goes on."""
    for _ in range(600):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the workflow did not get there")


async def test_a_call_scheduled_a_day_ahead_answers_at_once_and_dials_at_its_minute(
    ts_env: WorkflowEnvironment,
) -> None:
    at = (await ts_env.get_current_time()) + timedelta(days=1)
    fakes = LiveFakes()
    async with live(ts_env, fakes, CallOptions(scheduled_at=at.isoformat())) as run:
        answer = await create(run)
        assert answer.call_status == "scheduled" and answer.scheduled_at == at.isoformat()
        assert fakes.dials == []
        await signal(run, "completed", duration_seconds=3)  # held until the call is placed
        state = await run.finish()
    assert state.status == SessionStatus.SUCCESS
    [dialed] = fakes.dial_times
    assert at <= dialed < at + timedelta(minutes=1)


async def test_latest_at_passed_fails_without_dialing_late(ts_env: WorkflowEnvironment) -> None:
    now = await ts_env.get_current_time()
    options = CallOptions(
        scheduled_at=(now + timedelta(hours=1)).isoformat(),
        latest_at=(now + timedelta(hours=1, minutes=5)).isoformat(),
    )
    # The carrier refuses every connection (provably not placed) and asks to retry in 10
    # minutes: past latest_at, so the call fails instead of being dialed late.
    fakes = LiveFakes(default_dial=not_placed(retry_after=600))
    async with live(ts_env, fakes, options) as run:
        await create(run)
        state = await run.finish()
    assert state.status == SessionStatus.FAILED
    assert state.failure_code == FailureCode.LATEST_AT_PASSED
    assert state.ended_reason == EndedReason.NOT_DIALED
    assert fakes.ledger == {}  # never placed
    latest = datetime.fromisoformat(options.latest_at or "")
    assert fakes.dial_times and all(t < latest for t in fakes.dial_times)  # none late


async def test_a_scheduled_call_at_its_accounts_limit_waits_until_its_latest_at(
    ts_env: WorkflowEnvironment,
) -> None:
    """At its time the account has its max_concurrent_calls: the call waits and asks again,
    and dials once a call of the account has ended, before its latest_at."""
    now = await ts_env.get_current_time()
    options = CallOptions(
        scheduled_at=(now + timedelta(hours=1)).isoformat(),
        latest_at=(now + timedelta(hours=1, minutes=5)).isoformat(),
    )
    busy = AdmitCallResult(
        failure_code=FailureCode.CONCURRENCY_LIMIT, failure_reason="the account has its limit"
    )
    fakes = LiveFakes(admit_verdicts=[busy, busy])
    async with live(ts_env, fakes, options) as run:
        await create(run)
        await signal(run, "completed", duration_seconds=3)
        state = await run.finish()
    assert fakes.admits == 3
    assert state.status == SessionStatus.SUCCESS and len(fakes.dials) == 1
    [dialed] = fakes.dial_times
    scheduled = datetime.fromisoformat(options.scheduled_at or "")
    assert scheduled + 2 * ADMIT_RETRY <= dialed < scheduled + timedelta(minutes=1)


@pytest.mark.parametrize("latest", [None, timedelta(minutes=1)])
async def test_a_scheduled_call_still_at_its_limit_fails_with_the_limits_code(
    ts_env: WorkflowEnvironment, latest: timedelta | None
) -> None:
    """No latest_at: refused at its time, like a single call at its request. A latest_at:
    refused when it passes, never dialed late."""
    now = await ts_env.get_current_time()
    at = now + timedelta(hours=1)
    options = CallOptions(
        scheduled_at=at.isoformat(), latest_at=(at + latest).isoformat() if latest else None
    )
    rated = AdmitCallResult(
        failure_code=FailureCode.CALLS_PER_SECOND_LIMIT,
        failure_reason="the account has placed its limit",
        retry_after=1.0,
    )
    fakes = LiveFakes(admit_verdicts=[rated] * 100)
    async with live(ts_env, fakes, options) as run:
        await create(run)
        state = await run.finish()
    assert state.status == SessionStatus.FAILED
    assert state.failure_code == FailureCode.CALLS_PER_SECOND_LIMIT
    assert fakes.dials == []
    assert fakes.outcome.failure_code == FailureCode.CALLS_PER_SECOND_LIMIT
    # Asked at its time, then every ADMIT_RETRY until the next wait would pass latest_at.
    assert fakes.admits == (1 if latest is None else 12)


async def test_cancel_before_the_dial_never_dials(ts_env: WorkflowEnvironment) -> None:
    at = (await ts_env.get_current_time()) + timedelta(days=1)
    fakes = LiveFakes()
    async with live(ts_env, fakes, CallOptions(scheduled_at=at.isoformat())) as run:
        await create(run)
        result = await control(run, ControlAction.CANCEL)
        state = await run.finish()
    assert result.outcome == ControlOutcome.CANCELED
    assert state.failure_code == FailureCode.CANCELED
    assert state.call_status == "canceled" and state.ended_reason == EndedReason.CANCELED
    assert fakes.dials == [] and fakes.hangups == []
    assert fakes.outcome.failure_code == FailureCode.CANCELED
    [event] = fakes.events
    assert event.type == "control_requested" and event.detail["requested_by"] == REQUESTED_BY


async def test_cancel_during_the_dial_waits_for_it_then_hangs_up_the_placed_call(
    ts_env: WorkflowEnvironment,
) -> None:
    gate = asyncio.Event()
    fakes = LiveFakes(default_dial=gated(gate, placed()))
    async with live(ts_env, fakes, CallOptions()) as run:
        await create(run)
        await wait_for(lambda: bool(fakes.dials))
        asking = asyncio.create_task(control(run, ControlAction.CANCEL))
        repeat = asyncio.create_task(control(run, ControlAction.CANCEL))  # idempotent
        await asyncio.sleep(0.3)
        assert not asking.done()  # the dial in flight comes back first
        gate.set()
        result, again = await asking, await repeat
        state = await run.finish()
    assert result.outcome == again.outcome == ControlOutcome.HANGUP_SENT
    assert len(fakes.dials) == 1
    [hangup] = fakes.hangups
    assert hangup.telephony_leg_id == "LEG-1" and not hangup.answered
    assert state.ended_reason == EndedReason.HANGUP_REQUESTED
    assert fakes.final.ended_reason == EndedReason.HANGUP_REQUESTED
    assert [e.type for e in fakes.events] == ["control_requested", "hangup_sent"]


async def test_hang_up_a_live_call(ts_env: WorkflowEnvironment) -> None:
    fakes = LiveFakes()
    async with live(ts_env, fakes, CallOptions()) as run:
        await create(run)
        await signal(run, "answered")
        await wait_for(lambda: run.fakes.outcomes != [])
        result = await control(run, ControlAction.HANGUP)
        state = await run.finish()
        # Over: a new request is refused (HTTP 409 at the API).
    assert result.outcome == ControlOutcome.HANGUP_SENT
    [hangup] = fakes.hangups
    assert hangup.answered
    assert state.call_status == "completed" and state.ended_reason == "hangup_requested"
    assert [e.type for e in fakes.events] == ["control_requested", "hangup_sent"]


async def test_a_control_request_on_a_call_that_is_over_is_refused(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = LiveFakes()
    async with live(ts_env, fakes, CallOptions()) as run:
        await create(run)
        await signal(run, "completed", duration_seconds=1)
        state = await run.finish()
        # The run closes as soon as the call is over, so the update finds no run (the server
        # says not found) unless it lands in the last workflow task, where the validator
        # refuses it as CALL_OVER. services/call_control.py answers both with HTTP 409.
        with pytest.raises((WorkflowUpdateFailedError, RPCError)) as err:
            await control(run, ControlAction.HANGUP)
    assert state.call_status == "completed" and fakes.hangups == []
    if isinstance(err.value, RPCError):
        assert err.value.status == RPCStatusCode.NOT_FOUND
    else:
        cause = err.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == ErrorType.CALL_OVER


async def test_max_duration_hangs_up_when_it_is_reached(ts_env: WorkflowEnvironment) -> None:
    fakes = LiveFakes()
    async with live(ts_env, fakes, CallOptions(max_duration_seconds=90)) as run:
        await create(run)
        assert fakes.dials == [] or fakes.dials[0].max_duration_seconds == 90
        await signal(run, "answered")
        state = await run.finish()
    assert fakes.dials[0].max_duration_seconds == 90  # for the carrier's own limit
    [hangup] = fakes.hangups
    assert hangup.answered
    assert state.ended_reason == EndedReason.MAX_DURATION


@pytest.mark.parametrize(
    ("mode", "answered_by", "message", "hangs_up", "reason"),
    [
        (MachineDetection.DETECT, "machine_start", None, False, EndedReason.VOICEMAIL),
        (MachineDetection.DETECT, "human", None, False, EndedReason.CALLEE_HUNG_UP),
        (MachineDetection.DETECT_AND_HANG_UP, "machine_start", None, True, EndedReason.VOICEMAIL),
        (MachineDetection.DETECT_AND_HANG_UP, "human", None, False, EndedReason.CALLEE_HUNG_UP),
        (
            MachineDetection.DETECT_AND_LEAVE_MESSAGE,
            "machine_end_beep",
            "Hello, this is Dialer.",
            True,
            EndedReason.VOICEMAIL,
        ),
        # No message: the agent on the stream leaves it; the call ends when it hangs up.
        (MachineDetection.DETECT_AND_LEAVE_MESSAGE, "machine_end_beep", None, False, "voicemail"),
    ],
)
async def test_each_answering_machine_mode(
    ts_env: WorkflowEnvironment,
    mode: MachineDetection,
    answered_by: str,
    message: str | None,
    hangs_up: bool,
    reason: str,
) -> None:
    fakes = LiveFakes()
    options = CallOptions(machine_detection=mode, voicemail_message=message)
    async with live(ts_env, fakes, options) as run:
        await create(run)
        await signal(run, "answered")
        await wait_for(lambda: any(u.status == "answered" for u in fakes.recorded))
        # The verdict comes after the answer, as AsyncAmd's callback does.
        await signal(run, "answered", answered_by=answered_by)
        if hangs_up:
            await wait_for(lambda: bool(fakes.hangups))
        else:
            await wait_for(lambda: any(u.answered_by for u in fakes.recorded))
            await signal(run, "completed", duration_seconds=12)
        state = await run.finish()
    assert fakes.dials[0].machine_detection == mode
    assert state.answered_by == answered_by
    assert state.ended_reason == reason
    assert bool(fakes.hangups) == hangs_up
    if hangs_up:
        assert fakes.hangups[0].message == message
