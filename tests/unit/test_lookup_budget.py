"""Provider look-ups within each carrier account's budget (activities/lifecycle.py
LookupBudget). A poll's look-up (fetch_call_status) takes a slot of its account's moving
window, shared by every worker; past it the provider is not asked and the answer says when
to ask again (no error, so nothing retries into the window). A reconciliation
(reconcile_dial) takes a slot of the same window, waiting for it a little, else raising for
Temporal's retry, never sending past it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dialing import DialActivities
from activities.lifecycle import LifecycleActivities, LookupBudget
from contracts.calls import (
    ErrorType,
    FetchCallStatusInput,
    FetchCallStatusResult,
    ReconcileInput,
    ReconcileResult,
    StatusSource,
)
from infra.limiter import SharedLimits
from telephony.base import DialRequest, ProviderCall
from telephony.registry import ProviderRegistry
from tests.support.redis import require_redis


class CountingCarrier:
    """A carrier that counts look-ups and answers 429 past `limit` in one test (as Twilio
    would): a test fails if a look-up ever reaches it beyond the budget."""

    requires_media_stream = False

    def __init__(self, name: str = "simulated", limit: int = 1_000_000) -> None:
        self.name = name
        self.limit = limit
        self.fetches: list[str] = []

    async def create_call(self, request: DialRequest) -> ProviderCall:
        raise AssertionError("no dial here")

    async def lookup_call(self, **kwargs: object) -> ProviderCall | None:
        raise AssertionError("no reconciliation here")

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        self.fetches.append(sid)
        if len(self.fetches) > self.limit:
            raise AssertionError("429: the carrier's limit was passed")
        return ProviderCall(sid=sid, status="in-progress")

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        return False


def activities(carriers: list[CountingCarrier], budget: LookupBudget) -> LifecycleActivities:
    registry = ProviderRegistry({c.name: c for c in carriers}, default=carriers[0].name)
    # The look-up never touches the database.
    return LifecycleActivities(Engine.__new__(Engine), registry, None, budget)


def fetch(provider: str = "simulated") -> FetchCallStatusInput:
    return FetchCallStatusInput(
        call_session_id=str(uuid.uuid4()), provider=provider, telephony_leg_id="CA-leg"
    )


async def fetch_many(
    acts: LifecycleActivities, n: int, provider: str = "simulated"
) -> list[FetchCallStatusResult]:
    env = ActivityEnvironment()
    return [await env.run(acts.fetch_call_status, fetch(provider)) for _ in range(n)]


async def test_a_look_up_past_the_accounts_window_is_deferred_not_sent() -> None:
    carrier = CountingCarrier(limit=3)
    acts = activities([carrier], LookupBudget(SharedLimits(), per_second=3))

    results = await fetch_many(acts, 5)

    assert len(carrier.fetches) == 3
    sent, deferred = results[:3], results[3:]
    assert all(r.update is not None and r.update.source == StatusSource.POLL for r in sent)
    assert all(r.deferred_seconds is None for r in sent)
    for r in deferred:
        assert r.update is None
        assert r.deferred_seconds is not None and 0 < r.deferred_seconds <= 1.0


async def test_the_window_has_room_again_after_the_wait_it_named() -> None:
    carrier = CountingCarrier()
    acts = activities([carrier], LookupBudget(SharedLimits(), per_second=2))
    *_, refused = await fetch_many(acts, 3)
    assert refused.deferred_seconds is not None
    await asyncio.sleep(refused.deferred_seconds + 0.05)
    [again] = await fetch_many(acts, 1)
    assert again.update is not None and len(carrier.fetches) == 3


async def test_each_provider_account_has_its_own_window() -> None:
    simulated, twilio = CountingCarrier("simulated"), CountingCarrier("twilio")
    budget = LookupBudget(SharedLimits(), per_second=2, accounts={"twilio": "AC" + "1" * 32})
    acts = activities([simulated, twilio], budget)

    await fetch_many(acts, 4, "simulated")
    results = await fetch_many(acts, 2, "twilio")

    assert (len(simulated.fetches), len(twilio.fetches)) == (2, 2)
    assert all(r.update is not None for r in results)


@pytest.mark.parametrize("workers", [2, 3])
async def test_workers_sharing_redis_share_one_window_per_account(workers: int) -> None:
    url = require_redis()
    account = f"AC-test-{uuid.uuid4().hex}"  # a key no other test run holds
    carriers = [CountingCarrier("twilio") for _ in range(workers)]
    processes = [
        activities([c], LookupBudget(SharedLimits(url), per_second=4, accounts={"twilio": account}))
        for c in carriers
    ]

    for _ in range(3):
        for acts in processes:
            await fetch_many(acts, 1, "twilio")

    assert sum(len(c.fetches) for c in carriers) == 4


def test_the_default_rate_is_far_below_a_carriers_limit() -> None:
    from core.config import Settings

    assert Settings().provider_lookups_per_second == 20.0
    with pytest.raises(ValueError, match="provider_lookups_per_second"):
        Settings(provider_lookups_per_second=0)


class ReconcilingCarrier(CountingCarrier):
    def __init__(self) -> None:
        super().__init__("simulated")
        self.lookups = 0

    async def lookup_call(self, **kwargs: object) -> ProviderCall | None:
        self.lookups += 1
        return None


def reconcile_input() -> ReconcileInput:
    return ReconcileInput(
        call_session_id=str(uuid.uuid4()),
        to_number="+12025550100",
        from_number="+12025550199",
        provider="simulated",
        attempts=[1],
    )


async def test_a_reconciliation_takes_a_slot_of_the_same_window_as_the_polls() -> None:
    carrier = ReconcilingCarrier()
    budget = LookupBudget(SharedLimits(), per_second=2)
    registry = ProviderRegistry({"simulated": carrier}, default="simulated")
    polls, dials = activities([carrier], budget), DialActivities(registry, None, budget)
    await fetch_many(polls, 2)  # the window is full

    started = time.monotonic()
    found = await ActivityEnvironment().run(dials.reconcile_dial, reconcile_input())

    # It waited for the window (about a second), then asked once; nothing was lost.
    assert found == ReconcileResult(telephony_leg_id=None) and carrier.lookups == 1
    assert 0.5 <= time.monotonic() - started <= 5


async def test_a_reconciliation_whose_window_stays_full_raises_for_a_retry_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("activities.dialing.LOOKUP_SLOT_WAIT_SECONDS", 0.2)
    carrier = ReconcilingCarrier()
    budget = LookupBudget(SharedLimits(), per_second=0.5)  # one look-up per 2 s
    registry = ProviderRegistry({"simulated": carrier}, default="simulated")
    dials = DialActivities(registry, None, budget)
    await ActivityEnvironment().run(dials.reconcile_dial, reconcile_input())

    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(dials.reconcile_dial, reconcile_input())

    assert info.value.type == ErrorType.LOOKUP_DEFERRED and not info.value.non_retryable
    assert carrier.lookups == 1
