"""Where status reports about placed calls go: a signal to the session's workflow.

The webhook (after checking the signature) and the simulated carrier both deliver through
this one path. When the workflow has already closed (it stopped following the call, or the
report is a late duplicate), the report is written to the session directly, with the same
monotonic rules, so nothing a provider tells us is lost and nothing moves backwards."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts.calls import CallStatusUpdate, RecordCallStatusInput
from contracts.lifecycle import StatusEvent
from contracts.webhooks import call_stream
from services.webhooks import WebhookDispatcher
from store import lifecycle
from workflows.create_call import CreateCallWorkflow

log = logging.getLogger(__name__)


class Delivery(StrEnum):
    SIGNALED = "signaled"  # the workflow has it
    RECORDED = "recorded"  # the workflow was closed; written to the session directly
    UNKNOWN_SESSION = "unknown_session"  # no such session: nothing to do


def to_update(event: StatusEvent) -> CallStatusUpdate:
    return CallStatusUpdate(
        status=event.status,
        telephony_leg_id=event.sid or None,
        occurred_at=event.occurred_at.isoformat() if event.occurred_at else None,
        duration_seconds=event.duration_seconds,
        source=event.source,
        answered_by=event.answered_by,
        detail=event.detail,
    )


class CallStatusSink:
    def __init__(
        self,
        client: Callable[[], Awaitable[Client]],
        engine: Engine,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self._client = client
        self._engine = engine
        self._webhooks = webhooks

    async def __call__(self, events: Sequence[StatusEvent]) -> Delivery:
        """Deliver reports about one session's call, in one signal."""
        if not events:
            raise ValueError("no status report to deliver")
        session_id = events[0].call_session_id
        if any(e.call_session_id != session_id for e in events):
            raise ValueError("status reports of one delivery must be about one session")
        updates = [to_update(e) for e in events]
        client = await self._client()
        handle = client.get_workflow_handle(session_id)
        try:
            await handle.signal(CreateCallWorkflow.call_statuses, updates)
            return Delivery.SIGNALED
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            await asyncio.to_thread(
                lifecycle.record_call_status,
                self._engine,
                RecordCallStatusInput(call_session_id=session_id, updates=updates),
            )
        except LookupError:
            log.info("status report for an unknown session", extra={"status": events[-1].status})
            return Delivery.UNKNOWN_SESSION
        if self._webhooks is not None:
            # The workflow that would have handed the customer's events over has closed.
            await self._webhooks.kick([call_stream(session_id)])
        return Delivery.RECORDED
