"""Activities that follow a placed call: record its statuses, ask the provider when callbacks
stop. Both run as local activities of CreateCallWorkflow (no extra workflow-task round trip
and a small history)."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine
from temporalio import activity

from activities.webhooks import WebhookKicker
from contracts.calls import (
    CallStatusUpdate,
    FetchCallStatusInput,
    FetchCallStatusResult,
    RecordCallStatusInput,
    StatusSource,
)
from contracts.lifecycle import CallStatus, is_final, normalize_status
from contracts.webhooks import call_stream
from store import lifecycle
from telephony.registry import ProviderRegistry


class LifecycleActivities:
    def __init__(
        self, engine: Engine, providers: ProviderRegistry, webhooks: WebhookKicker | None = None
    ) -> None:
        self._engine = engine
        self._providers = providers
        self._webhooks = webhooks

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: RecordCallStatusInput) -> str | None:
        status = await asyncio.to_thread(lifecycle.record_call_status, self._engine, input)
        if self._webhooks is not None:
            # The customer's events this step committed go to their delivery workflow.
            await self._webhooks.kick([call_stream(input.call_session_id)])
        return status

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(self, input: FetchCallStatusInput) -> FetchCallStatusResult:
        """Ask the provider where the call is (a read: safe to repeat)."""
        call = await self._providers.get(input.provider).fetch_call(input.telephony_leg_id)
        status = normalize_status(call.status) if call else None
        if call is None or status is None:
            return FetchCallStatusResult()
        if is_final(status):
            at = call.ended_at
        elif status == CallStatus.ANSWERED:
            at = call.answered_at
        else:
            at = None
        return FetchCallStatusResult(
            update=CallStatusUpdate(
                status=call.status,
                telephony_leg_id=call.sid,
                occurred_at=at.isoformat() if at else None,
                duration_seconds=call.duration_seconds,
                source=StatusSource.POLL,
                answered_by=call.answered_by,
            )
        )
