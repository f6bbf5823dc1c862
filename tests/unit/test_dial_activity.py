"""activities/dialing.py: how a provider's answer reaches the workflow. The workflow tests
fake this activity; these pin the contract the fakes copy (error type, details order)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dialing import DialActivities
from contracts.calls import (
    LATE_CODE,
    PACED_CODE,
    DialInput,
    DialResult,
    DialSlot,
    ErrorType,
    ReconcileInput,
    ReconcileResult,
)
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, Rejected
from telephony.registry import ProviderRegistry


class ScriptedProvider:
    name = "simulated"
    requires_media_stream = False

    def __init__(self, outcome: Exception | None = None) -> None:
        self.outcome = outcome
        self.requests: list[DialRequest] = []
        self.lookups: list[dict[str, object]] = []

    async def create_call(self, request: DialRequest) -> ProviderCall:
        self.requests.append(request)
        if self.outcome is not None:
            raise self.outcome
        return ProviderCall(sid="CA123", status="queued", to_number=request.to_number)

    async def lookup_call(self, **kwargs: object) -> ProviderCall | None:
        self.lookups.append(kwargs)
        return ProviderCall(sid="CA-found", status="ringing") if kwargs["attempts"] else None

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        return None

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        return False


def dial_input(attempt: int = 2) -> DialInput:
    return DialInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        attempt=attempt,
        to_number="+12025550100",
        from_number="+12025550199",
        provider="simulated",
    )


def started_now(env: ActivityEnvironment | None = None, **info: object) -> ActivityEnvironment:
    """An activity environment whose attempt the server started just now (the default info
    says 1970, and a dial checks its deadline from the attempt's start)."""
    env = env or ActivityEnvironment()
    env.info = replace(env.info, started_time=datetime.now(UTC), **info)  # type: ignore[arg-type]
    return env


async def run_dial(provider: ScriptedProvider, input: DialInput) -> DialResult:
    activities = DialActivities(ProviderRegistry({"simulated": provider}, default="simulated"))
    return await started_now().run(activities.dial, input)


async def test_a_placed_call_returns_its_leg_and_tags_the_attempt() -> None:
    provider = ScriptedProvider()
    input = dial_input(attempt=3)
    assert await run_dial(provider, input) == DialResult(placed=True, telephony_leg_id="CA123")
    (request,) = provider.requests
    assert request.attempt == 3 and request.call_session_id == input.call_session_id
    assert request.attempt_tag == f"{input.call_session_id}.3"


async def test_a_rejection_is_a_result_not_an_error() -> None:
    refusal = Rejected("the carrier refused", code="21211", provider_message="bad To")
    result = await run_dial(ScriptedProvider(refusal), dial_input())
    # The reason (public) is the provider's neutral message; its own words ride along.
    assert result == DialResult(
        placed=False,
        provider_error_code="21211",
        reason="the carrier refused",
        provider_message="bad To",
    )


async def test_not_placed_carries_code_and_retry_after_and_is_not_retried() -> None:
    with pytest.raises(ApplicationError) as info:
        await run_dial(
            ScriptedProvider(
                NotPlaced(
                    "rate limited", code="20429", retry_after=7.5, provider_message="Too Many"
                )
            ),
            dial_input(),
        )
    err = info.value
    assert err.type == ErrorType.DIAL_NOT_PLACED and err.non_retryable
    assert err.message == "rate limited"
    assert list(err.details) == ["20429", 7.5, "Too Many"]


async def test_ambiguous_is_never_retried_by_temporal() -> None:
    with pytest.raises(ApplicationError) as info:
        await run_dial(ScriptedProvider(Ambiguous("timed out", code="504")), dial_input())
    err = info.value
    assert err.type == ErrorType.DIAL_AMBIGUOUS and err.non_retryable
    # The same details order as NotPlaced: code, retry_after, the provider's words.
    assert list(err.details) == ["504", 0.0, None]


async def test_reconcile_asks_for_every_attempt_and_returns_the_found_leg() -> None:
    provider = ScriptedProvider()
    activities = DialActivities(ProviderRegistry({"simulated": provider}, default="simulated"))
    sid = str(uuid.uuid4())
    found = await ActivityEnvironment().run(
        activities.reconcile_dial,
        ReconcileInput(
            call_session_id=sid,
            to_number="+12025550100",
            from_number="+12025550199",
            provider="simulated",
            attempts=[1, 2],
        ),
    )
    assert found == ReconcileResult(telephony_leg_id="CA-found")
    assert provider.lookups[0]["attempts"] == [1, 2]
    assert provider.lookups[0]["call_session_id"] == sid
    missing = await ActivityEnvironment().run(
        activities.reconcile_dial,
        ReconcileInput(call_session_id=sid, to_number="+1", from_number="+1", provider="simulated"),
    )
    assert missing == ReconcileResult(telephony_leg_id=None)


class TimedProvider(ScriptedProvider):
    """Notes the wall-clock moment each request reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    async def create_call(self, request: DialRequest) -> ProviderCall:
        self.at.append(time.time())
        return await super().create_call(request)


def slotted(at: float, key: str = "campaign-1", min_gap: float = 0.1) -> DialInput:
    return replace(dial_input(1), slot=DialSlot(at=at, key=key, min_gap=min_gap))


def activities_with_timeout(
    provider: ScriptedProvider, seconds: float
) -> tuple[ActivityEnvironment, DialActivities]:
    env = started_now(start_to_close_timeout=timedelta(seconds=seconds))
    activities = DialActivities(ProviderRegistry({"simulated": provider}, default="simulated"))
    return env, activities


async def test_a_campaign_slot_holds_the_request_until_then() -> None:
    provider = TimedProvider()
    env, activities = activities_with_timeout(provider, 15)
    slot = time.time() + 0.3
    result = await env.run(activities.dial, slotted(slot))
    assert result.placed and provider.at[0] >= slot


async def test_a_past_slot_dials_at_once() -> None:
    provider = TimedProvider()
    env, activities = activities_with_timeout(provider, 15)
    began = time.time()
    await env.run(activities.dial, slotted(began - 5))
    assert provider.at[0] - began < 0.2


async def test_dials_of_one_campaign_keep_their_gap_even_when_both_are_late() -> None:
    """Two dials whose slots are past (a busy worker) go out min_gap apart, not together;
    another campaign's dial is not held back by them."""
    provider = TimedProvider()
    env, activities = activities_with_timeout(provider, 15)
    past = time.time() - 1
    dials = [
        slotted(past, min_gap=0.2),
        slotted(past, min_gap=0.2),
        slotted(past, key="campaign-2", min_gap=0.2),
    ]
    await asyncio.gather(*(env.run(activities.dial, d) for d in dials))
    at = {r.call_session_id: t for r, t in zip(provider.requests, provider.at, strict=True)}
    first, second, other = (at[d.call_session_id] for d in dials)
    assert abs(second - first) >= 0.2
    assert abs(other - min(first, second)) < 0.1


async def test_the_hold_leaves_the_provider_half_the_attempts_deadline() -> None:
    """A slot far ahead (clock skew, a stale start) never eats the whole attempt."""
    provider = TimedProvider()
    env, activities = activities_with_timeout(provider, 3)
    began = time.time()
    await env.run(activities.dial, slotted(began + 60))
    # Own deadline 3 - 1 = 2 s: held at most 1 s.
    assert 0.9 <= provider.at[0] - began < 1.5


async def test_an_attempt_past_its_deadline_sends_nothing() -> None:
    """A worker stopped after the server started the attempt (SIGSTOP, a starved loop): by
    the time this code runs, the workflow may have given the attempt up and dialed again
    elsewhere, so the request is not sent."""
    provider = ScriptedProvider()
    env, activities = activities_with_timeout(provider, 4)
    env.info = replace(env.info, started_time=datetime.now(UTC) - timedelta(seconds=5))
    with pytest.raises(ApplicationError) as info:
        await env.run(activities.dial, dial_input())
    assert info.value.type == ErrorType.DIAL_NOT_PLACED
    assert list(info.value.details)[0] == LATE_CODE
    assert provider.requests == []


async def test_the_request_carries_the_attempts_deadline() -> None:
    provider = ScriptedProvider()
    env, activities = activities_with_timeout(provider, 4)
    began = time.time()
    await env.run(activities.dial, dial_input())
    (request,) = provider.requests
    # 4 s start-to-close, 1 s kept to report an unknown outcome: 3 s from the start.
    assert request.send_by == pytest.approx(began + 3, abs=0.2)


async def test_a_paced_refusal_says_so_in_its_code() -> None:
    provider = ScriptedProvider()
    env, activities = activities_with_timeout(provider, 4)
    # The campaign's next moment is a minute away: more than the hold's budget.
    await env.run(activities.dial, slotted(time.time() + 0.05, key="busy", min_gap=60))
    with pytest.raises(ApplicationError) as info:
        await env.run(activities.dial, slotted(time.time(), key="busy", min_gap=60))
    assert list(info.value.details)[0] == PACED_CODE
    assert len(provider.requests) == 1
