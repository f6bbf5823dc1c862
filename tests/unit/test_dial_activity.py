"""activities/dialing.py: how a provider's answer reaches the workflow. The workflow tests
fake this activity; these pin the contract the fakes copy (error type, details order)."""

from __future__ import annotations

import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dialing import DialActivities
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, Rejected
from telephony.registry import ProviderRegistry
from workflows.create_call import DIAL_AMBIGUOUS, DIAL_NOT_PLACED
from workflows.dto import DialInput, DialResult, ReconcileInput, ReconcileResult


class ScriptedProvider:
    name = "simulated"

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


async def run_dial(provider: ScriptedProvider, input: DialInput) -> DialResult:
    activities = DialActivities(ProviderRegistry({"simulated": provider}, default="simulated"))  # type: ignore[dict-item]
    return await ActivityEnvironment().run(activities.dial, input)


async def test_a_placed_call_returns_its_leg_and_tags_the_attempt() -> None:
    provider = ScriptedProvider()
    input = dial_input(attempt=3)
    assert await run_dial(provider, input) == DialResult(placed=True, telephony_leg_id="CA123")
    (request,) = provider.requests
    assert request.attempt == 3 and request.call_session_id == input.call_session_id
    assert request.attempt_tag == f"{input.call_session_id}.3"


async def test_a_rejection_is_a_result_not_an_error() -> None:
    result = await run_dial(ScriptedProvider(Rejected("bad To", code="21211")), dial_input())
    assert result == DialResult(placed=False, provider_error_code="21211", reason="bad To")


async def test_not_placed_carries_code_and_retry_after_and_is_not_retried() -> None:
    with pytest.raises(ApplicationError) as info:
        await run_dial(
            ScriptedProvider(NotPlaced("Too Many Requests", code="20429", retry_after=7.5)),
            dial_input(),
        )
    err = info.value
    assert err.type == DIAL_NOT_PLACED and err.non_retryable
    assert list(err.details) == ["20429", 7.5]


async def test_ambiguous_is_never_retried_by_temporal() -> None:
    with pytest.raises(ApplicationError) as info:
        await run_dial(ScriptedProvider(Ambiguous("timed out", code="504")), dial_input())
    err = info.value
    assert err.type == DIAL_AMBIGUOUS and err.non_retryable
    assert list(err.details)[0] == "504"


async def test_reconcile_asks_for_every_attempt_and_returns_the_found_leg() -> None:
    provider = ScriptedProvider()
    activities = DialActivities(ProviderRegistry({"simulated": provider}, default="simulated"))  # type: ignore[dict-item]
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
