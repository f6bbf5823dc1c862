"""What following a live call costs, on the time-skipping server (issue 18): an answered call
in quiet talk is asked once per poll_max (at most 0.1 look-ups per call-minute at the
defaults), its history stays small over an hour, and the bound still holds when callbacks
are lost: a call is found ended within poll_max of its end, a call with a max_duration just
after it; a look-up the account's budget deferred is asked again soon, never an error.

The session-wide server's clock is shared: every run started here is ended on the way out,
so no timer of one fires while a later test lets time skip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from temporalio import activity
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from contracts.calls import (
    CallOptions,
    CallStatusUpdate,
    EndedReason,
    FetchCallStatusInput,
    FetchCallStatusResult,
    FollowPolicy,
    HangupInput,
    HangupResult,
    RecordCallEventInput,
    RecordCallStatusInput,
    Stage,
    StatusSource,
    WaitForStageInput,
)
from tests.support.waiting import wait_until
from tests.workflow.harness import WAIT_BOUND, Fakes, Run, new_call
from workflows.create_call import CreateCallWorkflow

# The production defaults (core/config.py): 30 s before the answer, 600 s in talk.
FOLLOW = FollowPolicy(poll_after_seconds=30, poll_max_seconds=600, max_age_seconds=7200)
HOUR = timedelta(hours=1)


@dataclass
class TalkFakes(Fakes):
    """A placed call that is answered by callback and then silent. The carrier ends it
    `talk_seconds` after the answer (None: it talks on), and no callback says so: only a
    look-up finds the end. The first `deferred` look-ups are put off by the budget. Times are
    the test server's (skipped) clock: a local activity's own info has the wall clock."""

    talk_seconds: float | None = None
    deferred: int = 0
    answered_at: datetime | None = None
    fetch_times: list[datetime] = field(default_factory=list)
    fetch_answers: list[str] = field(default_factory=list)
    hangups: list[HangupInput] = field(default_factory=list)
    clock: Callable[[], Awaitable[datetime]] | None = None

    async def now(self) -> datetime:
        assert self.clock is not None
        return await self.clock()

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: RecordCallStatusInput) -> None:
        if any(u.status in ("answered", "in-progress") for u in input.updates):
            self.answered_at = await self.now()

    @activity.defn(name="record_call_event")
    async def record_call_event(self, input: RecordCallEventInput) -> None:
        return None

    @activity.defn(name="hangup_call")
    async def hangup_call(self, input: HangupInput) -> HangupResult:
        self.hangups.append(input)
        return HangupResult(ended=False)  # the carrier's own limit ended it already

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(  # type: ignore[override]  # typed, not the harness's dict
        self, input: FetchCallStatusInput
    ) -> FetchCallStatusResult:
        now = await self.now()
        self.fetch_times.append(now)
        if len(self.fetch_times) <= self.deferred:
            self.fetch_answers.append("deferred")
            return FetchCallStatusResult(deferred_seconds=1.0)
        status = "completed" if self.ended_by(now) else "in-progress"
        self.fetch_answers.append(status)
        return FetchCallStatusResult(
            update=CallStatusUpdate(
                status=status,
                telephony_leg_id=input.telephony_leg_id,
                duration_seconds=int(self.talk_seconds or 0) if status == "completed" else None,
                source=StatusSource.POLL,
            )
        )

    def ended_by(self, now: datetime) -> bool:
        return self.ended_at is not None and now >= self.ended_at

    @property
    def ended_at(self) -> datetime | None:
        if self.talk_seconds is None or self.answered_at is None:
            return None
        return self.answered_at + timedelta(seconds=self.talk_seconds)

    def gaps(self) -> list[float]:
        """Seconds between the answer and the first look-up, then between look-ups."""
        assert self.answered_at is not None
        times = [self.answered_at, *self.fetch_times]
        return [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]


@asynccontextmanager
async def talking(
    env: WorkflowEnvironment, fakes: TalkFakes, options: CallOptions | None = None
) -> AsyncIterator[Run]:
    """A call placed, answered by callback (the last callback it gets), and followed by the
    workers worker.py would run, on this call's own queues. The run ends on the way out."""
    fakes.clock = env.get_current_time
    run = Run(env=env, fakes=fakes, call=replace(new_call(), follow=FOLLOW))
    if options is not None:
        run.call = replace(run.call, options=options)
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
            await run.client.execute_update_with_start_workflow(
                CreateCallWorkflow.wait_for_stage,
                # "dialed": the leg exists, so the answer's callback is this call's.
                WaitForStageInput(stage=Stage.DIALED, request_hash=run.call.request_hash),
                start_workflow_operation=run.start_operation(),
            )
            await run.handle.signal(
                CreateCallWorkflow.call_statuses,
                [CallStatusUpdate(status="in-progress", telephony_leg_id=fakes.ledger[1])],
            )
            await wait_until(lambda: fakes.answered_at is not None, timeout=WAIT_BOUND)
            yield run
    finally:
        with suppress(RPCError):  # not found: the run is over, as it should be
            await run.handle.terminate("test over")


async def events(run: Run) -> int:
    return len(await run.history())


async def test_an_hour_of_quiet_talk_costs_six_look_ups_and_a_few_dozen_events(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = TalkFakes()
    async with talking(ts_env, fakes) as run:
        at_answer = await events(run)
        await ts_env.sleep(HOUR + timedelta(seconds=5))
        at_an_hour = await events(run)
        await run.handle.signal(
            CreateCallWorkflow.call_statuses,
            [CallStatusUpdate(status="completed", telephony_leg_id="LEG-1", duration_seconds=3605)],
        )
        state = await run.finish()

    assert state.call_status == "completed"
    # One look-up per poll_max of talk: 0.1 per live call-minute, the target (the
    # doubling from poll_after that came before made 9 in this hour).
    assert len(fakes.fetch_times) == 6, fakes.gaps()
    assert all(gap >= FOLLOW.poll_max_seconds for gap in fakes.gaps()), fakes.gaps()
    # Each look-up: a timer (started, fired), a workflow task (scheduled, started,
    # completed) and the local activity's marker; nothing else while the call talks.
    per_hour = at_an_hour - at_answer
    assert per_hour <= 6 * 6 + 2, (at_answer, at_an_hour)
    # Over the two-hour maximum age a call's history stays far below anything that would
    # call for continue-as-new (Temporal warns at 10,240 events).
    assert at_answer + 2 * per_hour < 150, (at_answer, per_hour)


async def test_a_call_whose_callbacks_stop_is_found_ended_within_poll_max_of_its_end(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = TalkFakes(talk_seconds=1000)  # ended 1000 s in; its `completed` callback lost
    async with talking(ts_env, fakes) as run:
        state = await run.finish()

    assert state.call_status == "completed" and state.duration_seconds == 1000
    assert fakes.ended_at is not None
    found = fakes.fetch_times[-1]
    late = (found - fakes.ended_at).total_seconds()
    assert 0 <= late <= FOLLOW.poll_max_seconds, late
    assert fakes.fetch_answers == ["in-progress", "completed"]


async def test_a_call_with_a_max_duration_is_checked_just_after_it(
    ts_env: WorkflowEnvironment,
) -> None:
    # The carrier ends the call at its own limit (Twilio's TimeLimit); the callback is lost.
    fakes = TalkFakes(talk_seconds=900)
    async with talking(ts_env, fakes, CallOptions(max_duration_seconds=900)) as run:
        state = await run.finish()

    assert state.call_status == "completed"
    assert state.ended_reason == EndedReason.MAX_DURATION
    assert len(fakes.hangups) == 1  # the workflow's own limit, at the deadline
    assert fakes.answered_at is not None
    found = (fakes.fetch_times[-1] - fakes.answered_at).total_seconds()
    # Asked at poll_max in talk, then poll_after after the hang-up at the deadline.
    assert fakes.fetch_answers == ["in-progress", "completed"]
    assert 900 <= found <= 900 + FOLLOW.poll_after_seconds + 5, found


async def test_a_deferred_look_up_is_asked_again_soon_and_the_talk_goes_on(
    ts_env: WorkflowEnvironment,
) -> None:
    fakes = TalkFakes(talk_seconds=2000, deferred=3)
    async with talking(ts_env, fakes) as run:
        state = await run.finish()

    assert state.call_status == "completed"
    gaps = fakes.gaps()
    assert fakes.fetch_answers[:4] == ["deferred", "deferred", "deferred", "in-progress"]
    # First at poll_max; each deferral comes back after its wait plus a spread that doubles
    # from poll_after (30, 60, 120 s), not after another poll_max.
    assert gaps[0] >= FOLLOW.poll_max_seconds
    for gap, spread in zip(gaps[1:4], (30, 60, 120), strict=True):
        assert 1.0 <= gap <= 1.0 + spread + 1, gaps
    # Then the quiet talk's pace again.
    assert gaps[4] >= FOLLOW.poll_max_seconds, gaps
