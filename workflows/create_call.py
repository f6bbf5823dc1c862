"""CreateCallWorkflow: validate, persist, dial safely, record. Deterministic code only."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import (
    Priority,
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
)
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from contracts.calls import (
        MACHINE_MESSAGE_END,
        PACED_CODE,
        WAIT_STAGES,
        AdmitCallInput,
        AdmitCallResult,
        AttemptResult,
        CallControlInput,
        CallControlResult,
        CallProgress,
        CallState,
        CallStatusUpdate,
        ControlAction,
        ControlOutcome,
        CreateCallInput,
        DialInput,
        DialPolicy,
        DialResult,
        DialSlot,
        EndedReason,
        ErrorType,
        FailureCode,
        FetchCallStatusInput,
        FetchCallStatusResult,
        FollowPolicy,
        HangupInput,
        HangupResult,
        MachineDetection,
        PrepareCallResult,
        ReconcileInput,
        ReconcileResult,
        RecordAttemptInput,
        RecordCallEventInput,
        RecordCallStatusInput,
        RecordOutcomeInput,
        SessionStatus,
        Stage,
        WaitForStageInput,
        is_machine,
    )
    from contracts.context import stream_parameters
    from contracts.lifecycle import (
        CallStatus,
        advances,
        ended_reason_for,
        is_final,
        normalize_status,
        rank,
    )
    from contracts.search_attributes import (
        SA_CALL_STATUS,
        SA_CAMPAIGN_ID,
        SA_PROVIDER,
        SA_REQUEST_ID,
        SA_USER_ID,
    )

WORKFLOW_NAME = "CreateCallWorkflow"
# Patch ids of call control (issue 16): runs recorded before them never take these paths.
SCHEDULED_CALLS = "scheduled-calls"  # the durable timer until scheduled_at
CALL_CONTROL = "call-control"  # hang-ups and the workflow's own timeline entries
# Patch id: runs started before it complete even when their call failed (recorded histories).
FAIL_FAILED_CALLS = "fail-failed-calls"
# Patch id: runs started before it dial without Task Queue Priority and Fairness keys.
DIAL_PRIORITY = "dial-priority"
# Patch id: runs started before it give a retry no campaign slot, and count the pace's
# refusals (nothing sent) as attempts.
PACED_RETRIES = "paced-retries"
# Patch id: runs started before it dial a scheduled call at its time without its account's
# limits.
SCHEDULED_LIMITS = "scheduled-limits"
# A scheduled call at its account's limit asks again this often, up to its latest_at.
ADMIT_RETRY = timedelta(seconds=5)
# A dial the campaign's pace refused is tried again after the wait, as the same attempt, at
# most this many times per call; then the refusals count as attempts again.
MAX_PACED_REFUSALS = 20
# Patch id: runs started before it poll an answered call like a ringing one (from
# poll_after, doubling), and take a look-up the account's budget deferred as "nothing new".
FOLLOW_BY_STATE = "follow-by-state"
# Task Queue Priority (lower goes first; 3 is the server's default): a single call's dial
# goes ahead of campaign dials on the rate-capped dial queue. Within a priority each user is
# a fairness key with the account's weight, so users share the cap by weight, not by who
# queued first (README, "Fair share").
PRIORITY_SINGLE_CALL = 1
PRIORITY_CAMPAIGN_CALL = 3


def call_priority(user_id: str, campaign_id: str | None, weight: float | None = None) -> Priority:
    """The priority of a call's run (its start) and of its dial and reconciliation."""
    return Priority(
        priority_key=PRIORITY_CAMPAIGN_CALL if campaign_id else PRIORITY_SINGLE_CALL,
        fairness_key=user_id,
        fairness_weight=weight,
    )


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
# Asking the provider where a call is: a read, tried a few times; a failed poll only means
# asking again later.
FETCH_TIMEOUT = timedelta(seconds=20)
FETCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# Ending a placed call at the carrier: idempotent (a call already over is not an error), so
# it may retry; on the dial queue, where the provider lives.
HANGUP_TIMEOUT = timedelta(seconds=20)
HANGUP_SCHEDULE_TO_CLOSE = timedelta(minutes=10)
HANGUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
# Status reports held before the workflow processes them; a flood beyond this is dropped
# (the provider is asked instead), so a misbehaving sender cannot grow the state unbounded.
MAX_PENDING_STATUSES = 50


@workflow.defn(name=WORKFLOW_NAME)
class CreateCallWorkflow:
    @workflow.init
    def __init__(self, input: CreateCallInput) -> None:
        self._input = input
        self._state = CallState(
            call_session_id=input.call_session_id,
            request_id=input.request_id,
            user_id=input.user_id,
            status=SessionStatus.ACCEPTED,
        )
        self._stages_reached: set[Stage] = set()
        # Status reports received by signal, processed once the dial is recorded.
        self._inbox: list[CallStatusUpdate] = []
        self._seen_statuses: set[str] = set()
        self._first_dial_at: datetime | None = None
        # Call control: the first cancel or hang-up asked for, what became of it, why the
        # workflow ended the call (when it did), and the max-duration deadline once answered.
        self._control: CallControlInput | None = None
        self._control_actions: set[str] = set()
        self._control_outcome: ControlOutcome | None = None
        self._ending: EndedReason | None = None
        self._hung_up = False
        self._done = False
        self._deadline: datetime | None = None
        self._state.scheduled_at = input.options.scheduled_at
        self._fairness_weight: float | None = None  # the account's, read by prepare_call
        # Search attributes wanted, and as last upserted (the start set the first values).
        self._attributes: dict[str, SearchAttributeUpdate[str]] = {}  # all Keyword
        self._upserted: dict[str, object] = {SA_CALL_STATUS.name: CallProgress.VALIDATING}

    @workflow.run
    async def run(self, input: CreateCallInput) -> CallState:
        # DialerCallStatus starts as "validating" (set when the run is started).
        self._status(CallProgress.VALIDATING, "validating")
        prepared: PrepareCallResult = await workflow.execute_local_activity(
            "prepare_call",
            input,
            result_type=PrepareCallResult,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="validate mappings and number, persist session",
        )
        validation, stored = prepared.validation, prepared.stored
        self._fairness_weight = validation.fairness_weight
        self._state.target_number = validation.target_number
        self._state.from_phone_number = validation.from_number
        if validation.provider:
            self._attributes[SA_PROVIDER.name] = SA_PROVIDER.value_set(validation.provider)
        if stored.already_terminal:
            # Someone recorded this session as finished before this run got to it.
            self._state.status = stored.status
            self._state.telephony_leg_id = stored.telephony_leg_id
            self._state.failure_code = stored.failure_code
            self._state.failure_reason = stored.failure_reason
            return await self._finish(stored.status, "already recorded as " + stored.status)
        if not validation.ok:
            self._state.status = SessionStatus.FAILED
            self._state.failure_code = validation.failure_code
            self._state.failure_reason = validation.failure_reason
            self._state.ended_reason = EndedReason.NOT_DIALED
            return await self._finish(SessionStatus.FAILED, f"failed: {validation.failure_code}")

        self._reach(Stage.ACCEPTED)
        assert validation.target_number and validation.from_number and validation.provider
        dial = DialInput(
            call_session_id=input.call_session_id,
            request_id=input.request_id,
            user_id=input.user_id,
            attempt=0,
            to_number=validation.target_number,
            from_number=validation.from_number,
            provider=validation.provider,
            media_stream_url=validation.media_stream_url,
            stream_parameters=stream_parameters(
                request_id=input.request_id,
                call_session_id=input.call_session_id,
                user_id=input.user_id,
                agent_id=input.agent_id,
                workflow_id=input.flow_id,
                campaign_id=input.campaign_id,
                variables=input.variables,
            ),
            max_duration_seconds=input.options.max_duration_seconds,
            machine_detection=input.options.machine_detection,
        )
        refused: RecordOutcomeInput | None = None
        if input.options.scheduled_at and workflow.patched(SCHEDULED_CALLS):
            await self._wait_for_schedule(datetime.fromisoformat(input.options.scheduled_at))
            if input.campaign_id is None and workflow.patched(SCHEDULED_LIMITS):
                refused = await self._admit(input.call_session_id)
        outcome = refused or await self._dial_safely(dial, input.policy)
        placed = outcome.status == SessionStatus.SUCCESS and outcome.telephony_leg_id is not None
        if placed:
            # Reports the carrier sent while the dial was in flight are recorded with it.
            assert outcome.telephony_leg_id
            outcome.statuses = self._annotated(
                self._fresh(self._take_inbox(), outcome.telephony_leg_id)
            )
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
        if outcome.call_status:
            self._state.call_status = outcome.call_status
        if outcome.status == SessionStatus.FAILED:
            self._state.ended_reason = outcome.ended_reason or EndedReason.NOT_DIALED
        if outcome.failure_code == FailureCode.CANCELED:
            self._control_outcome = ControlOutcome.CANCELED
            # Not a failure of the call: the run completes (status "canceled" for operators).
            return await self._finish(CallStatus.CANCELED, "canceled before it was dialed")
        if placed:
            assert outcome.telephony_leg_id
            # create_call waiting for "dialed" gets its answer now, not at the end of the call.
            self._reach(Stage.DIALED)
            self._status(SessionStatus.SUCCESS, f"dialed after {outcome.attempts} attempt(s)")
            self._applied(outcome.statuses)
            return await self._follow(outcome.telephony_leg_id, dial.provider, input.follow)
        if outcome.status == SessionStatus.SUCCESS:
            return await self._finish(
                SessionStatus.SUCCESS, f"dialed after {outcome.attempts} attempt(s)"
            )
        return await self._finish(SessionStatus.FAILED, f"failed: {outcome.failure_code}")

    async def _follow(self, leg_id: str, provider: str, policy: FollowPolicy) -> CallState:
        """Step 5: follow the call to its final status. Callbacks arrive as signals; when
        none comes for as long as the call's state allows (_quiet_for), ask the provider;
        stop at a final status or at the maximum call age."""
        started = workflow.now()
        quiet = policy.poll_after_seconds
        deferrals = 0  # look-ups in a row that the account's budget put off
        ask_in: float | None = None  # when to ask again after such a look-up
        while not is_final(self._state.call_status):
            remaining = policy.max_age_seconds - (workflow.now() - started).total_seconds()
            if remaining <= 0:
                self._state.ended_reason = EndedReason.EXPIRED
                await self._record_statuses([], gave_up_after=policy.max_age_seconds)
                return await self._finish(
                    CallProgress.EXPIRED,
                    f"stopped following after {policy.max_age_seconds:.0f} s "
                    f"(last status: {self._state.call_status or 'none'})",
                )
            action = self._due_action()
            if action is not None:
                await self._hang_up(leg_id, provider, *action)
                quiet = policy.poll_after_seconds  # the end should follow: ask soon
                continue
            polled = False
            self._flush_status()
            wait = ask_in if ask_in is not None else self._quiet_for(quiet, policy)
            ask_in = None
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._due_action() is not None,
                    timeout=timedelta(seconds=min(wait, remaining, self._until_deadline())),
                )
                updates = self._take_inbox()
            except TimeoutError:
                if self._due_action() is not None:
                    continue  # the max-duration deadline, not a quiet call
                polled = True
                result = await self._poll(leg_id, provider)
                updates = [result.update] if result.update else []
                if result.deferred_seconds is not None and workflow.patched(FOLLOW_BY_STATE):
                    deferrals += 1
                    ask_in = self._ask_again_in(result.deferred_seconds, deferrals, policy)
                else:
                    deferrals = 0
            before = self._state.call_status
            await self._record_statuses(self._annotated(self._fresh(updates, leg_id)))
            if self._state.call_status != before:
                quiet = policy.poll_after_seconds  # the call moves: ask again soon
            elif polled and ask_in is None:
                quiet = min(quiet * 2, policy.poll_max_seconds)  # nothing new: wait longer
        status = self._state.call_status or SessionStatus.SUCCESS
        details = status
        if self._state.duration_seconds is not None:
            details = f"{status} in {self._state.duration_seconds} s"
        return await self._finish(status, details)

    def _quiet_for(self, quiet: float, policy: FollowPolicy) -> float:
        """How long a call may stay silent before the provider is asked. Until the answer
        (and after a hang-up) a callback is due soon: `quiet`, poll_after doubling while
        nothing changes. Once answered, silence is the conversation itself (a carrier sends
        nothing until the end): ask every poll_max only, so a quiet talk costs one look-up
        per poll_max and a call whose callbacks are lost is found ended within poll_max of
        its end; a max_duration deadline still wakes the run at once (_until_deadline)."""
        talking = self._state.call_status == CallStatus.ANSWERED and not self._hung_up
        if talking and workflow.patched(FOLLOW_BY_STATE):
            return policy.poll_max_seconds
        return quiet

    def _ask_again_in(self, deferred: float, deferrals: int, policy: FollowPolicy) -> float:
        """After a look-up the account's budget deferred: its wait, plus a random spread
        that doubles from poll_after with each deferral in a row (up to poll_max), so calls
        deferred together do not all come back in the same second."""
        spread = min(policy.poll_after_seconds * 2 ** (deferrals - 1), policy.poll_max_seconds)
        return min(deferred + workflow.random().uniform(0, spread), policy.poll_max_seconds)

    def _fresh(self, updates: list[CallStatusUpdate], leg_id: str) -> list[CallStatusUpdate]:
        """Statuses of this call not seen before, in lifecycle order. Reports about another
        leg (e.g. a stray callback) and unknown statuses are ignored."""
        fresh: dict[str, CallStatusUpdate] = {}
        detections: list[CallStatusUpdate] = []
        for update in updates:
            status = normalize_status(update.status)
            if status is None or (update.telephony_leg_id not in (None, leg_id)):
                continue
            if status in self._seen_statuses or status in fresh:
                if self._detection(update):
                    detections.append(update)
                continue
            fresh[status] = update
        ordered = sorted(fresh.values(), key=lambda u: rank(normalize_status(u.status)))
        return ordered + detections[:1]

    def _detection(self, update: CallStatusUpdate) -> bool:
        """A repeated status that brings answering-machine detection's verdict (Twilio's
        AsyncAmd callback, the simulated carrier's late detection): kept for its answered_by."""
        return (
            self._input.options.machine_detection != MachineDetection.OFF
            and bool(update.answered_by)
            and update.answered_by != self._state.answered_by
        )

    def _annotated(self, updates: list[CallStatusUpdate]) -> list[CallStatusUpdate]:
        """The reports with why the call ended on its final one: what the workflow knows
        (it hung up, and why), then a machine's answer, then the length reaching
        max_duration_seconds (the carrier's own limit), then the carrier's word."""
        answered_by = self._state.answered_by
        for update in updates:
            answered_by = update.answered_by or answered_by
            status = normalize_status(update.status)
            if status is None or not is_final(status) or status == CallStatus.FAILED:
                continue
            limit = self._input.options.max_duration_seconds
            if self._ending is not None:
                update.ended_reason = self._ending
            elif is_machine(answered_by) and status == CallStatus.COMPLETED:
                update.ended_reason = EndedReason.VOICEMAIL
            elif limit and (update.duration_seconds or 0) >= limit:
                update.ended_reason = EndedReason.MAX_DURATION
        return updates

    async def _record_statuses(
        self, updates: list[CallStatusUpdate], gave_up_after: float | None = None
    ) -> None:
        if not updates and gave_up_after is None:
            return
        await workflow.execute_local_activity(
            "record_call_status",
            RecordCallStatusInput(
                call_session_id=self._state.call_session_id,
                updates=updates,
                gave_up_after_seconds=gave_up_after,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="record " + ", ".join(u.status for u in updates) if updates else "give up",
        )
        self._applied(updates)

    def _applied(self, updates: list[CallStatusUpdate]) -> None:
        """The state after `updates` (already written to the database)."""
        for update in updates:
            status = normalize_status(update.status)
            assert status is not None
            self._seen_statuses.add(status)
            if update.answered_by:
                self._state.answered_by = update.answered_by
            if advances(self._state.call_status, status):
                self._state.call_status = status
                if is_final(status):
                    self._state.duration_seconds = update.duration_seconds
                    self._state.ended_reason = ended_reason_for(status, update.ended_reason)
                limit = self._input.options.max_duration_seconds
                if status == CallStatus.ANSWERED and limit:
                    self._deadline = workflow.now() + timedelta(seconds=limit)
        if updates and self._state.call_status:
            self._status(self._state.call_status, self._state.call_status)

    def _take_inbox(self) -> list[CallStatusUpdate]:
        updates, self._inbox = self._inbox, []
        return updates

    async def _poll(self, leg_id: str, provider: str) -> FetchCallStatusResult:
        try:
            result: FetchCallStatusResult = await workflow.execute_local_activity(
                "fetch_call_status",
                FetchCallStatusInput(
                    call_session_id=self._state.call_session_id,
                    provider=provider,
                    telephony_leg_id=leg_id,
                ),
                result_type=FetchCallStatusResult,
                start_to_close_timeout=FETCH_TIMEOUT,
                retry_policy=FETCH_RETRY,
                summary="ask the provider for the call's status",
            )
        except ActivityError:
            workflow.logger.warning("could not fetch the call's status; will ask again")
            return FetchCallStatusResult()
        return result

    async def _dial_safely(self, dial: DialInput, policy: DialPolicy) -> RecordOutcomeInput:
        session_id = dial.call_session_id
        max_attempts = policy.max_attempts
        last_code: str | None = None
        last_reason = "no attempt was made"
        self._first_dial_at = workflow.now()
        paced = 0
        attempt = 0
        while attempt < max_attempts:
            attempt += 1
            blocked = self._not_dialing(session_id, attempt - 1)
            if blocked is not None:
                return blocked
            self._status(SessionStatus.DIALING, f"dialing attempt {attempt} of {max_attempts}")
            dial.attempt = attempt
            dial.slot = self._slot_for(attempt)
            self._flush_status()
            try:
                result: DialResult = await workflow.execute_activity(
                    "dial",
                    dial,
                    result_type=DialResult,
                    task_queue=policy.task_queue,
                    start_to_close_timeout=timedelta(seconds=policy.timeout_seconds),
                    retry_policy=DIAL_RETRY,
                    # Past latest_at no dial may start: an attempt no worker took by then
                    # provably did not reach the carrier (schedule-to-start).
                    schedule_to_start_timeout=self._until_latest(),
                    summary=f"dial attempt {attempt} of {max_attempts}",
                    priority=self._dial_priority(),
                )
            except ActivityError as err:
                cause = err.cause
                not_placed = (
                    isinstance(cause, ApplicationError) and cause.type == ErrorType.DIAL_NOT_PLACED
                ) or (
                    isinstance(cause, ActivityTimeout)
                    and cause.type == TimeoutType.SCHEDULE_TO_START
                )
                details = list(cause.details) if isinstance(cause, ApplicationError) else []
                last_code = str(details[0]) if details and details[0] is not None else None
                retry_after = float(details[1]) if len(details) > 1 and details[1] else 0.0
                # The provider's own words, for the timeline only: the reason stays ours.
                said = str(details[2]) if len(details) > 2 and details[2] is not None else None
                # The SDK types the cause as any BaseException; a failure it converted is a
                # FailureError, which has the message.
                last_reason = str(cause.message if isinstance(cause, FailureError) else err.message)
                if (
                    not_placed
                    and last_code == PACED_CODE
                    and paced < MAX_PACED_REFUSALS
                    and workflow.patched(PACED_RETRIES)
                ):
                    # Nothing was sent: the campaign's pace had no moment for it yet. The
                    # same attempt goes again when the pace has room, not a spent attempt.
                    paced += 1
                    attempt -= 1
                    self._status(SessionStatus.DIALING, "held by the campaign's pace")
                    await self._pause(max(retry_after, 1.0))
                    continue
                await self._record_attempt(
                    RecordAttemptInput(
                        call_session_id=session_id,
                        attempt=attempt,
                        result=AttemptResult.NOT_PLACED if not_placed else AttemptResult.AMBIGUOUS,
                        provider_error_code=last_code,
                        detail=last_reason,
                        provider_message=said,
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
                            status=SessionStatus.FAILED,
                            attempts=attempt,
                            failure_code=FailureCode.DIAL_OUTCOME_UNKNOWN,
                            failure_reason="the provider could not be asked whether the call "
                            "was placed; not dialing again",
                        )
                    if found.telephony_leg_id:
                        return RecordOutcomeInput(
                            call_session_id=session_id,
                            status=SessionStatus.SUCCESS,
                            attempts=attempt,
                            telephony_leg_id=found.telephony_leg_id,
                        )
                elif attempt < max_attempts:
                    # A cancel or a passed latest_at stops the wait (checked before the next).
                    await self._pause(max(delay, retry_after))
                continue
            if result.placed:
                return RecordOutcomeInput(
                    call_session_id=session_id,
                    status=SessionStatus.SUCCESS,
                    attempts=attempt,
                    telephony_leg_id=result.telephony_leg_id,
                )
            return RecordOutcomeInput(
                call_session_id=session_id,
                status=SessionStatus.FAILED,
                attempts=attempt,
                failure_code=FailureCode.PROVIDER_REJECTED,
                failure_reason=result.reason or "the provider rejected the call",
                provider_error_code=result.provider_error_code,
                provider_message=result.provider_message,
            )
        return RecordOutcomeInput(
            call_session_id=session_id,
            status=SessionStatus.FAILED,
            attempts=max_attempts,
            failure_code=FailureCode.RETRIES_EXHAUSTED,
            failure_reason=f"gave up after {max_attempts} attempts: {last_reason}",
            provider_error_code=last_code,
        )

    async def _reconcile(
        self, dial: DialInput, attempt: int, task_queue: str
    ) -> ReconcileResult | None:
        self._status(SessionStatus.DIALING, f"reconciling attempt {attempt}")
        self._flush_status()
        try:
            found: ReconcileResult = await workflow.execute_activity(
                "reconcile_dial",
                ReconcileInput(
                    call_session_id=dial.call_session_id,
                    to_number=dial.to_number,
                    from_number=dial.from_number,
                    provider=dial.provider,
                    attempts=list(range(1, attempt + 1)),
                    since=self._first_dial_at.isoformat() if self._first_dial_at else None,
                ),
                result_type=ReconcileResult,
                task_queue=task_queue,
                start_to_close_timeout=RECONCILE_TIMEOUT,
                schedule_to_close_timeout=RECONCILE_SCHEDULE_TO_CLOSE,
                retry_policy=RECONCILE_RETRY,
                summary=f"look up attempts 1-{attempt} at the provider",
                priority=self._dial_priority(),
            )
        except ActivityError:
            return None
        await self._record_attempt(
            RecordAttemptInput(
                call_session_id=dial.call_session_id,
                attempt=attempt,
                result=AttemptResult.RECONCILED_FOUND
                if found.telephony_leg_id
                else AttemptResult.RECONCILED_NOT_FOUND,
                detail=found.telephony_leg_id,
            )
        )
        return found

    def _slot_for(self, attempt: int) -> DialSlot | None:
        """The campaign's pacing of a dial: the first attempt keeps its slot; a retry (once
        patched) reserves the campaign's next free moment from now, so it cannot crowd the
        campaign's window either."""
        slot = self._input.dial_slot
        if slot is None or attempt == 1:
            return slot
        if not workflow.patched(PACED_RETRIES):
            return None
        return dataclasses.replace(slot, at=workflow.now().timestamp())

    def _dial_priority(self) -> Priority:
        if not workflow.patched(DIAL_PRIORITY):
            return Priority.default
        input = self._input
        return call_priority(input.user_id, input.campaign_id, self._fairness_weight)

    async def _record_attempt(self, attempt: RecordAttemptInput) -> None:
        self._state.attempts = attempt.attempt
        await workflow.execute_local_activity(
            "record_attempt",
            attempt,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"record attempt {attempt.attempt}: {attempt.result}",
        )

    # --- call control (issue 16) ---------------------------------------------------------

    async def _wait_for_schedule(self, at: datetime) -> None:
        """A durable timer until scheduled_at (it survives every restart: it is the server's,
        not this process's); a cancel ends the wait, and the dial loop then never dials."""
        self._state.call_status = CallStatus.SCHEDULED
        self._status(CallStatus.SCHEDULED, f"scheduled for {at.isoformat()}")
        self._flush_status()
        delay = (at - workflow.now()).total_seconds()
        if delay > 0:
            try:
                await workflow.wait_condition(
                    lambda: self._control is not None, timeout=timedelta(seconds=delay)
                )
            except TimeoutError:
                pass

    async def _admit(self, session_id: str) -> RecordOutcomeInput | None:
        """A scheduled call at its time, within its account's limits (max_concurrent_calls,
        max_calls_per_second)? While it is not, it waits and asks again, up to its latest_at;
        then, or at once without a latest_at, it fails with the limit's code, like a single
        call refused at its request. None: dial (a cancel meanwhile: the dial loop sees it)."""
        while self._control is None:
            verdict: AdmitCallResult = await workflow.execute_local_activity(
                "admit_call",
                AdmitCallInput(call_session_id=session_id, user_id=self._input.user_id),
                result_type=AdmitCallResult,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="within the account's limits?",
            )
            if verdict.failure_code is None:
                return None
            wait = max(timedelta(seconds=verdict.retry_after), ADMIT_RETRY)
            latest = self._latest()
            if latest is None or workflow.now() + wait >= latest:
                return RecordOutcomeInput(
                    call_session_id=session_id,
                    status=SessionStatus.FAILED,
                    attempts=0,
                    failure_code=verdict.failure_code,
                    failure_reason=verdict.failure_reason,
                )
            self._status(
                CallStatus.SCHEDULED,
                f"waiting for the account's limit ({verdict.failure_code}) until "
                f"{latest.isoformat()}",
            )
            self._flush_status()
            await self._pause(wait.total_seconds())
        return None

    def _latest(self) -> datetime | None:
        latest = self._input.options.latest_at
        return datetime.fromisoformat(latest) if latest else None

    def _until_latest(self) -> timedelta | None:
        latest = self._latest()
        if latest is None:
            return None
        return max(latest - workflow.now(), timedelta(seconds=1))

    def _not_dialing(self, session_id: str, attempts: int) -> RecordOutcomeInput | None:
        """The outcome instead of a next dial: canceled, or latest_at passed. None: dial."""
        if self._control is not None:
            return RecordOutcomeInput(
                call_session_id=session_id,
                status=SessionStatus.FAILED,
                attempts=attempts,
                failure_code=FailureCode.CANCELED,
                failure_reason=f"canceled before it was dialed ({self._control.requested_by})",
                call_status=CallStatus.CANCELED,
                ended_reason=EndedReason.CANCELED,
            )
        latest = self._latest()
        if latest is not None and workflow.now() >= latest:
            return RecordOutcomeInput(
                call_session_id=session_id,
                status=SessionStatus.FAILED,
                attempts=attempts,
                failure_code=FailureCode.LATEST_AT_PASSED,
                failure_reason=f"not dialed by its latest_at ({latest.isoformat()}); "
                "not dialing it late",
                ended_reason=EndedReason.NOT_DIALED,
            )
        return None

    async def _pause(self, seconds: float) -> None:
        """The wait between not-placed attempts; a cancel ends it early."""
        try:
            await workflow.wait_condition(
                lambda: self._control is not None, timeout=timedelta(seconds=seconds)
            )
        except TimeoutError:
            pass

    def _until_deadline(self) -> float:
        if self._deadline is None or self._hung_up:
            return float("inf")
        return max((self._deadline - workflow.now()).total_seconds(), 0.001)

    def _due_action(self) -> tuple[EndedReason, str | None] | None:
        """Whether the workflow must end the placed call now, why, and what to say first."""
        if self._hung_up:
            return None
        if self._control is not None:
            return EndedReason.HANGUP_REQUESTED, None
        if self._deadline is not None and workflow.now() >= self._deadline:
            return EndedReason.MAX_DURATION, None
        options = self._input.options
        answered_by = self._state.answered_by
        if options.machine_detection == MachineDetection.DETECT_AND_HANG_UP and is_machine(
            answered_by
        ):
            return EndedReason.VOICEMAIL, None
        if (
            options.machine_detection == MachineDetection.DETECT_AND_LEAVE_MESSAGE
            and options.voicemail_message
            and answered_by in MACHINE_MESSAGE_END
        ):
            return EndedReason.VOICEMAIL, options.voicemail_message
        return None

    async def _hang_up(
        self, leg_id: str, provider: str, reason: EndedReason, message: str | None
    ) -> None:
        """End the placed call at the carrier (once), then follow it to its final status."""
        self._hung_up = True
        if not workflow.patched(CALL_CONTROL):
            return
        self._ending = reason
        self._status(self._state.call_status or SessionStatus.SUCCESS, f"hanging up: {reason}")
        self._flush_status()
        detail: dict[str, object] = {"reason": reason}
        try:
            result: HangupResult = await workflow.execute_activity(
                "hangup_call",
                HangupInput(
                    call_session_id=self._state.call_session_id,
                    provider=provider,
                    telephony_leg_id=leg_id,
                    answered=self._state.call_status == CallStatus.ANSWERED,
                    message=message,
                ),
                result_type=HangupResult,
                task_queue=self._input.policy.task_queue,
                start_to_close_timeout=HANGUP_TIMEOUT,
                schedule_to_close_timeout=HANGUP_SCHEDULE_TO_CLOSE,
                retry_policy=HANGUP_RETRY,
                summary=f"hang up: {reason}",
            )
            detail["already_ended"] = not result.ended
            if message:
                detail["voicemail_message_chars"] = len(message)
            kind = "hangup_sent"
        except ActivityError:
            workflow.logger.warning("the carrier could not be asked to end the call")
            kind = "hangup_failed"
        if self._control is not None:
            self._control_outcome = ControlOutcome.HANGUP_SENT
        await self._record_event(f"hangup:{reason}", kind, detail)

    async def _record_event(self, key: str, type_: str, detail: dict[str, object]) -> None:
        if not workflow.patched(CALL_CONTROL):
            return
        await workflow.execute_local_activity(
            "record_call_event",
            RecordCallEventInput(
                call_session_id=self._state.call_session_id, key=key, type=type_, detail=detail
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"record {type_}",
        )

    def _call_over(self) -> bool:
        state = self._state
        return (
            self._done
            or is_final(state.call_status)
            or state.ended_reason is not None
            or (
                state.status in (SessionStatus.FAILED, SessionStatus.SUCCESS)
                and not state.telephony_leg_id
            )
        )

    async def _finish(self, status: str, details: str) -> CallState:
        self._done = True
        self._status(status, details)
        self._flush_status()
        for stage in WAIT_STAGES:
            self._reach(stage)
        # Let waiting create_call requests receive their answer before the run closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if status == SessionStatus.FAILED and workflow.patched(FAIL_FAILED_CALLS):
            # A call that failed (not placed, or the carrier's `failed`) ends the run as Failed,
            # so the Temporal UI shows it red and counts it in its failure views; busy,
            # no-answer and the rest were placed calls and complete. Non-retryable: the
            # workflow's own retry would be a second call. The final state rides along.
            raise ApplicationError(
                f"call failed: {self._state.failure_code or 'the carrier reported it failed'}",
                self._state,
                type=ErrorType.CALL_FAILED,
                non_retryable=True,
            )
        return self._state

    def _status(self, status: str, details: str) -> None:
        """The call's status for operators: the UI's current details at once, the
        DialerCallStatus search attribute at the next wait (_flush_status)."""
        self._attributes[SA_CALL_STATUS.name] = SA_CALL_STATUS.value_set(status)
        workflow.set_current_details(details)

    def _flush_status(self) -> None:
        """Upsert the search attributes that changed since the last wait, in one command.
        Called before every wait on the server (activity, timer, signal): what an operator
        can see while the run waits is current, and a workflow task that moves the status
        several times (e.g. success, then the call's whole lifecycle at once) writes the
        visibility store once, not once per step."""
        changed = [
            update
            for name, update in self._attributes.items()
            if self._upserted.get(name) != update.value
        ]
        if changed:
            workflow.upsert_search_attributes(changed)
            self._upserted.update({u.key.name: u.value for u in changed})

    def _reach(self, stage: Stage) -> None:
        self._stages_reached.add(stage)
        self._state.stage = stage

    @workflow.signal(name="call_statuses")
    def call_statuses(self, updates: list[CallStatusUpdate]) -> None:
        """Provider status reports (webhook or simulated carrier; every report a carrier had
        ready at once comes in one signal), processed in order of the lifecycle: a late or
        repeated report never moves the call backwards."""
        room = MAX_PENDING_STATUSES - len(self._inbox)
        self._inbox.extend(updates[: max(room, 0)])

    @workflow.update
    async def wait_for_stage(self, req: WaitForStageInput) -> CallState:
        """Return once the call reached `req.stage` (or ended)."""
        await workflow.wait_condition(lambda: req.stage in self._stages_reached)
        return self._state

    @wait_for_stage.validator
    def _check_wait(self, req: WaitForStageInput) -> None:
        if req.stage not in WAIT_STAGES:
            raise ValueError(f"unknown stage {req.stage!r}")
        if req.request_hash != self._input.request_hash:
            raise ApplicationError(
                "Idempotency-Key reused with different parameters",
                type=ErrorType.IDEMPOTENCY_CONFLICT,
            )

    @workflow.update(name="call_control")
    async def call_control(self, req: CallControlInput) -> CallControlResult:
        """Cancel or hang up (services/call_control.py): answered once the workflow applied
        it (not dialed, or the hang-up sent) or the call ended anyway. Asking again is
        harmless: the first request is the one that acts, each action is recorded once."""
        if req.action not in self._control_actions:
            self._control_actions.add(req.action)
            if self._control is None:
                self._control = req
            await self._record_event(
                f"control:{req.action}",
                "control_requested",
                {
                    "action": req.action,
                    "requested_by": req.requested_by,
                    "call_status": self._state.call_status,
                },
            )
        await workflow.wait_condition(lambda: self._control_outcome is not None or self._done)
        outcome = self._control_outcome
        if outcome is None:
            placed = self._state.telephony_leg_id is not None
            outcome = ControlOutcome.HANGUP_SENT if placed else ControlOutcome.CANCELED
        return CallControlResult(outcome=outcome, state=self._state)

    @call_control.validator
    def _check_control(self, req: CallControlInput) -> None:
        if req.action not in (ControlAction.CANCEL, ControlAction.HANGUP):
            raise ValueError(f"unknown action {req.action!r}")
        # A call that ended because of a control request answers a repeat as before.
        if self._control_outcome is None and self._control is None and self._call_over():
            raise ApplicationError("the call is over", type=ErrorType.CALL_OVER)

    @workflow.query
    def state(self) -> CallState:
        return self._state


def search_attributes_for(input: CreateCallInput) -> list[SearchAttributePair[str]]:
    pairs = [
        SearchAttributePair(SA_USER_ID, input.user_id),
        SearchAttributePair(SA_REQUEST_ID, input.request_id),
        SearchAttributePair(SA_CALL_STATUS, CallProgress.VALIDATING),
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
