"""The one way a CreateCallWorkflow is built and started, for create_call and campaigns alike:
the ids, the request fingerprint, the policies from settings, the start options that make a
second dial impossible (`start_options`), and `CallStarter`, create_call's start with
update-with-start and a wait for the asked stage within a budget. Every path hands back the
ids; none dials twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from contracts.calls import (
    CallOptions,
    CallPolicies,
    CallSpec,
    CallState,
    CreateCallInput,
    DialPolicy,
    ErrorType,
    FailureCode,
    FollowPolicy,
    MachineDetection,
    PersistSessionInput,
    SessionStatus,
    Stage,
    ValidationResult,
    WaitForStageInput,
)
from core import ids
from core.config import Settings
from core.logs import bind_call
from core.phone import InvalidNumber, normalize
from services.temporal import TemporalGateway, TemporalUnavailable
from store import calls as store_calls
from store.models import CallSession
from workflows.create_call import (
    CreateCallWorkflow,
    call_priority,
    search_attributes_for,
    summary_for,
)

log = logging.getLogger(__name__)

# Time allowed to make sure the workflow exists once the wait budget ran out.
_ENSURE_STARTED_TIMEOUT = 5.0
# Starts in flight at once from one batch (a campaign tick): enough to keep up with a high
# rate, few enough to stay far from the server's limits.
START_CONCURRENCY = 20

IDEMPOTENCY_CONFLICT = "Idempotency-Key was already used with different parameters"

# RPC failures after which the request may have reached the server (it timed out or was cut
# off), as opposed to a server that refused it or could not be reached.
_MAYBE_STARTED = frozenset(
    {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN}
)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with other parameters (HTTP 409)."""

    def __init__(self) -> None:
        super().__init__(IDEMPOTENCY_CONFLICT)


# --- building and starting a call: the rules that never dial twice -------------------------


def call_policies(settings: Settings) -> CallPolicies:
    """How every call dials and is followed, single or campaign: from settings."""
    return CallPolicies(
        dial=DialPolicy(
            max_attempts=settings.dial_max_attempts,
            backoff_initial_seconds=settings.dial_backoff_initial_seconds,
            backoff_max_seconds=settings.dial_backoff_max_seconds,
            timeout_seconds=settings.dial_timeout_seconds,
            task_queue=settings.dial_task_queue,
        ),
        follow=FollowPolicy(
            poll_after_seconds=settings.call_status_poll_seconds,
            poll_max_seconds=settings.call_status_poll_max_seconds,
            max_age_seconds=settings.call_max_age_seconds,
        ),
    )


def normalized_or_raw(number: str, region: str) -> str:
    """The E.164 form where the number can be read, else the number as sent (stripped):
    validation in the workflow decides what an unreadable number means."""
    try:
        return normalize(number, region)
    except InvalidNumber:
        return number.strip()


def default_options(settings: Settings) -> CallOptions:
    """A call's options when it asks for none: the settings' defaults."""
    detection = MachineDetection(settings.machine_detection or MachineDetection.OFF)
    if settings.machine_detection is None and settings.twilio_machine_detection:
        detection = MachineDetection.DETECT  # the deprecated global pass-through, kept working
    return CallOptions(
        max_duration_seconds=settings.max_duration_seconds, machine_detection=detection
    )


def options_for(spec: CallSpec, defaults: CallOptions) -> CallOptions:
    """The spec's options, a max_duration_seconds it leaves out being the setting's; no
    options at all: the settings' defaults. (A caller resolves machine_detection itself: it
    knows whether the client left it out or asked for `off`.)"""
    if spec.options is None:
        return dataclasses.replace(defaults)
    return dataclasses.replace(
        spec.options,
        max_duration_seconds=spec.options.max_duration_seconds or defaults.max_duration_seconds,
    )


def _option_fingerprint(options: CallOptions | None) -> dict[str, object] | None:
    """What a spec's own options add to its fingerprint (None: no options, as before)."""
    if options is None:
        return None
    values = {k: v for k, v in dataclasses.asdict(options).items() if v not in (None, "off")}
    return values or None


def request_fingerprint(spec: CallSpec, region: str) -> str:
    """What the call asks for (the number as it will be dialed, agent, workflow, line), for
    the Idempotency-Key check. Ids, key and campaign are not part of it."""
    options = _option_fingerprint(spec.options)
    metadata = dict(spec.metadata)
    if options:
        # In the fingerprint with the metadata (core.ids stays as it is): a call without
        # options hashes as it did before they existed.
        metadata["\x00options"] = json.dumps(options, sort_keys=True)
    return ids.request_fingerprint(
        normalized_or_raw(spec.phone_number, region),
        spec.agent_id,
        spec.flow_id,
        spec.phone_number_id,
        spec.variables,
        metadata,
    )


def call_input(
    spec: CallSpec,
    policies: CallPolicies,
    region: str,
    defaults: CallOptions | None = None,
) -> CreateCallInput:
    """The workflow input of a call: its spec, its fingerprint, its policies and options."""
    return CreateCallInput(
        call_session_id=spec.call_session_id,
        request_id=spec.request_id,
        user_id=spec.user_id,
        phone_number=spec.phone_number,
        request_hash=request_fingerprint(spec, region),
        agent_id=spec.agent_id,
        flow_id=spec.flow_id,
        phone_number_id=spec.phone_number_id,
        idempotency_key=spec.idempotency_key,
        campaign_id=spec.campaign_id,
        policy=policies.dial,
        follow=policies.follow,
        dial_slot=spec.dial_slot,
        variables=dict(spec.variables),
        metadata=dict(spec.metadata),
        options=options_for(spec, defaults or CallOptions()),
    )


def start_options(call: CreateCallInput, task_queue: str) -> dict[str, Any]:
    """The start options of every CreateCallWorkflow."""
    summary, details = summary_for(call)
    return {
        "id": call.call_session_id,
        "task_queue": task_queue,
        # Single calls ahead of campaign calls, each user a fairness key; the dial inherits
        # it, and the workflow sets it again with the account's weight.
        "priority": call_priority(call.user_id, call.campaign_id),
        # A running workflow with this id is the same request: join it. A closed one must
        # never be started again, or a retry would dial the person twice.
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        "search_attributes": TypedSearchAttributes(search_attributes_for(call)),
        "static_summary": summary,
        "static_details": details,
    }


async def start_call(client: Client, call: CreateCallInput, task_queue: str) -> None:
    """Start the call's workflow, or join it if it runs. Raises WorkflowAlreadyStartedError
    when it ran and closed already: it is never started again."""
    await client.start_workflow(CreateCallWorkflow.run, call, **start_options(call, task_queue))


async def start_call_and_wait(
    client: Client, call: CreateCallInput, task_queue: str, stage: Stage
) -> CallState:
    """Start (or join) the call's workflow and wait for `stage`, in one update-with-start."""
    state: CallState = await client.execute_update_with_start_workflow(
        CreateCallWorkflow.wait_for_stage,
        WaitForStageInput(stage=stage, request_hash=call.request_hash),
        start_workflow_operation=WithStartWorkflowOperation(
            CreateCallWorkflow.run, call, **start_options(call, task_queue)
        ),
    )
    return state


class TemporalCallLauncher:
    """Starts a campaign tick's calls (activities/campaigns.py `CallLauncher`): each one once,
    a call whose workflow exists already is left be, so a repeated start after a crash or a
    retry can never dial a recipient twice."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._task_queue = settings.task_queue
        self._region = settings.default_region
        self._policies = call_policies(settings)
        self._defaults = default_options(settings)

    async def start(self, calls: list[CallSpec]) -> None:
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def one(spec: CallSpec) -> None:
            async with gate:
                try:
                    await start_call(
                        self._client,
                        call_input(spec, self._policies, self._region, self._defaults),
                        self._task_queue,
                    )
                except WorkflowAlreadyStartedError:
                    pass  # it ran already: the recipient's call exists

        await asyncio.gather(*(one(c) for c in calls))


# --- create_call -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRequest:
    user_id: uuid.UUID
    phone_number: str
    agent_id: uuid.UUID | None
    flow_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    wait: Stage
    idempotency_key: str | None
    variables: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    options: CallOptions | None = None


class AnswerStatus(StrEnum):
    """What create_call answers: `success`, `failed` (see failure_code) or `pending`."""

    SUCCESS = "success"  # accepted, or dialed (see CallStarter.create)
    FAILED = "failed"  # recorded as failed: failure_code says why
    PENDING = "pending"  # the wait budget ran out; the call proceeds durably


@dataclass(frozen=True)
class CallAnswer:
    """What create_call answers (api/schemas.py `CreateCallResponse` has the same fields)."""

    status: AnswerStatus
    request_id: uuid.UUID
    call_session_id: uuid.UUID
    user_id: uuid.UUID
    target_number: str
    from_phone_number: str | None = None
    telephony_leg_id: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    call_status: str | None = None  # `scheduled` while a scheduled call waits
    scheduled_at: str | None = None


def ids_for(req: CallRequest) -> tuple[uuid.UUID, uuid.UUID]:
    return ids.call_ids(req.user_id, req.idempotency_key)


def spec_for(req: CallRequest) -> CallSpec:
    session_id, request_id = ids_for(req)
    return CallSpec(
        call_session_id=str(session_id),
        request_id=str(request_id),
        user_id=str(req.user_id),
        phone_number=req.phone_number,
        agent_id=str(req.agent_id) if req.agent_id else None,
        flow_id=str(req.flow_id) if req.flow_id else None,
        phone_number_id=str(req.phone_number_id) if req.phone_number_id else None,
        idempotency_key=req.idempotency_key,
        variables=dict(req.variables),
        metadata=dict(req.metadata),
        options=req.options,
    )


def public_status(session_status: str) -> AnswerStatus:
    return AnswerStatus.FAILED if session_status == SessionStatus.FAILED else AnswerStatus.SUCCESS


def answer_from_row(row: CallSession) -> CallAnswer:
    return CallAnswer(
        status=public_status(row.status),
        request_id=row.request_id,
        call_session_id=row.id,
        user_id=row.user_id,
        target_number=row.target_number or row.requested_number,
        from_phone_number=row.from_number,
        telephony_leg_id=row.telephony_leg_id,
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
        call_status=row.call_status,
        scheduled_at=row.scheduled_at.isoformat() if row.scheduled_at else None,
    )


class CallStarter:
    def __init__(self, settings: Settings, engine: Engine, temporal: TemporalGateway) -> None:
        self._settings = settings
        self._engine = engine
        self._temporal = temporal

    def _load(self, session_id: uuid.UUID) -> CallSession | None:
        with Session(self._engine) as session:
            return session.get(CallSession, session_id)

    async def create(self, req: CallRequest) -> CallAnswer:
        """Start the call (or find it again by its Idempotency-Key) and answer at the asked
        stage. Under `wait=dialed`, `success` always carries the leg id: a call that is
        accepted but not dialed yet when the budget runs out (or on a path that does not
        wait) answers `pending`, never `success`."""
        answer = await self._create(req)
        if (
            req.wait == Stage.DIALED
            and answer.status == AnswerStatus.SUCCESS
            and not answer.telephony_leg_id
        ):
            return replace(answer, status=AnswerStatus.PENDING)
        return answer

    async def _create(self, req: CallRequest) -> CallAnswer:
        call = call_input(
            spec_for(req),
            call_policies(self._settings),
            self._settings.default_region,
            default_options(self._settings),
        )
        bind_call(request_id=call.request_id, call_session_id=call.call_session_id)
        session_id = uuid.UUID(call.call_session_id)

        if req.idempotency_key is not None:
            existing = await asyncio.to_thread(self._load, session_id)
            if existing is not None:
                if existing.request_hash != call.request_hash:
                    raise IdempotencyConflict()
                # Already known: never start anything again, only report the current state.
                return await self._current(existing, req.wait)

        try:
            client = await self._temporal.client()
        except TemporalUnavailable:
            return await self._record_unavailable(call)

        if self._temporal.waits.locked():
            # Too many requests are already waiting: start durably, answer pending.
            return await self._start_without_waiting(client, call)
        async with self._temporal.waits:
            return await self._start_and_wait(client, call, req.wait)

    async def _start_and_wait(
        self, client: Client, call: CreateCallInput, wait: Stage
    ) -> CallAnswer:
        try:
            state = await asyncio.wait_for(
                start_call_and_wait(client, call, self._settings.task_queue, wait),
                self._settings.create_call_wait_seconds,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The budget ran out (or the server's long poll did): make sure it runs, answer pending.
            return await self._start_without_waiting(client, call)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.IDEMPOTENCY_CONFLICT:
                raise IdempotencyConflict() from err
            raise
        except WorkflowAlreadyStartedError:
            # The workflow ran and closed already: its row is the answer.
            return await self._from_row_or_pending(call)
        except RPCError as err:
            log.warning("Temporal RPC failed", extra={"call_session_id": call.call_session_id})
            if err.status in _MAYBE_STARTED:
                # An overloaded server may have started the run before the RPC gave up:
                # starting it again is safe (same workflow id), and answers pending if it
                # exists or can be started now; only then is it given up as unavailable.
                return await self._start_without_waiting(client, call)
            return await self._record_unavailable(call)
        return self._from_state(state, call)

    async def _start_without_waiting(self, client: Client, call: CreateCallInput) -> CallAnswer:
        """Make sure the workflow exists (it will proceed on its own), then answer pending."""
        try:
            await asyncio.wait_for(
                start_call(client, call, self._settings.task_queue),
                _ENSURE_STARTED_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            return await self._from_row_or_pending(call)
        except (TimeoutError, RPCError):
            return await self._record_unavailable(call)
        if call.idempotency_key is not None:
            # The key may have joined a run started with other parameters that has not
            # persisted its row yet: only its start input tells, and it must answer 409.
            started = await self._started_hash(client, call.call_session_id)
            if started is not None and started != call.request_hash:
                raise IdempotencyConflict()
        return await self._from_row_or_pending(call)

    async def _started_hash(self, client: Client, workflow_id: str) -> str | None:
        """The request fingerprint the run of `workflow_id` was started with, if readable."""
        try:
            events = client.get_workflow_handle(workflow_id).fetch_history_events()
            async for event in events:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                # decode() is typed list[Any]: the type hints passed in say what comes out.
                decoded: list[CreateCallInput]
                decoded = await client.data_converter.decode(payloads, [CreateCallInput])
                [started] = decoded
                return started.request_hash
        except RPCError:
            log.warning("could not read the start input", extra={"call_session_id": workflow_id})
        return None

    async def _from_row_or_pending(self, call: CreateCallInput) -> CallAnswer:
        row = await asyncio.to_thread(self._load, uuid.UUID(call.call_session_id))
        if row is not None:
            if row.request_hash != call.request_hash:
                raise IdempotencyConflict()
            return answer_from_row(row)
        return self._pending(call)

    def _pending(self, call: CreateCallInput) -> CallAnswer:
        return CallAnswer(
            status=AnswerStatus.PENDING,
            request_id=uuid.UUID(call.request_id),
            call_session_id=uuid.UUID(call.call_session_id),
            user_id=uuid.UUID(call.user_id),
            target_number=normalized_or_raw(call.phone_number, self._settings.default_region),
        )

    async def _current(self, row: CallSession, wait: Stage) -> CallAnswer:
        """A known session: wait (within the budget) for the asked stage if it is still
        running, without ever starting it again."""
        reached = (
            row.status == SessionStatus.FAILED or row.telephony_leg_id or wait == Stage.ACCEPTED
        )
        if reached:
            return answer_from_row(row)
        try:
            client = await self._temporal.client()
            handle = client.get_workflow_handle(str(row.id))
            state: CallState = await asyncio.wait_for(
                handle.execute_update(
                    CreateCallWorkflow.wait_for_stage,
                    WaitForStageInput(stage=wait, request_hash=row.request_hash),
                ),
                self._settings.create_call_wait_seconds,
            )
        except (
            TemporalUnavailable,
            TimeoutError,
            RPCError,
            WorkflowUpdateFailedError,
            WorkflowUpdateRPCTimeoutOrCancelledError,
        ):
            fresh = await asyncio.to_thread(self._load, row.id)
            return answer_from_row(fresh or row)
        return self._from_state(state, None, row)

    def _from_state(
        self, state: CallState, call: CreateCallInput | None, row: CallSession | None = None
    ) -> CallAnswer:
        target = state.target_number or (call.phone_number if call else None)
        if target is None and row is not None:
            target = row.target_number or row.requested_number
        return CallAnswer(
            status=public_status(state.status),
            request_id=uuid.UUID(state.request_id),
            call_session_id=uuid.UUID(state.call_session_id),
            user_id=uuid.UUID(state.user_id),
            target_number=(target or "").strip(),
            from_phone_number=state.from_phone_number,
            telephony_leg_id=state.telephony_leg_id,
            failure_code=state.failure_code,
            failure_reason=state.failure_reason,
            call_status=state.call_status,
            scheduled_at=state.scheduled_at,
        )

    async def _record_unavailable(self, call: CreateCallInput) -> CallAnswer:
        """Temporal cannot be reached: record the session as failed so the client has ids to
        trace, and so a workflow that did start after all finds it terminal and does not dial."""
        try:
            target = normalize(call.phone_number, self._settings.default_region)
        except InvalidNumber:
            target = None
        validation = ValidationResult(
            ok=False,
            target_number=target,
            failure_code=FailureCode.ORCHESTRATOR_UNAVAILABLE,
            failure_reason="the call orchestrator is unreachable; the call was not placed",
        )
        await asyncio.to_thread(
            store_calls.persist_session,
            self._engine,
            PersistSessionInput(call=call, validation=validation),
        )
        return await self._from_row_or_pending(call)
