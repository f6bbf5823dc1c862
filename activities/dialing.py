"""Dialing activities (dedicated, rate-limited task queue). One attempt per activity run:
retries are the workflow's decision, because a blind retry could call a person twice."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from enum import StrEnum

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from contracts.calls import (
    DialInput,
    DialResult,
    DialSlot,
    ErrorType,
    ReconcileInput,
    ReconcileResult,
)
from core.phone import mask
from infra.metrics import DIALS_METRIC
from telephony.base import Ambiguous, DialRequest, NotPlaced, Rejected, TelephonyError
from telephony.registry import ProviderRegistry

log = logging.getLogger(__name__)

DEFAULT_DIAL_DEADLINE = 15.0
# Leaves time to report the ambiguous outcome before the server's start-to-close timeout.
DEADLINE_MARGIN = 1.0


class DialOutcome(StrEnum):
    """The `result` label of the dials metric: what the provider made of one attempt."""

    PLACED = "placed"
    REJECTED = "rejected"  # refused for good
    NOT_PLACED = "not_placed"  # provably not placed
    AMBIGUOUS = "ambiguous"  # no clear answer: it may have been placed


def _note_dial(input: DialInput, result: DialOutcome, error: TelephonyError | None = None) -> None:
    """Logs the attempt (number masked; the call's ids come from the worker's log context),
    with the provider's code and own words when it refused or failed, and counts it by
    provider and result, through the worker's Temporal runtime so the worker's metrics
    endpoint serves it beside the SDK's."""
    said = ""
    if error is not None:
        said = f" ({error.message}; code {error.code}: {error.provider_message})"
    log.info(
        "dial attempt %d to %s via %s: %s%s",
        input.attempt,
        mask(input.to_number),
        input.provider,
        result,
        said,
    )
    counter = activity.metric_meter().create_counter(
        DIALS_METRIC, "dial attempts sent to a provider, by provider and result"
    )
    counter.add(1, {"provider": input.provider, "result": result})


# A dial that did not go through, or whose outcome is unknown, is an outcome the workflow
# handles (retry, reconcile), not an error: BENIGN keeps the SDK from logging each one as a
# WARNING with the chained traceback (40 lines); _note_dial has said it in one line.
EXPECTED = ApplicationErrorCategory.BENIGN


def _own_deadline() -> float:
    timeout = activity.info().start_to_close_timeout
    if timeout is None:
        return DEFAULT_DIAL_DEADLINE
    return max(timeout.total_seconds() - DEADLINE_MARGIN, timeout.total_seconds() / 2)


# Campaigns whose last dial here is older than this are forgotten by the pacer.
PACER_MEMORY_SECONDS = 60.0


class DialPacer:
    """Holds a campaign's dials until their slots, and keeps any two dials of one campaign
    from this worker at least `min_gap` apart, measured when they actually go out: a dial
    woken late by a busy event loop pushes the next one back instead of bunching with it.
    (Dials of one campaign from different worker processes are only paced by their slots.)"""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    async def hold(self, slot: DialSlot | None, budget: float) -> float:
        """Wait until the dial may go; at most `budget` seconds (the provider must keep the
        rest of the attempt's deadline). Returns the time held."""
        if slot is None:
            return 0.0
        began = time.time()
        while True:
            now = time.time()
            due = max(slot.at, self._last.get(slot.key, 0.0) + slot.min_gap)
            left = min(due, began + budget) - now
            if left <= 0:
                break
            await asyncio.sleep(left)
        # No await between the check above and this: the next dial of the campaign sees it.
        self._last[slot.key] = now
        self._forget_before(now - PACER_MEMORY_SECONDS)
        return now - began

    def _forget_before(self, horizon: float) -> None:
        if len(self._last) > 100:
            self._last = {k: t for k, t in self._last.items() if t >= horizon}


class DialActivities:
    def __init__(self, providers: ProviderRegistry) -> None:
        self._providers = providers
        self._pacer = DialPacer()

    @activity.defn(name="dial")
    async def dial(self, input: DialInput) -> DialResult:
        provider = self._providers.get(input.provider)
        request = DialRequest(
            call_session_id=input.call_session_id,
            request_id=input.request_id,
            attempt=input.attempt,
            to_number=input.to_number,
            from_number=input.from_number,
            media_stream_url=input.media_stream_url,
            stream_parameters=dict(input.stream_parameters),
        )
        deadline = _own_deadline()
        deadline -= await self._pacer.hold(input.slot, deadline / 2)
        try:
            # End the attempt ourselves before Temporal times it out: once the workflow sees a
            # timeout it reconciles and may dial again, so a request still running here then
            # could place a second call.
            call = await asyncio.wait_for(provider.create_call(request), deadline)
        except TimeoutError as exc:
            _note_dial(input, DialOutcome.AMBIGUOUS)
            raise ApplicationError(
                "no answer from the provider within the attempt's deadline",
                None,
                type=ErrorType.DIAL_AMBIGUOUS,
                non_retryable=True,
                category=EXPECTED,
            ) from exc
        # The message of each answer is the provider's neutral account (telephony.base), the
        # one that may reach the client; its own words ride along for the timeline and
        # history: in the result, or as the third detail of the error (code, retry_after,
        # provider_message).
        except Rejected as exc:
            _note_dial(input, DialOutcome.REJECTED, exc)
            return DialResult(
                placed=False,
                provider_error_code=exc.code,
                reason=exc.message,
                provider_message=exc.provider_message,
            )
        except NotPlaced as exc:
            _note_dial(input, DialOutcome.NOT_PLACED, exc)
            raise ApplicationError(
                exc.message,
                exc.code,
                exc.retry_after,
                exc.provider_message,
                type=ErrorType.DIAL_NOT_PLACED,
                non_retryable=True,
                category=EXPECTED,
            ) from exc
        except Ambiguous as exc:
            _note_dial(input, DialOutcome.AMBIGUOUS, exc)
            raise ApplicationError(
                exc.message,
                exc.code,
                0.0,
                exc.provider_message,
                type=ErrorType.DIAL_AMBIGUOUS,
                non_retryable=True,
                category=EXPECTED,
            ) from exc
        _note_dial(input, DialOutcome.PLACED)
        return DialResult(placed=True, telephony_leg_id=call.sid)

    @activity.defn(name="reconcile_dial")
    async def reconcile_dial(self, input: ReconcileInput) -> ReconcileResult:
        provider = self._providers.get(input.provider)
        found = await provider.lookup_call(
            call_session_id=input.call_session_id,
            attempts=input.attempts,
            to_number=input.to_number,
            from_number=input.from_number,
            since=datetime.fromisoformat(input.since) if input.since else None,
        )
        return ReconcileResult(telephony_leg_id=found.sid if found else None)
