"""create_call: start the workflow with update-with-start and wait for the asked stage, within
a budget. Every path hands back the ids; none dials twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from fastapi.concurrency import run_in_threadpool
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

from api.schemas import CreateCallResponse
from api.temporal import TemporalGateway, TemporalUnavailable
from dialer.config import Settings
from dialer.logs import bind_call
from dialer.phone import InvalidNumber, normalize
from store import calls as store_calls
from store.models import CallSession
from workflows.create_call import CreateCallWorkflow, search_attributes_for, summary_for
from workflows.dto import (
    FAILED,
    CallState,
    CreateCallInput,
    DialPolicy,
    FailureCode,
    FollowPolicy,
    PersistSessionInput,
    ValidationResult,
    WaitForStageInput,
)

log = logging.getLogger(__name__)

# Namespaces for ids derived from (user, Idempotency-Key): the same key always maps to the
# same workflow id, so a retried request can never start a second workflow.
_SESSION_NS = uuid.UUID("6f1c8a52-5d0e-4a0b-9a55-0d6b3c1f2e01")
_REQUEST_NS = uuid.UUID("6f1c8a52-5d0e-4a0b-9a55-0d6b3c1f2e02")
# Time allowed to make sure the workflow exists once the wait budget ran out.
_ENSURE_STARTED_TIMEOUT = 5.0

IDEMPOTENCY_CONFLICT = "Idempotency-Key was already used with different parameters"

# RPC failures after which the request may have reached the server (it timed out or was cut
# off), as opposed to a server that refused it or could not be reached.
_MAYBE_STARTED = frozenset(
    {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN}
)


@dataclass(frozen=True)
class CallRequest:
    user_id: uuid.UUID
    phone_number: str
    agent_id: uuid.UUID | None
    flow_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    wait: str
    idempotency_key: str | None


def request_fingerprint(req: CallRequest, region: str) -> str:
    try:
        number = normalize(req.phone_number, region)
    except InvalidNumber:
        number = req.phone_number.strip()
    parts = [number, req.agent_id, req.flow_id, req.phone_number_id]
    return hashlib.sha256(json.dumps([str(p) if p else None for p in parts]).encode()).hexdigest()


def ids_for(req: CallRequest) -> tuple[uuid.UUID, uuid.UUID]:
    if req.idempotency_key is None:
        return uuid.uuid4(), uuid.uuid4()
    name = f"{req.user_id}:{req.idempotency_key}"
    return uuid.uuid5(_SESSION_NS, name), uuid.uuid5(_REQUEST_NS, name)


def public_status(session_status: str) -> str:
    return "failed" if session_status == FAILED else "success"


def response_from_row(row: CallSession) -> CreateCallResponse:
    return CreateCallResponse(
        status=public_status(row.status),  # type: ignore[arg-type]
        request_id=row.request_id,
        call_session_id=row.id,
        user_id=row.user_id,
        target_number=row.target_number or row.requested_number,
        from_phone_number=row.from_number,
        telephony_leg_id=row.telephony_leg_id,
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
    )


class CallStarter:
    def __init__(self, settings: Settings, engine: Engine, temporal: TemporalGateway) -> None:
        self._settings = settings
        self._engine = engine
        self._temporal = temporal

    def _policy(self) -> DialPolicy:
        s = self._settings
        return DialPolicy(
            max_attempts=s.dial_max_attempts,
            backoff_initial_seconds=s.dial_backoff_initial_seconds,
            backoff_max_seconds=s.dial_backoff_max_seconds,
            timeout_seconds=s.dial_timeout_seconds,
            task_queue=s.dial_task_queue,
        )

    def _follow(self) -> FollowPolicy:
        s = self._settings
        return FollowPolicy(
            poll_after_seconds=s.call_status_poll_seconds,
            poll_max_seconds=s.call_status_poll_max_seconds,
            max_age_seconds=s.call_max_age_seconds,
        )

    def _load(self, session_id: uuid.UUID) -> CallSession | None:
        with Session(self._engine) as session:
            return session.get(CallSession, session_id)

    async def create(self, req: CallRequest) -> CreateCallResponse:
        fingerprint = request_fingerprint(req, self._settings.default_region)
        session_id, request_id = ids_for(req)
        bind_call(request_id=str(request_id), call_session_id=str(session_id))
        call = CreateCallInput(
            call_session_id=str(session_id),
            request_id=str(request_id),
            user_id=str(req.user_id),
            phone_number=req.phone_number,
            request_hash=fingerprint,
            agent_id=str(req.agent_id) if req.agent_id else None,
            flow_id=str(req.flow_id) if req.flow_id else None,
            phone_number_id=str(req.phone_number_id) if req.phone_number_id else None,
            idempotency_key=req.idempotency_key,
            policy=self._policy(),
            follow=self._follow(),
        )

        if req.idempotency_key is not None:
            existing = await run_in_threadpool(self._load, session_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise HTTPException(status.HTTP_409_CONFLICT, IDEMPOTENCY_CONFLICT)
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

    def _start_options(self, call: CreateCallInput) -> dict[str, Any]:
        summary, details = summary_for(call)
        return {
            "id": call.call_session_id,
            "task_queue": self._settings.task_queue,
            # A running workflow with this id is the same request: join it. A closed one must
            # never be started again, or a retry would dial the person twice.
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "search_attributes": TypedSearchAttributes(search_attributes_for(call)),
            "static_summary": summary,
            "static_details": details,
        }

    async def _start_and_wait(
        self, client: Client, call: CreateCallInput, wait: str
    ) -> CreateCallResponse:
        try:
            state: CallState = await asyncio.wait_for(
                client.execute_update_with_start_workflow(
                    CreateCallWorkflow.wait_for_stage,
                    WaitForStageInput(stage=wait, request_hash=call.request_hash),
                    start_workflow_operation=WithStartWorkflowOperation(
                        CreateCallWorkflow.run, call, **self._start_options(call)
                    ),
                ),
                self._settings.create_call_wait_seconds,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The budget ran out (or the server's long poll did): make sure it runs, answer pending.
            return await self._start_without_waiting(client, call)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "IdempotencyConflict":
                raise HTTPException(status.HTTP_409_CONFLICT, IDEMPOTENCY_CONFLICT) from err
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

    async def _start_without_waiting(
        self, client: Client, call: CreateCallInput
    ) -> CreateCallResponse:
        """Make sure the workflow exists (it will proceed on its own), then answer pending."""
        try:
            await asyncio.wait_for(
                client.start_workflow(CreateCallWorkflow.run, call, **self._start_options(call)),
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
                raise HTTPException(status.HTTP_409_CONFLICT, IDEMPOTENCY_CONFLICT)
        return await self._from_row_or_pending(call)

    async def _started_hash(self, client: Client, workflow_id: str) -> str | None:
        """The request fingerprint the run of `workflow_id` was started with, if readable."""
        try:
            events = client.get_workflow_handle(workflow_id).fetch_history_events()
            async for event in events:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [started] = await client.data_converter.decode(payloads, [CreateCallInput])
                return started.request_hash
        except RPCError:
            log.warning("could not read the start input", extra={"call_session_id": workflow_id})
        return None

    async def _from_row_or_pending(self, call: CreateCallInput) -> CreateCallResponse:
        row = await run_in_threadpool(self._load, uuid.UUID(call.call_session_id))
        if row is not None:
            if row.request_hash != call.request_hash:
                raise HTTPException(status.HTTP_409_CONFLICT, IDEMPOTENCY_CONFLICT)
            return response_from_row(row)
        return self._pending(call)

    def _pending(self, call: CreateCallInput) -> CreateCallResponse:
        try:
            target = normalize(call.phone_number, self._settings.default_region)
        except InvalidNumber:
            target = call.phone_number.strip()
        return CreateCallResponse(
            status="pending",
            request_id=uuid.UUID(call.request_id),
            call_session_id=uuid.UUID(call.call_session_id),
            user_id=uuid.UUID(call.user_id),
            target_number=target,
        )

    async def _current(self, row: CallSession, wait: str) -> CreateCallResponse:
        """A known session: wait (within the budget) for the asked stage if it is still
        running, without ever starting it again."""
        reached = row.status == FAILED or row.telephony_leg_id or wait == "accepted"
        if reached:
            return response_from_row(row)
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
            fresh = await run_in_threadpool(self._load, row.id)
            return response_from_row(fresh or row)
        return self._from_state(state, None, row)

    def _from_state(
        self, state: CallState, call: CreateCallInput | None, row: CallSession | None = None
    ) -> CreateCallResponse:
        target = state.target_number or (call.phone_number if call else None)
        if target is None and row is not None:
            target = row.target_number or row.requested_number
        return CreateCallResponse(
            status=public_status(state.status),  # type: ignore[arg-type]
            request_id=uuid.UUID(state.request_id),
            call_session_id=uuid.UUID(state.call_session_id),
            user_id=uuid.UUID(state.user_id),
            target_number=(target or "").strip(),
            from_phone_number=state.from_phone_number,
            telephony_leg_id=state.telephony_leg_id,
            failure_code=state.failure_code,
            failure_reason=state.failure_reason,
        )

    async def _record_unavailable(self, call: CreateCallInput) -> CreateCallResponse:
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
        await run_in_threadpool(
            store_calls.persist_session,
            self._engine,
            PersistSessionInput(call=call, validation=validation),
        )
        return await self._from_row_or_pending(call)
