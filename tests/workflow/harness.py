"""Fakes and helpers for CreateCallWorkflow tests on the time-skipping server.

The fakes are registered under the real activity names, record every call they receive, and
keep a small carrier ledger (attempt -> leg id) so a test can tell a call that was placed
from one that was not, whatever the dial activity answered."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from contracts.calls import (
    AdmitCallInput,
    AdmitCallResult,
    CallState,
    CreateCallInput,
    DialInput,
    DialPolicy,
    DialResult,
    ErrorType,
    PersistSessionInput,
    PersistSessionResult,
    PrepareCallResult,
    ReconcileInput,
    ReconcileResult,
    RecordAttemptInput,
    RecordOutcomeInput,
    SessionStatus,
    Stage,
    ValidationResult,
    WaitForStageInput,
)
from tests.support.results import call_result
from workflows.create_call import (
    CreateCallWorkflow,
    search_attributes_for,
    summary_for,
)

TARGET = "+12025550100"
FROM = "+12025550199"
# The national digits of every phone number a test uses: none may appear, in any format, in
# search attributes, the summary or the details.
PHONE_DIGITS = ("2025550100", "2025550199")

# Upper bound on any single wait in a test (real seconds; time skipping makes the usual
# wait far shorter): a broken workflow fails the test instead of hanging the suite.
WAIT_BOUND = 60.0

# What the fake dial does on one attempt: return a DialResult or raise.
DialStep = Callable[["Fakes", DialInput], Awaitable[DialResult]]


# --- dial behaviours ------------------------------------------------------------------------


def placed() -> DialStep:
    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        return DialResult(placed=True, telephony_leg_id=fakes.place(dial))

    return step


def rejected(code: str = "21211", reason: str = "invalid destination") -> DialStep:
    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        return DialResult(placed=False, provider_error_code=code, reason=reason)

    return step


def not_placed(code: str = "connect", retry_after: float = 0.0) -> DialStep:
    """Provably not placed; raised as activities/dialing.py raises it."""

    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        raise ApplicationError(
            "not placed", code, retry_after, type=ErrorType.DIAL_NOT_PLACED, non_retryable=True
        )

    return step


def ambiguous(*, was_placed: bool) -> DialStep:
    """The answer is lost; the call may or may not exist at the carrier."""

    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        if was_placed:
            fakes.place(dial)
        raise ApplicationError(
            "response lost", None, type=ErrorType.DIAL_AMBIGUOUS, non_retryable=True
        )

    return step


def hangs(*, was_placed: bool) -> DialStep:
    """The request went out and nothing ever comes back: only start_to_close ends it."""

    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        if was_placed:
            fakes.place(dial)
        await asyncio.Event().wait()  # cancelled when the worker shuts down
        raise AssertionError("unreachable")

    return step


def gated(gate: asyncio.Event, then: DialStep) -> DialStep:
    """Holds the dial until the test opens `gate`."""

    async def step(fakes: Fakes, dial: DialInput) -> DialResult:
        await gate.wait()
        return await then(fakes, dial)

    return step


# --- the fakes ------------------------------------------------------------------------------


@dataclass
class Fakes:
    validation: ValidationResult = field(
        default_factory=lambda: ValidationResult(
            ok=True,
            target_number=TARGET,
            from_number=FROM,
            phone_number_id=str(uuid.uuid4()),
            provider="simulated",
        )
    )
    persisted: PersistSessionResult = field(
        default_factory=lambda: PersistSessionResult(status=SessionStatus.ACCEPTED)
    )
    # Dial behaviour per attempt number; `default_dial` for every other attempt.
    dial_steps: dict[int, DialStep] = field(default_factory=dict)
    default_dial: DialStep = field(default_factory=placed)
    reconcile_fails: bool = False
    # What admit_call answers a scheduled call at its time, in order; then it may dial.
    admit_verdicts: list[AdmitCallResult] = field(default_factory=list)
    admits: int = 0

    # What the workflow asked for, in order.
    validations: list[CreateCallInput] = field(default_factory=list)
    persists: list[PersistSessionInput] = field(default_factory=list)
    dials: list[DialInput] = field(default_factory=list)
    reconciles: list[ReconcileInput] = field(default_factory=list)
    reconcile_runs: int = 0
    attempts: list[RecordAttemptInput] = field(default_factory=list)
    outcomes: list[RecordOutcomeInput] = field(default_factory=list)
    # "dial:1", "reconcile:1,2", ...: the order of provider interactions.
    log: list[str] = field(default_factory=list)
    # The carrier's ledger: attempt -> leg id of every call actually placed.
    ledger: dict[int, str] = field(default_factory=dict)

    def place(self, dial: DialInput) -> str:
        leg = f"LEG-{dial.attempt}"
        self.ledger[dial.attempt] = leg
        return leg

    # -- activities (names as registered by worker.py) --

    @activity.defn(name="prepare_call")
    async def prepare_call(self, input: CreateCallInput) -> PrepareCallResult:
        # Like the real one: validate, then persist the session with what validation found.
        self.validations.append(input)
        self.persists.append(PersistSessionInput(call=input, validation=self.validation))
        return PrepareCallResult(validation=self.validation, stored=self.persisted)

    @activity.defn(name="admit_call")
    async def admit_call(self, input: AdmitCallInput) -> AdmitCallResult:
        self.admits += 1
        return self.admit_verdicts.pop(0) if self.admit_verdicts else AdmitCallResult()

    @activity.defn(name="record_attempt")
    async def record_attempt(self, input: RecordAttemptInput) -> None:
        self.attempts.append(input)

    @activity.defn(name="record_outcome")
    async def record_outcome(self, input: RecordOutcomeInput) -> None:
        self.outcomes.append(input)

    @activity.defn(name="dial")
    async def dial(self, input: DialInput) -> DialResult:
        self.dials.append(replace(input))
        self.log.append(f"dial:{input.attempt}")
        step = self.dial_steps.get(input.attempt, self.default_dial)
        return await step(self, input)

    @activity.defn(name="reconcile_dial")
    async def reconcile_dial(self, input: ReconcileInput) -> ReconcileResult:
        self.reconcile_runs += 1
        if self.reconcile_fails:
            raise RuntimeError("the carrier's API is down")
        self.reconciles.append(input)
        self.log.append("reconcile:" + ",".join(str(a) for a in input.attempts))
        for attempt in input.attempts:
            if attempt in self.ledger:
                return ReconcileResult(telephony_leg_id=self.ledger[attempt])
        return ReconcileResult(telephony_leg_id=None)

    # Step 5 (following a placed call): the call is reported completed at the first poll,
    # so a run that follows its call ends as soon as time skipping reaches that poll.

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: Any) -> None:
        return None

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(self, input: Any) -> dict[str, Any]:
        leg = input.get("telephony_leg_id") if isinstance(input, dict) else None
        return {
            "update": {
                "status": "completed",
                "telephony_leg_id": leg,
                "duration_seconds": 5,
                "source": "poll",
            }
        }

    # -- derived --

    @property
    def dial_attempts(self) -> list[int]:
        return [d.attempt for d in self.dials]

    @property
    def outcome(self) -> RecordOutcomeInput:
        assert len(self.outcomes) == 1, f"expected one recorded outcome, got {self.outcomes}"
        return self.outcomes[0]


# --- running a call -------------------------------------------------------------------------


@dataclass
class Run:
    env: WorkflowEnvironment
    fakes: Fakes
    call: CreateCallInput

    @property
    def client(self) -> Client:
        return self.env.client

    @property
    def handle(self) -> WorkflowHandle[Any, CallState]:
        return self.client.get_workflow_handle_for(
            CreateCallWorkflow.run, self.call.call_session_id
        )

    def start_operation(self) -> WithStartWorkflowOperation[Any, CallState]:
        """The start half of update-with-start, with the options the API uses."""
        summary, details = summary_for(self.call)
        return WithStartWorkflowOperation(
            CreateCallWorkflow.run,
            self.call,
            id=self.call.call_session_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(search_attributes_for(self.call)),
            static_summary=summary,
            static_details=details,
        )

    @property
    def task_queue(self) -> str:
        return f"calls-{self.call.call_session_id}"

    async def create(
        self, wait: Stage = Stage.ACCEPTED, request_hash: str | None = None
    ) -> CallState:
        """What POST /api/call/create_call does: update-with-start, answer at `wait`."""
        async with self.time_skipping():
            return await asyncio.wait_for(
                self.client.execute_update_with_start_workflow(
                    CreateCallWorkflow.wait_for_stage,
                    WaitForStageInput(
                        stage=wait, request_hash=request_hash or self.call.request_hash
                    ),
                    start_workflow_operation=self.start_operation(),
                ),
                WAIT_BOUND,
            )

    async def update(self, stage: str, request_hash: str) -> CallState:
        """The update alone, straight to the running workflow. Any string: a client may send
        a stage that does not exist, and the workflow must refuse it."""
        return await asyncio.wait_for(
            self.handle.execute_update(
                CreateCallWorkflow.wait_for_stage,
                WaitForStageInput(stage=cast(Stage, stage), request_hash=request_hash),
            ),
            WAIT_BOUND,
        )

    def time_skipping(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Let the server skip time while the test waits on the workflow. Only handles made
        by start_workflow do that by themselves, not update-with-start or a fetched handle."""
        unlocked = getattr(self.env, "time_skipping_unlocked", None)
        return unlocked() if unlocked else contextlib.nullcontext()

    async def finish(self, timeout: float = WAIT_BOUND) -> CallState:
        """The run's result. While waiting for it the server skips time (backoff timers, and
        a placed call's follow-up, which the fakes end at the first poll)."""
        async with self.time_skipping():
            return await asyncio.wait_for(call_result(self.handle), timeout)

    async def history(self) -> list[HistoryEvent]:
        return [event async for event in self.handle.fetch_history_events()]

    async def backoff_timers(self) -> list[float]:
        """Durations (s) of the timers started between the first dial and the last provider
        call (dial or reconcile): the waits of the dialing loop, nothing after it."""
        events = await self.history()
        provider_calls = [
            i
            for i, e in enumerate(events)
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name
            in ("dial", "reconcile_dial")
        ]
        if not provider_calls:
            return []
        first, last = provider_calls[0], provider_calls[-1]
        return [
            e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
            for e in events[first:last]
            if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        ]

    async def scheduled(self, activity_type: str) -> int:
        """How many times the workflow scheduled an activity of this type (history)."""
        return sum(
            1
            for e in await self.history()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
        )


def new_call(**policy: Any) -> CreateCallInput:
    session_id = str(uuid.uuid4())
    return CreateCallInput(
        call_session_id=session_id,
        request_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        phone_number="+1 (202) 555-0100",
        request_hash="f" * 64,
        agent_id=str(uuid.uuid4()),
        idempotency_key="order-1",
        # The production defaults (1 s doubling to 30 s, 5 attempts), on this test's queue.
        policy=DialPolicy(task_queue=f"dial-{session_id}", **policy),
    )


@asynccontextmanager
async def running(
    env: WorkflowEnvironment, fakes: Fakes | None = None, **policy: Any
) -> AsyncIterator[Run]:
    """Workers for one test: the call worker (workflow + local DB activities) on a fresh task
    queue, and the dial worker on the call's own dial queue, as worker.py wires them."""
    fakes = fakes or Fakes()
    run = Run(env=env, fakes=fakes, call=new_call(**policy))
    call_worker = Worker(
        env.client,
        task_queue=run.task_queue,
        workflows=[CreateCallWorkflow],
        # Always sandboxed here: the worker runs unsandboxed unless DIALER_WORKFLOW_SANDBOX.
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[
            fakes.prepare_call,
            fakes.admit_call,
            fakes.record_attempt,
            fakes.record_outcome,
            fakes.record_call_status,
            fakes.fetch_call_status,
        ],
    )
    dial_worker = Worker(
        env.client,
        task_queue=run.call.policy.task_queue,
        activities=[fakes.dial, fakes.reconcile_dial],
    )
    async with call_worker, dial_worker:
        yield run
