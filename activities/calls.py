"""Database activities of CreateCallWorkflow (run as local activities on the main worker)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sqlalchemy.engine import Engine
from temporalio import activity

from activities.webhooks import WebhookKicker
from contracts.calls import (
    AdmitCallInput,
    AdmitCallResult,
    CreateCallInput,
    FailureCode,
    PersistSessionInput,
    PersistSessionResult,
    PrepareCallResult,
    RecordAttemptInput,
    RecordCallEventInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from contracts.webhooks import call_stream
from infra.limiter import SharedLimits, rate_as_window
from store import accounts, calls, lifecycle
from telephony.base import confirms_lines
from telephony.registry import ProviderRegistry


class CallActivities:
    def __init__(
        self,
        engine: Engine,
        providers: ProviderRegistry,
        default_region: str,
        default_media_stream_url: str | None = None,
        webhooks: WebhookKicker | None = None,
        limits: SharedLimits | None = None,
    ) -> None:
        self._engine = engine
        self._limits = limits or SharedLimits()
        self._providers = providers
        self._region = default_region
        self._media_stream_url = default_media_stream_url
        self._webhooks = webhooks

    async def _deliver_events(self, call_session_id: str) -> None:
        """The customer's events this step committed go to their delivery workflow."""
        if self._webhooks is not None:
            await self._webhooks.kick([call_stream(call_session_id)])

    @activity.defn(name="prepare_call")
    async def prepare_call(self, input: CreateCallInput) -> PrepareCallResult:
        """Validate the request and store its session, in one worker thread: the first
        workflow task of every call runs this, so it is one local activity, not two."""
        prepared = await asyncio.to_thread(self._prepare, input)
        if not prepared.validation.ok:
            await self._deliver_events(input.call_session_id)  # call.failed
        return prepared

    def _prepare(self, input: CreateCallInput) -> PrepareCallResult:
        validation = calls.validate_call(self._engine, input, self._region, self._media_stream_url)
        if validation.provider is not None:
            provider = self._providers.name_for(validation.provider)
            validation = replace(validation, provider=provider)
            if (
                validation.ok
                and validation.line_confirmed_by != provider
                and confirms_lines(self._providers.get(provider))
            ):
                # Twilio's lines: only a number Twilio confirmed as the account's own dials.
                validation = replace(
                    validation,
                    ok=False,
                    failure_code=FailureCode.LINE_NOT_CONFIRMED,
                    failure_reason="the caller line is not confirmed as a number of the "
                    "carrier account (an incoming number or a verified caller id): confirm it "
                    "with POST /api/v1/phone/{phone_number_id}/confirm; it was not dialed",
                )
            elif (
                validation.ok
                and not validation.media_stream_url
                and self._providers.get(provider).requires_media_stream
            ):
                validation = replace(
                    validation,
                    ok=False,
                    failure_code=FailureCode.NO_MEDIA_STREAM,
                    failure_reason="no media stream URL for this call: give its agent or "
                    "workflow a media_stream_url (or set DIALER_MEDIA_STREAM_URL); it was not "
                    "dialed",
                )
        # One read of the account's limits for the whole step (this runs for every call).
        limits = accounts.get_limits(self._engine, input.user_id)
        if validation.ok:
            validation = replace(validation, fairness_weight=limits.fairness_weight)
        stored = calls.persist_session(self._engine, PersistSessionInput(input, validation))
        if (
            validation.ok
            and not stored.already_terminal
            and input.campaign_id is None  # a campaign waits for a slot (its tick)
            and not input.options.scheduled_at  # checked at its time (admit_call)
        ):
            # A second run of this step (a worker crashed before its result was recorded)
            # finds the row: the call was counted in its calls per second by the first.
            verdict = self._at_limit(
                input.user_id,
                input.call_session_id,
                limits,
                limits.max_calls_per_second if stored.created else None,
            )
            if verdict.failure_code is not None:
                assert verdict.failure_reason is not None
                return self._refuse(input, validation, verdict.failure_code, verdict.failure_reason)
        return PrepareCallResult(validation=validation, stored=stored)

    @activity.defn(name="admit_call")
    async def admit_call(self, input: AdmitCallInput) -> AdmitCallResult:
        """A scheduled call at its time, within its account's limits? The workflow waits and
        asks again, up to the call's latest_at, while it is not."""
        return await asyncio.to_thread(self._admit, input)

    def _admit(self, input: AdmitCallInput) -> AdmitCallResult:
        limits = accounts.get_limits(self._engine, input.user_id)
        return self._at_limit(
            input.user_id,
            input.call_session_id,
            limits,
            limits.max_calls_per_second,
            at_its_time=True,
        )

    def _at_limit(
        self,
        user_id: str,
        call_session_id: str,
        limits: accounts.AccountLimits,
        rate: float | None,
        *,
        at_its_time: bool = False,
    ) -> AdmitCallResult:
        """The account's max_concurrent_calls (its other calls dialing, ringing or in
        progress, from the database; `limits` as this step read them: an account without
        one is not counted) and max_calls_per_second (`rate`, a moving window in the storage
        every worker shares: Redis with several; None: not counted): the limit this call is
        at, else an empty result, the call counted in the window."""
        limit = None
        if limits.max_concurrent_calls is not None:
            limit = accounts.over_concurrency_limit(
                self._engine, user_id, call_session_id, at_its_time=at_its_time
            )
        if limit is not None:
            return AdmitCallResult(
                failure_code=FailureCode.CONCURRENCY_LIMIT,
                failure_reason=f"the account has its limit of {limit} calls dialing, ringing "
                "or in progress (max_concurrent_calls); try again when one has ended",
            )
        if rate is None:
            return AdmitCallResult()
        verdict = self._limits.hit(rate_as_window(rate), "account-calls", user_id)
        if verdict.allowed:
            return AdmitCallResult()
        wait = max(verdict.wait, 0.1)
        return AdmitCallResult(
            failure_code=FailureCode.CALLS_PER_SECOND_LIMIT,
            failure_reason=f"the account has placed its limit of {rate:g} calls per second "
            f"(max_calls_per_second); try again in {wait:.1f} s",
            retry_after=wait,
        )

    def _refuse(
        self, input: CreateCallInput, validation: ValidationResult, code: FailureCode, reason: str
    ) -> PrepareCallResult:
        """The account is at one of its limits: the call is recorded as failed (its ids stay
        valid) and never dialed."""
        lifecycle.record_outcome_and_statuses(
            self._engine,
            RecordOutcomeInput(
                call_session_id=input.call_session_id,
                status=SessionStatus.FAILED,
                attempts=0,
                failure_code=code,
                failure_reason=reason,
            ),
        )
        refused = replace(validation, ok=False, failure_code=code, failure_reason=reason)
        stored = PersistSessionResult(
            status=SessionStatus.FAILED,
            failure_code=code,
            failure_reason=reason,
        )
        return PrepareCallResult(validation=refused, stored=stored)

    @activity.defn(name="record_attempt")
    async def record_attempt(self, input: RecordAttemptInput) -> None:
        await asyncio.to_thread(calls.record_attempt, self._engine, input)

    @activity.defn(name="record_call_event")
    async def record_call_event(self, input: RecordCallEventInput) -> None:
        await asyncio.to_thread(calls.record_call_event, self._engine, input)

    @activity.defn(name="record_outcome")
    async def record_outcome(self, input: RecordOutcomeInput) -> None:
        # With the statuses that came with the dial, in the same transaction.
        wrote = await asyncio.to_thread(lifecycle.record_outcome_and_statuses, self._engine, input)
        if wrote:  # a user without webhook endpoints has none to hand over
            await self._deliver_events(input.call_session_id)
