"""A CreateCallWorkflow's final CallState, whether the run completed or failed: a call that
failed ends its run as Failed (workflows/create_call.py `_finish`), with the state as the
failure's first detail."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.converter import value_to_type
from temporalio.exceptions import ApplicationError

from contracts.calls import CallState, ErrorType


def failed_call_state(err: WorkflowFailureError) -> CallState | None:
    """The state a failed call's run carries, or None for any other failure."""
    cause = err.cause
    if not (isinstance(cause, ApplicationError) and cause.type == ErrorType.CALL_FAILED):
        return None
    assert cause.non_retryable, "a failed call must never be retried by Temporal"
    state: CallState = value_to_type(CallState, cause.details[0])
    return state


async def call_result(handle: WorkflowHandle[Any, Any]) -> CallState:
    """The run's CallState: its result, or the state carried by a failed call's failure."""
    try:
        result: CallState = await handle.result()
    except WorkflowFailureError as err:
        state = failed_call_state(err)
        if state is None:
            raise
        return state
    return result
