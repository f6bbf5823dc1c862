"""Step 5 of CreateCallWorkflow on the time-skipping server, with fake activities: statuses by
signal in lifecycle order (never backwards, a final one is final), polling with a doubling
wait when callbacks stop, the maximum call age, and a small history."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WithStartWorkflowOperation, WorkflowHandle, WorkflowHistory
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from contracts.calls import (
    CallState,
    CallStatusUpdate,
    CreateCallInput,
    DialInput,
    DialPolicy,
    DialResult,
    FetchCallStatusInput,
    FetchCallStatusResult,
    FollowPolicy,
    PersistSessionResult,
    PrepareCallResult,
    RecordAttemptInput,
    RecordCallStatusInput,
    RecordOutcomeInput,
    SessionStatus,
    Stage,
    StatusSource,
    ValidationResult,
    WaitForStageInput,
)
from contracts.search_attributes import SA_CALL_STATUS
from tests.support.results import call_result
from tests.support.waiting import wait_until
from workflows.create_call import (
    CreateCallWorkflow,
    search_attributes_for,
)

LEG = "CA-test-leg"
CallHandle = WorkflowHandle[CreateCallWorkflow, CallState]


@dataclass
class Fakes:
    dial_placed: bool = True
    # What each poll answers, in order; the last one repeats. None: the provider knows nothing.
    polls: list[str | None] = field(default_factory=lambda: [None])
    recorded: list[RecordCallStatusInput] = field(default_factory=list)
    outcomes: list[RecordOutcomeInput] = field(default_factory=list)
    report_during_dial: list[str] = field(default_factory=list)
    fetches: int = 0

    @activity.defn(name="prepare_call")
    async def prepare_call(self, input: CreateCallInput) -> PrepareCallResult:
        validation = ValidationResult(
            ok=True,
            target_number="+12025550100",
            from_number="+12025550199",
            phone_number_id=str(uuid.uuid4()),
            provider="simulated",
        )
        return PrepareCallResult(validation, PersistSessionResult(status=SessionStatus.ACCEPTED))

    @activity.defn(name="record_attempt")
    async def record_attempt(self, input: RecordAttemptInput) -> None:
        return None

    @activity.defn(name="record_outcome")
    async def record_outcome(self, input: RecordOutcomeInput) -> None:
        self.outcomes.append(input)

    @activity.defn(name="dial")
    async def dial(self, input: DialInput) -> DialResult:
        if self.report_during_dial:
            # A fast carrier: the whole lifecycle is reported before the dial returns.
            handle = activity.client().get_workflow_handle(input.call_session_id)
            await handle.signal(
                CreateCallWorkflow.call_statuses,
                [CallStatusUpdate(status=s, telephony_leg_id=LEG) for s in self.report_during_dial],
            )
        if self.dial_placed:
            return DialResult(placed=True, telephony_leg_id=LEG)
        return DialResult(placed=False, provider_error_code="21211", reason="invalid")

    @activity.defn(name="reconcile_dial")
    async def reconcile_dial(self, input: object) -> None:
        raise AssertionError("no reconciliation expected")

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: RecordCallStatusInput) -> str | None:
        self.recorded.append(input)
        return None

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(self, input: FetchCallStatusInput) -> FetchCallStatusResult:
        status = self.polls[min(self.fetches, len(self.polls) - 1)]
        self.fetches += 1
        if status is None:
            return FetchCallStatusResult()
        duration = 7 if status == "completed" else None
        return FetchCallStatusResult(
            update=CallStatusUpdate(
                status=status,
                telephony_leg_id=input.telephony_leg_id,
                source=StatusSource.POLL,
                duration_seconds=duration,
            )
        )

    @property
    def statuses(self) -> list[str]:
        return [u.status for r in self.recorded for u in r.updates]


@asynccontextmanager
async def started(
    env: WorkflowEnvironment, fakes: Fakes, follow: FollowPolicy | None = None
) -> AsyncIterator[tuple[CallHandle, CallState]]:
    """Start a call with update-with-start, waiting for "dialed" as the API does."""
    queue = f"lifecycle-{uuid.uuid4().hex[:8]}"
    call = CreateCallInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        phone_number="+12025550100",
        request_hash="h" * 64,
        policy=DialPolicy(task_queue=queue + "-dial"),
        follow=follow or FollowPolicy(),
    )
    call_worker = Worker(
        env.client,
        task_queue=queue,
        workflows=[CreateCallWorkflow],
        # Always sandboxed here: the worker runs unsandboxed unless DIALER_WORKFLOW_SANDBOX.
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[
            fakes.prepare_call,
            fakes.record_attempt,
            fakes.record_outcome,
            fakes.record_call_status,
            fakes.fetch_call_status,
        ],
    )
    dial_worker = Worker(
        env.client, task_queue=queue + "-dial", activities=[fakes.dial, fakes.reconcile_dial]
    )
    async with call_worker, dial_worker:
        state = await env.client.execute_update_with_start_workflow(
            CreateCallWorkflow.wait_for_stage,
            WaitForStageInput(stage=Stage.DIALED, request_hash=call.request_hash),
            start_workflow_operation=WithStartWorkflowOperation(
                CreateCallWorkflow.run,
                call,
                id=call.call_session_id,
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(search_attributes_for(call)),
            ),
        )
        handle = env.client.get_workflow_handle_for(CreateCallWorkflow.run, call.call_session_id)
        yield handle, state


async def signal(handle: CallHandle, status: str, leg: str = LEG, **extra: Any) -> None:
    await handle.signal(
        CreateCallWorkflow.call_statuses,
        [CallStatusUpdate(status=status, telephony_leg_id=leg, **extra)],
    )


async def finish(env: WorkflowEnvironment, handle: CallHandle) -> CallState:
    """The run's result, letting the server skip time meanwhile (a fetched handle does not
    do that by itself)."""
    # Only the SDK's time-skipping environment (a private subclass) declares this method.
    async with env.time_skipping_unlocked():  # type: ignore[attr-defined]
        return await asyncio.wait_for(call_result(handle), 20)


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return (await value) == expected


async def current(handle: CallHandle) -> CallState:
    return await handle.query(CreateCallWorkflow.state)


async def test_dialed_answers_at_once_then_signals_carry_the_call_to_its_end(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    async with started(ts_env, fakes) as (handle, state):
        # The update came back at "dialed" while the call is still being followed.
        assert state.stage == "dialed" and state.telephony_leg_id == LEG
        assert state.call_status is None
        assert (await handle.describe()).close_time is None

        await signal(handle, "initiated")
        await signal(handle, "ringing")
        await wait_until(lambda: "ringing" in fakes.statuses)

        async def search_attribute() -> str | None:
            desc = await handle.describe()
            return desc.typed_search_attributes.get(SA_CALL_STATUS)

        # The search attribute follows once the workflow task that recorded it completes.
        assert await wait_until(lambda: _eq(search_attribute(), "ringing"), timeout=10)
        await signal(handle, "in-progress", occurred_at="2026-11-27T10:00:05+00:00")
        await signal(handle, "completed", duration_seconds=43)
        result = await finish(ts_env, handle)

    assert result.call_status == "completed" and result.duration_seconds == 43
    assert fakes.statuses == ["initiated", "ringing", "in-progress", "completed"]
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(SA_CALL_STATUS) == "completed"
    history = await handle.fetch_history()
    assert len(history.events) < 80, len(history.events)


def _events(history: WorkflowHistory, kind: EventType.ValueType) -> int:
    return sum(1 for e in history.events if e.event_type == kind)


async def test_a_lifecycle_reported_during_the_dial_is_recorded_with_the_outcome(
    ts_env: WorkflowEnvironment,
) -> None:
    """One signal carries the whole lifecycle; it is written with the dial's outcome (one
    local activity), and DialerCallStatus is upserted once per workflow task, not per step."""
    fakes = Fakes(report_during_dial=["initiated", "ringing", "in-progress", "completed"])
    async with started(ts_env, fakes) as (handle, state):
        assert state.stage == "dialed"
        result = await finish(ts_env, handle)

    assert result.call_status == "completed"
    [outcome] = fakes.outcomes
    assert [u.status for u in outcome.statuses] == fakes.report_during_dial
    assert fakes.recorded == []  # nothing left for a separate record_call_status
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(SA_CALL_STATUS) == "completed"
    history = await handle.fetch_history()
    # prepare_call, record_outcome and the dial-priority patch; one upsert before the dial
    # (provider + "dialing"), the SDK's own for the patch (TemporalChangeVersion), one at the
    # end ("completed": "success" and the steps between never reach visibility).
    assert _events(history, EventType.EVENT_TYPE_MARKER_RECORDED) == 3
    assert _events(history, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 3
    assert _events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 1


async def test_out_of_order_and_replayed_statuses_never_move_the_call_backwards(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    async with started(ts_env, fakes) as (handle, _):
        await signal(handle, "in-progress")
        await wait_until(lambda: "in-progress" in fakes.statuses)
        # Late: ringing and initiated after the answer, and the answer again.
        await signal(handle, "ringing")
        await signal(handle, "initiated")
        await signal(handle, "in-progress")
        await wait_until(lambda: "ringing" in fakes.statuses and "initiated" in fakes.statuses)
        state = await current(handle)
        assert state.call_status == "answered"
        # Another leg's report (a stray call) is ignored.
        await signal(handle, "busy", leg="CA-someone-else")
        await signal(handle, "completed", duration_seconds=9)
        result = await finish(ts_env, handle)

    assert result.call_status == "completed" and result.duration_seconds == 9
    # Each status recorded once (the timeline keeps late ones), none for the other leg.
    assert sorted(fakes.statuses) == sorted(["in-progress", "initiated", "ringing", "completed"])
    assert fakes.statuses.count("in-progress") == 1
    assert "busy" not in fakes.statuses


async def test_without_callbacks_polls_with_a_doubling_wait_until_final(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(polls=["ringing", "ringing", "answered", "answered", "completed"])
    follow = FollowPolicy(poll_after_seconds=10, poll_max_seconds=40, max_age_seconds=3600)
    async with started(ts_env, fakes, follow) as (handle, _):
        result = await finish(ts_env, handle)

    assert result.call_status == "completed" and result.duration_seconds == 7
    assert fakes.fetches == 5
    assert fakes.statuses == ["ringing", "answered", "completed"]
    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    # Before the answer a new status resets the wait and no change doubles it, up to the max;
    # once answered, a quiet call is a conversation: asked every poll_max.
    assert timers == [10, 10, 20, 40, 40], timers


async def test_stops_following_at_the_maximum_call_age(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(polls=["ringing"])
    follow = FollowPolicy(poll_after_seconds=60, poll_max_seconds=600, max_age_seconds=1800)
    async with started(ts_env, fakes, follow) as (handle, _):
        result = await finish(ts_env, handle)

    assert result.call_status == "ringing"
    assert fakes.recorded[-1].gave_up_after_seconds == 1800
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(SA_CALL_STATUS) == "expired"
    # Polls back off to the max: a long wait costs a handful of events, not hundreds.
    assert fakes.fetches <= 8
    assert len((await handle.fetch_history()).events) < 100


async def test_a_failed_dial_is_not_followed(ts_env: WorkflowEnvironment) -> None:
    fakes = Fakes(dial_placed=False)
    async with started(ts_env, fakes) as (handle, state):
        assert state.status == "failed"
        result = await finish(ts_env, handle)
    assert result.call_status is None
    assert fakes.recorded == [] and fakes.fetches == 0
