"""Activities that follow a placed call: record its statuses, ask the provider when callbacks
stop. Both run as local activities of CreateCallWorkflow (no extra workflow-task round trip
and a small history)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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
from infra.limiter import SharedLimits, rate_as_window
from store import lifecycle
from telephony.registry import ProviderRegistry

# Twilio's REST API answers 429 (20429) past an account's concurrency; every worker's polls of
# one carrier account share one moving window, so they never come near it.
DEFAULT_LOOKUPS_PER_SECOND = 20.0


@dataclass(frozen=True)
class LookupBudget:
    """Provider look-ups (a poll's fetch_call) per second per provider account, in the storage
    every worker shares (DIALER_LIMITS_STORAGE_URL), so the sum over all workers holds."""

    limits: SharedLimits = field(default_factory=SharedLimits)
    per_second: float = DEFAULT_LOOKUPS_PER_SECOND
    # A provider's account (Twilio: the account SID); a provider not named is its own account.
    accounts: Mapping[str, str] = field(default_factory=dict)

    def take(self, provider: str) -> float:
        """0 when a look-up of `provider` may go now (its slot is spent); otherwise the
        seconds until its account's window has room again (nothing is spent)."""
        account = self.accounts.get(provider, provider)
        verdict = self.limits.hit(rate_as_window(self.per_second), "provider-lookups", account)
        return 0.0 if verdict.allowed else max(verdict.wait, 0.001)

    async def slot(self, provider: str, within: float) -> bool:
        """Wait up to `within` seconds for a look-up slot of `provider`'s account; True
        once one is spent, False (nothing spent) when the window stays full that long."""
        deadline = time.monotonic() + within
        while True:
            wait = await asyncio.to_thread(self.take, provider)
            if wait == 0:
                return True
            if time.monotonic() + wait > deadline:
                return False
            await asyncio.sleep(wait)


class LifecycleActivities:
    def __init__(
        self,
        engine: Engine,
        providers: ProviderRegistry,
        webhooks: WebhookKicker | None = None,
        lookups: LookupBudget | None = None,
    ) -> None:
        self._engine = engine
        self._providers = providers
        self._webhooks = webhooks
        self._lookups = lookups or LookupBudget()

    @activity.defn(name="record_call_status")
    async def record_call_status(self, input: RecordCallStatusInput) -> str | None:
        status = await asyncio.to_thread(lifecycle.record_call_status, self._engine, input)
        if self._webhooks is not None:
            # The customer's events this step committed go to their delivery workflow.
            await self._webhooks.kick([call_stream(input.call_session_id)])
        return status

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(self, input: FetchCallStatusInput) -> FetchCallStatusResult:
        """Ask the provider where the call is (a read: safe to repeat), within the account's
        look-up budget: when its window is full the provider is not asked, and the answer
        says when to ask again (no error, so nothing retries into the window)."""
        provider = self._providers.get(input.provider)
        wait = await asyncio.to_thread(self._lookups.take, provider.name)
        if wait > 0:
            return FetchCallStatusResult(deferred_seconds=wait)
        call = await provider.fetch_call(input.telephony_leg_id)
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
