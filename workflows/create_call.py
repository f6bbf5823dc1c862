"""CreateCallWorkflow: validate, persist, dial safely, record. Deterministic code only."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.dto import (
        ACCEPTED,
        FAILED,
        STAGE_ACCEPTED,
        STAGES,
        SUCCESS,
        CallState,
        CreateCallInput,
        DialInput,
        DialPolicy,
        DialResult,
        FailureCode,
        PersistSessionInput,
        PersistSessionResult,
        ReconcileInput,
        ReconcileResult,
        RecordAttemptInput,
        RecordOutcomeInput,
        ValidationResult,
        WaitForStageInput,
    )

WORKFLOW_NAME = "CreateCallWorkflow"

# Search attributes (Keyword); registered by `dialer run`, the tests and the compose stack.
SA_USER_ID = SearchAttributeKey.for_keyword("DialerUserId")
SA_CALL_STATUS = SearchAttributeKey.for_keyword("DialerCallStatus")
SA_CAMPAIGN_ID = SearchAttributeKey.for_keyword("DialerCampaignId")
SA_REQUEST_ID = SearchAttributeKey.for_keyword("DialerRequestId")
SA_PROVIDER = SearchAttributeKey.for_keyword("DialerProvider")
SEARCH_ATTRIBUTES = (SA_USER_ID, SA_CALL_STATUS, SA_CAMPAIGN_ID, SA_REQUEST_ID, SA_PROVIDER)

# Error types raised by the dial activity (telephony errors mapped in activities/dialing.py).
DIAL_NOT_PLACED = "DialNotPlaced"  # provably did not take effect: safe to dial again
DIAL_AMBIGUOUS = "DialAmbiguous"  # may have taken effect: reconcile before any new attempt

# Database work is idempotent (upserts, keyed events), so local activities retry freely.
DB_TIMEOUT = timedelta(seconds=30)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)
# A dial is never retried by Temporal: the workflow decides, after reconciling if needed.
DIAL_RETRY = RetryPolicy(maximum_attempts=1)
# Looking a call up has no side effect, so it may retry for a long time; giving up leaves the
# outcome unknown, which must never turn into another dial.
RECONCILE_TIMEOUT = timedelta(seconds=30)
RECONCILE_SCHEDULE_TO_CLOSE = timedelta(hours=1)
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60)
)


@workflow.defn(name=WORKFLOW_NAME)
class CreateCallWorkflow:
    @workflow.init
    def __init__(self, input: CreateCallInput) -> None:
        self._input = input
        self._state = CallState(
            call_session_id=input.call_session_id,
            request_id=input.request_id,
            user_id=input.user_id,
            status=ACCEPTED,
        )
        self._stages_reached: set[str] = set()

    @workflow.run
    async def run(self, input: CreateCallInput) -> CallState:
        self._status("validating", "validating")
        validation: ValidationResult = await workflow.execute_local_activity(
            "validate_call",
            input,
            result_type=ValidationResult,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="validate mappings and number",
        )
        self._state.target_number = validation.target_number
        self._state.from_phone_number = validation.from_number
        if validation.provider:
            workflow.upsert_search_attributes([SA_PROVIDER.value_set(validation.provider)])

        stored: PersistSessionResult = await workflow.execute_local_activity(
            "persist_session",
            PersistSessionInput(call=input, validation=validation),
            result_type=PersistSessionResult,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="persist session",
        )
        if stored.already_terminal:
            # Someone recorded this session as finished before this run got to it.
            self._state.status = stored.status
            self._state.telephony_leg_id = stored.telephony_leg_id
            self._state.failure_code = stored.failure_code
            self._state.failure_reason = stored.failure_reason
            return await self._finish(stored.status, "already recorded as " + stored.status)
        if not validation.ok:
            self._state.status = FAILED
            self._state.failure_code = validation.failure_code
            self._state.failure_reason = validation.failure_reason
            return await self._finish(FAILED, f"failed: {validation.failure_code}")

        self._reach(STAGE_ACCEPTED)
        assert validation.target_number and validation.from_number and validation.provider
        dial = DialInput(
            call_session_id=input.call_session_id,
            request_id=input.request_id,
            user_id=input.user_id,
            attempt=0,
            to_number=validation.target_number,
            from_number=validation.from_number,
            provider=validation.provider,
        )
        outcome = await self._dial_safely(dial, input.policy)
        await workflow.execute_local_activity(
            "record_outcome",
            outcome,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"record {outcome.status}",
        )
        self._state.status = outcome.status
        self._state.telephony_leg_id = outcome.telephony_leg_id
        self._state.failure_code = outcome.failure_code
        self._state.failure_reason = outcome.failure_reason
        self._state.provider_error_code = outcome.provider_error_code
        self._state.attempts = outcome.attempts
        if outcome.status == SUCCESS:
            return await self._finish(SUCCESS, f"dialed after {outcome.attempts} attempt(s)")
        return await self._finish(FAILED, f"failed: {outcome.failure_code}")

    async def _dial_safely(self, dial: DialInput, policy: DialPolicy) -> RecordOutcomeInput:
        session_id = dial.call_session_id
        max_attempts = policy.max_attempts
        last_code: str | None = None
        last_reason = "no attempt was made"
        for attempt in range(1, max_attempts + 1):
            self._status("dialing", f"dialing attempt {attempt} of {max_attempts}")
            dial.attempt = attempt
            try:
                result: DialResult = await workflow.execute_activity(
                    "dial",
                    dial,
                    result_type=DialResult,
                    task_queue=policy.task_queue,
                    start_to_close_timeout=timedelta(seconds=policy.timeout_seconds),
                    retry_policy=DIAL_RETRY,
                    summary=f"dial attempt {attempt} of {max_attempts}",
                )
            except ActivityError as err:
                cause = err.cause
                not_placed = isinstance(cause, ApplicationError) and cause.type == DIAL_NOT_PLACED
                details = list(cause.details) if isinstance(cause, ApplicationError) else []
                last_code = str(details[0]) if details and details[0] is not None else None
                retry_after = float(details[1]) if len(details) > 1 and details[1] else 0.0
                last_reason = str(cause.message if cause else err.message)
                await self._record_attempt(
                    RecordAttemptInput(
                        call_session_id=session_id,
                        attempt=attempt,
                        result="not_placed" if not_placed else "ambiguous",
                        provider_error_code=last_code,
                        detail=last_reason,
                    )
                )
                delay = min(
                    policy.backoff_initial_seconds * 2 ** (attempt - 1), policy.backoff_max_seconds
                )
                if not not_placed:
                    # The call may exist at the provider. Give it a moment to show up, then
                    # look for every attempt so far; only a miss allows another dial.
                    await workflow.sleep(timedelta(seconds=delay))
                    found = await self._reconcile(dial, attempt, policy.task_queue)
                    if found is None:
                        return RecordOutcomeInput(
                            call_session_id=session_id,
                            status=FAILED,
                            attempts=attempt,
                            failure_code=FailureCode.DIAL_OUTCOME_UNKNOWN,
                            failure_reason="the provider could not be asked whether the call "
                            "was placed; not dialing again",
                        )
                    if found.telephony_leg_id:
                        return RecordOutcomeInput(
                            call_session_id=session_id,
                            status=SUCCESS,
                            attempts=attempt,
                            telephony_leg_id=found.telephony_leg_id,
                        )
                elif attempt < max_attempts:
                    await workflow.sleep(timedelta(seconds=max(delay, retry_after)))
                continue
            if result.placed:
                return RecordOutcomeInput(
                    call_session_id=session_id,
                    status=SUCCESS,
                    attempts=attempt,
                    telephony_leg_id=result.telephony_leg_id,
                )
            return RecordOutcomeInput(
                call_session_id=session_id,
                status=FAILED,
                attempts=attempt,
                failure_code=FailureCode.PROVIDER_REJECTED,
                failure_reason=result.reason or "the provider rejected the call",
                provider_error_code=result.provider_error_code,
            )
        return RecordOutcomeInput(
            call_session_id=session_id,
            status=FAILED,
            attempts=max_attempts,
            failure_code=FailureCode.RETRIES_EXHAUSTED,
            failure_reason=f"gave up after {max_attempts} attempts: {last_reason}",
            provider_error_code=last_code,
        )

    async def _reconcile(
        self, dial: DialInput, attempt: int, task_queue: str
    ) -> ReconcileResult | None:
        self._status("dialing", f"reconciling attempt {attempt}")
        try:
            found: ReconcileResult = await workflow.execute_activity(
                "reconcile_dial",
                ReconcileInput(
                    call_session_id=dial.call_session_id,
                    to_number=dial.to_number,
                    from_number=dial.from_number,
                    provider=dial.provider,
                    attempts=list(range(1, attempt + 1)),
                ),
                result_type=ReconcileResult,
                task_queue=task_queue,
                start_to_close_timeout=RECONCILE_TIMEOUT,
                schedule_to_close_timeout=RECONCILE_SCHEDULE_TO_CLOSE,
                retry_policy=RECONCILE_RETRY,
                summary=f"look up attempts 1-{attempt} at the provider",
            )
        except ActivityError:
            return None
        await self._record_attempt(
            RecordAttemptInput(
                call_session_id=dial.call_session_id,
                attempt=attempt,
                result="reconciled_found" if found.telephony_leg_id else "reconciled_not_found",
                detail=found.telephony_leg_id,
            )
        )
        return found

    async def _record_attempt(self, attempt: RecordAttemptInput) -> None:
        self._state.attempts = attempt.attempt
        await workflow.execute_local_activity(
            "record_attempt",
            attempt,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"record attempt {attempt.attempt}: {attempt.result}",
        )

    async def _finish(self, status: str, details: str) -> CallState:
        self._status(status, details)
        for stage in STAGES:
            self._reach(stage)
        # Let waiting create_call requests receive their answer before the run closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    def _status(self, status: str, details: str) -> None:
        workflow.upsert_search_attributes([SA_CALL_STATUS.value_set(status)])
        workflow.set_current_details(details)

    def _reach(self, stage: str) -> None:
        self._stages_reached.add(stage)
        self._state.stage = stage

    @workflow.update
    async def wait_for_stage(self, req: WaitForStageInput) -> CallState:
        """Return once the call reached `req.stage` (or ended)."""
        await workflow.wait_condition(lambda: req.stage in self._stages_reached)
        return self._state

    @wait_for_stage.validator
    def _check_wait(self, req: WaitForStageInput) -> None:
        if req.stage not in STAGES:
            raise ValueError(f"unknown stage {req.stage!r}")
        if req.request_hash != self._input.request_hash:
            raise ApplicationError(
                "Idempotency-Key reused with different parameters", type="IdempotencyConflict"
            )

    @workflow.query
    def state(self) -> CallState:
        return self._state


def search_attributes_for(input: CreateCallInput) -> list[SearchAttributePair]:
    pairs = [
        SearchAttributePair(SA_USER_ID, input.user_id),
        SearchAttributePair(SA_REQUEST_ID, input.request_id),
        SearchAttributePair(SA_CALL_STATUS, "validating"),
    ]
    if input.campaign_id:
        pairs.append(SearchAttributePair(SA_CAMPAIGN_ID, input.campaign_id))
    return pairs


def summary_for(input: CreateCallInput) -> tuple[str, str]:
    """Static summary and details for the Temporal UI. Ids only: no phone numbers."""
    via = (
        f"agent {input.agent_id}"
        if input.agent_id
        else f"workflow {input.flow_id}"
        if input.flow_id
        else "default line"
    )
    summary = f"Outbound call for user {input.user_id[:8]} via {via}"
    details = "\n".join(
        f"**{k}**: {v}"
        for k, v in (
            ("call_session_id", input.call_session_id),
            ("request_id", input.request_id),
            ("user_id", input.user_id),
            ("agent_id", input.agent_id),
            ("workflow_id", input.flow_id),
            ("phone_number_id", input.phone_number_id),
            ("campaign_id", input.campaign_id),
        )
        if v
    )
    return summary, details
