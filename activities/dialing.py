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

from activities.lifecycle import LookupBudget
from contracts.calls import (
    LATE_CODE,
    PACED_CODE,
    DialInput,
    DialResult,
    DialSlot,
    ErrorType,
    HangupInput,
    HangupResult,
    ReconcileInput,
    ReconcileResult,
)
from core.phone import mask
from infra.limiter import SharedLimits, rate_as_window
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


def _send_by() -> float:
    """The last moment (Unix time) this attempt may reach the provider: its deadline, from
    this run's start or, when that is earlier, from when the server started the attempt (a
    worker stopped before this code ran). After it the workflow counts the attempt as timed
    out and may dial again once it found it not placed, so nothing may be sent later. Like
    the campaigns' dial slots, it takes the workers' and the server's clocks as synchronized
    (NTP)."""
    info = activity.info()
    timeout = info.start_to_close_timeout
    if timeout is None:
        return time.time() + DEFAULT_DIAL_DEADLINE
    seconds = timeout.total_seconds()
    own = max(seconds - DEADLINE_MARGIN, seconds / 2)
    return min(time.time() + own, info.started_time.timestamp() + own)


# A dial that wakes later than this after its reserved moment (a busy event loop, a process
# stopped and continued) gives the moment up and reserves another: it may not bunch with the
# dials reserved after it.
LATE_TOLERANCE = 0.005


class DialPacer:
    """Holds a campaign's dials until their slots, then spaces them: each dial reserves the
    first moment at least `min_gap` after the campaign's previous reservation, in the storage
    every worker shares (infra/limiter.py `SharedLimits.reserve`: Redis with several
    workers), and goes then. So any two dials of one campaign, from any workers, are at
    least `min_gap` apart when they go, and no one-second window holds more than
    calls_per_second of them, a worker stalled and continued included: its late dials
    reserve new moments behind the others' instead of going at once."""

    def __init__(self, limits: SharedLimits | None = None) -> None:
        self._limits = limits or SharedLimits()

    async def hold(self, slot: DialSlot | None, budget: float) -> float:
        """Wait until the dial may go; at most `budget` seconds (the provider must keep the
        rest of the attempt's deadline). Returns the time held. Raises Paced when the
        campaign's next free moment is beyond the budget: the dial is not made now."""
        if slot is None:
            return 0.0
        began = time.time()
        limit = began + budget
        while True:
            now = time.time()
            if slot.at > now:
                await asyncio.sleep(min(slot.at, limit) - now)
                now = time.time()
            # A slot beyond the budget (clock skew, a stale start) is given up, not the
            # spacing: the dial goes as soon as the campaign's pace allows.
            earliest = max(now, slot.at) if slot.at <= limit else now
            at = await asyncio.to_thread(
                self._limits.reserve,
                f"campaign:{slot.key}",
                earliest,
                slot.min_gap,
                max(limit, now + LATE_TOLERANCE),
            )
            if at > limit and at > now + LATE_TOLERANCE:
                raise Paced(at - now)
            if at > now:
                await asyncio.sleep(at - now)
            if time.time() - at > LATE_TOLERANCE:
                continue
            wait = await self._account_wait(slot)
            if wait == 0.0:
                return time.time() - began
            # The account's calls per second are taken (its single calls, its other
            # campaigns): wait for the window, then reserve a new moment.
            if time.time() + wait > limit:
                raise Paced(wait)
            await asyncio.sleep(wait)

    async def _account_wait(self, slot: DialSlot) -> float:
        """Count the dial in its account's max_calls_per_second window: 0 when it may go,
        else the seconds until the window has room (nothing counted)."""
        if slot.account is None or slot.account_rate is None:
            return 0.0
        verdict = await asyncio.to_thread(
            self._limits.hit, rate_as_window(slot.account_rate), "account-calls", slot.account
        )
        return 0.0 if verdict.allowed else max(verdict.wait, 0.001)


class Paced(Exception):
    """The campaign's pace leaves no moment for this dial within its attempt's budget."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the campaign's pace holds this dial for another {wait:.1f} s")
        self.wait = wait


# How long a reconciliation waits for its account's look-up slot before it gives the attempt
# back to Temporal's retry (well within RECONCILE_TIMEOUT).
LOOKUP_SLOT_WAIT_SECONDS = 10.0


class DialActivities:
    def __init__(
        self,
        providers: ProviderRegistry,
        limits: SharedLimits | None = None,
        lookups: LookupBudget | None = None,
    ) -> None:
        self._providers = providers
        self._pacer = DialPacer(limits)
        self._lookups = lookups or LookupBudget()

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
            max_duration_seconds=input.max_duration_seconds,
            machine_detection=input.machine_detection,
            send_by=_send_by(),
        )
        assert request.send_by is not None
        try:
            await self._pacer.hold(input.slot, (request.send_by - time.time()) / 2)
        except Paced as exc:
            # Nothing was sent: the workflow dials again after the wait, the same attempt.
            _note_dial(input, DialOutcome.NOT_PLACED)
            raise ApplicationError(
                str(exc),
                PACED_CODE,
                exc.wait,
                None,
                type=ErrorType.DIAL_NOT_PLACED,
                non_retryable=True,
                category=EXPECTED,
            ) from exc
        remaining = request.send_by - time.time()
        if remaining <= 0:
            # A process stopped or starved since the attempt began: sending now could place a
            # call after the workflow gave the attempt up and dialed again elsewhere.
            _note_dial(input, DialOutcome.NOT_PLACED)
            raise ApplicationError(
                "the attempt's deadline passed before the request could be sent",
                LATE_CODE,
                0.0,
                None,
                type=ErrorType.DIAL_NOT_PLACED,
                non_retryable=True,
                category=EXPECTED,
            )
        try:
            # End the attempt ourselves before Temporal times it out: once the workflow sees a
            # timeout it reconciles and may dial again, so a request still running here then
            # could place a second call.
            call = await asyncio.wait_for(provider.create_call(request), remaining)
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
        # A read of the carrier's REST API like a poll: within its account's look-up budget,
        # so no burst of reconciliations draws a 429. A window full for long raises (nothing
        # sent) and Temporal tries again; never a guess that the call was not placed.
        if not await self._lookups.slot(provider.name, LOOKUP_SLOT_WAIT_SECONDS):
            raise ApplicationError(
                "the provider account's look-up budget is spent; asking again",
                type=ErrorType.LOOKUP_DEFERRED,
                category=EXPECTED,
            )
        found = await provider.lookup_call(
            call_session_id=input.call_session_id,
            attempts=input.attempts,
            to_number=input.to_number,
            from_number=input.from_number,
            since=datetime.fromisoformat(input.since) if input.since else None,
        )
        return ReconcileResult(telephony_leg_id=found.sid if found else None)

    @activity.defn(name="hangup_call")
    async def hangup_call(self, input: HangupInput) -> HangupResult:
        """End a placed call at the carrier (a cancel, a hang-up, max duration, a machine).
        Idempotent: a call the carrier had ended already is not an error. Any other failure
        raises, and Temporal retries it (HANGUP_RETRY): ending a call twice is harmless."""
        provider = self._providers.get(input.provider)
        ended = await provider.hangup_call(
            input.telephony_leg_id, answered=input.answered, message=input.message
        )
        log.info("hang-up via %s: %s", input.provider, "ended" if ended else "already over")
        return HangupResult(ended=ended)
