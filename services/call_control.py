"""Cancel and hang up a call (POST /api/v1/calls/{id}/cancel and .../hangup): the call_control
update of the call's CreateCallWorkflow, which alone decides what happens, so a dial in
flight is reconciled first and a call is never dialed after it was canceled.

The update is admitted first (its validator refuses a call that is over: 409), then awaited
within the create_call wait budget; past it the answer is `pending` and the workflow applies
the request anyway. A repeat of a request that already ended the call answers as the first
did; a call that ended otherwise is over (409)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from contracts.calls import (
    TERMINAL,
    CallControlInput,
    CallControlResult,
    CallState,
    ControlAction,
    ControlOutcome,
    EndedReason,
    ErrorType,
)
from contracts.lifecycle import is_final
from core.config import Settings
from services.temporal import TemporalGateway
from store.models import CallSession
from workflows.create_call import CreateCallWorkflow

# What a call that a control request ended shows: a repeat of the request answers with it.
_ENDED_BY_CONTROL = {
    EndedReason.CANCELED: ControlOutcome.CANCELED,
    EndedReason.HANGUP_REQUESTED: ControlOutcome.HANGUP_SENT,
}


class CallNotFound(Exception):
    """No such call session for this user (HTTP 404, like another user's)."""


class CallOver(Exception):
    """The call is over: there is nothing to cancel or hang up (HTTP 409)."""


@dataclass(frozen=True)
class ControlAnswer:
    call_session_id: uuid.UUID
    action: ControlAction
    outcome: ControlOutcome
    status: str
    call_status: str | None
    ended_reason: str | None


def _over(row: CallSession) -> bool:
    return (
        row.ended_reason is not None
        or is_final(row.call_status)
        or (row.status in TERMINAL and not row.telephony_leg_id)
    )


class CallController:
    def __init__(self, settings: Settings, engine: Engine, temporal: TemporalGateway) -> None:
        self._settings = settings
        self._engine = engine
        self._temporal = temporal

    def _load(self, user_id: uuid.UUID, session_id: uuid.UUID) -> CallSession | None:
        with Session(self._engine) as session:
            row = session.get(CallSession, session_id)
            return row if row is not None and row.user_id == user_id else None

    async def control(
        self,
        *,
        user_id: uuid.UUID,
        call_session_id: uuid.UUID,
        action: ControlAction,
        requested_by: str,
    ) -> ControlAnswer:
        """Raises CallNotFound, CallOver, or services.temporal.TemporalUnavailable."""
        row = await asyncio.to_thread(self._load, user_id, call_session_id)
        if row is None:
            raise CallNotFound()
        if _over(row):
            return self._repeat(row, action)
        client = await self._temporal.client()
        handle = client.get_workflow_handle_for(CreateCallWorkflow.run, str(row.id))
        try:
            update = await handle.start_update(
                CreateCallWorkflow.call_control,
                CallControlInput(action=action, requested_by=requested_by),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.CALL_OVER:
                return await self._reloaded(row, action)
            raise
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # the run closed meanwhile
                return await self._reloaded(row, action)
            raise
        try:
            # The SDK types the handle of an async update method as the coroutine's.
            waiting = cast("Awaitable[CallControlResult]", update.result())
            result = await asyncio.wait_for(waiting, self._settings.create_call_wait_seconds)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # Admitted: the workflow applies it (a dial in flight first comes back).
            return self._from_row(row, action, ControlOutcome.PENDING)
        return self._from_state(result.state, action, result.outcome)

    async def _reloaded(self, row: CallSession, action: ControlAction) -> ControlAnswer:
        fresh = await asyncio.to_thread(self._load, row.user_id, row.id)
        return self._repeat(fresh or row, action)

    def _repeat(self, row: CallSession, action: ControlAction) -> ControlAnswer:
        """A call that is over: the answer of the control request that ended it, or 409."""
        outcome = _ENDED_BY_CONTROL.get(EndedReason(row.ended_reason)) if row.ended_reason else None
        if outcome is None:
            raise CallOver()
        return self._from_row(row, action, outcome)

    @staticmethod
    def _from_row(
        row: CallSession, action: ControlAction, outcome: ControlOutcome
    ) -> ControlAnswer:
        return ControlAnswer(
            call_session_id=row.id,
            action=action,
            outcome=outcome,
            status=row.status,
            call_status=row.call_status,
            ended_reason=row.ended_reason,
        )

    @staticmethod
    def _from_state(
        state: CallState, action: ControlAction, outcome: ControlOutcome
    ) -> ControlAnswer:
        return ControlAnswer(
            call_session_id=uuid.UUID(state.call_session_id),
            action=action,
            outcome=outcome,
            status=state.status,
            call_status=state.call_status,
            ended_reason=state.ended_reason,
        )
