"""Inputs and results of workflows and activities: one dataclass each, so fields can be added
without breaking running workflows."""

# No `from __future__ import annotations` here: with string annotations the Temporal data
# converter evaluates every type hint again on each decode, three times slower
# (bench/notes.md; tests/unit/test_dto.py).
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    """`ApplicationError.type` values that cross from an activity or the workflow to its caller."""

    # Raised by the dial activity (telephony errors mapped in activities/dialing.py).
    DIAL_NOT_PLACED = "DialNotPlaced"  # provably did not take effect: safe to dial again
    DIAL_AMBIGUOUS = "DialAmbiguous"  # may have taken effect: reconcile before any new attempt
    # Raised by the create_call update: the Idempotency-Key was used with other parameters.
    IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
    # The failure of a CreateCallWorkflow whose call failed (not placed, or the carrier's
    # `failed`): the run shows Failed in the Temporal UI; details[0] is the final CallState.
    CALL_FAILED = "CallFailed"
    # Raised by the call_control update's validator: the call is over, nothing to cancel or
    # hang up (HTTP 409). Rejected before it reaches history.
    CALL_OVER = "CallOver"
    # Raised by reconcile_dial when its provider account's look-up budget stayed spent for
    # the attempt: nothing was sent; Temporal tries again (RECONCILE_RETRY).
    LOOKUP_DEFERRED = "LookupDeferred"


# The first detail (the code) of a DIAL_NOT_PLACED the dial activity raises without asking the
# provider: the campaign's pace left no moment within the attempt's budget (the second detail
# is the wait), or the attempt's deadline passed before the request could be sent.
PACED_CODE = "paced"
LATE_CODE = "late"


class SessionStatus(StrEnum):
    """A call session's status; `success` and `failed` are terminal."""

    ACCEPTED = "accepted"
    DIALING = "dialing"
    SUCCESS = "success"
    FAILED = "failed"


TERMINAL = frozenset({SessionStatus.SUCCESS, SessionStatus.FAILED})


class Stage(StrEnum):
    """How far a call's run has come (`CallState.stage`)."""

    VALIDATING = "validating"
    ACCEPTED = "accepted"
    DIALED = "dialed"


# The stages a create_call request can wait for, in the order they are reached.
WAIT_STAGES = (Stage.ACCEPTED, Stage.DIALED)


class CallProgress(StrEnum):
    """Values of the DialerCallStatus search attribute that are neither a SessionStatus nor a
    carrier status (contracts.lifecycle.CallStatus), which it also shows."""

    VALIDATING = "validating"  # before the session is accepted
    EXPIRED = "expired"  # followed for the maximum call age without a final carrier status


class FailureCode(StrEnum):
    """Values of `failure_code`: each one tells a client what to fix or whether to retry."""

    AGENT_NOT_FOUND = "agent_not_found"
    WORKFLOW_NOT_FOUND = "workflow_not_found"
    PHONE_NUMBER_NOT_FOUND = "phone_number_not_found"
    PHONE_NUMBER_INACTIVE = "phone_number_inactive"
    NO_ACTIVE_LINE = "no_active_line"
    INVALID_NUMBER = "invalid_number"
    SUPPRESSED_NUMBER = "suppressed_number"
    PROVIDER_REJECTED = "provider_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    DIAL_OUTCOME_UNKNOWN = "dial_outcome_unknown"
    ORCHESTRATOR_UNAVAILABLE = "orchestrator_unavailable"
    # A carrier that connects the call to a media stream, and no URL for it (the agent's,
    # the flow's, DIALER_MEDIA_STREAM_URL): nobody is called into silence.
    NO_MEDIA_STREAM = "no_media_stream"
    # The account already has max_concurrent_calls calls dialing, ringing or in progress
    # (`dialer users limits`): a single call is not placed; a campaign waits for a slot.
    CONCURRENCY_LIMIT = "concurrency_limit"
    # The account has placed max_calls_per_second calls in the last second (`dialer users
    # limits`): a single call is not placed; a campaign's pace is held to the account's rate.
    CALLS_PER_SECOND_LIMIT = "calls_per_second_limit"
    # A scheduled call that could not be dialed by its latest_at (Temporal, the worker or the
    # carrier down, or the dial queue full): it is not dialed late.
    LATEST_AT_PASSED = "latest_at_passed"
    # Canceled by its client before it was placed (POST /api/v1/calls/{id}/cancel).
    CANCELED = "canceled"
    # The carrier that dials the line keeps an account of the numbers a call may come from
    # (Twilio) and the line was not confirmed as one of them (POST /api/v1/phone/{id}/confirm).
    LINE_NOT_CONFIRMED = "line_not_confirmed"


class MachineDetection(StrEnum):
    """What a call does about answering machines (create_call's body, a campaign option)."""

    OFF = "off"
    DETECT = "detect"  # detect and report answered_by; the call goes on
    DETECT_AND_HANG_UP = "detect_and_hang_up"  # a machine: hang up at once
    # A machine: after its beep, the carrier speaks voicemail_message and hangs up (without
    # one, the agent on the media stream leaves it).
    DETECT_AND_LEAVE_MESSAGE = "detect_and_leave_message"


# answered_by values (Twilio's vocabulary, the simulated carrier's too) that mean a machine.
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
# The ones that come once a machine's greeting is over: the moment to leave a message.
MACHINE_MESSAGE_END = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})


def is_machine(answered_by: str | None) -> bool:
    return answered_by in MACHINE_ANSWERS


class EndedReason(StrEnum):
    """Why a finished call ended (`ended_reason`), from the carrier's reports and the
    workflow's own knowledge. Values are on the wire and in the database: never renamed."""

    CALLEE_HUNG_UP = "callee_hung_up"  # the person (or machine) called hung up
    AGENT_HUNG_UP = "agent_hung_up"  # the agent closed its media stream
    HANGUP_REQUESTED = "hangup_requested"  # POST .../hangup or .../cancel on a placed call
    MAX_DURATION = "max_duration"  # max_duration_seconds reached
    VOICEMAIL = "voicemail"  # a machine answered: hung up on it, or left the message
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # the carrier reported the placed call failed
    EXPIRED = "expired"  # followed for the maximum call age without a final status
    CANCELED = "canceled"  # canceled before it was placed
    NOT_DIALED = "not_dialed"  # never placed: see failure_code


class ControlAction(StrEnum):
    """What a client asks of a call once it was created."""

    CANCEL = "cancel"  # never dial it; a placed call is ended
    HANGUP = "hangup"  # end it at the carrier; one not placed yet is never dialed


class ControlOutcome(StrEnum):
    """What the call_control update did."""

    CANCELED = "canceled"  # it was not placed and never will be
    HANGUP_SENT = "hangup_sent"  # the carrier was asked to end the placed call
    PENDING = "pending"  # not applied within the wait (a dial in flight): it will be


class AttemptResult(StrEnum):
    """What became of one dial attempt (`RecordAttemptInput.result`, the timeline's keys)."""

    NOT_PLACED = "not_placed"  # provably not placed: safe to dial again
    AMBIGUOUS = "ambiguous"  # may have been placed: reconcile first
    RECONCILED_FOUND = "reconciled_found"  # the provider has the call
    RECONCILED_NOT_FOUND = "reconciled_not_found"  # the provider has no such call


class StatusSource(StrEnum):
    """Where a provider status report came from."""

    CALLBACK = "callback"  # the provider told us (webhook, simulated carrier)
    POLL = "poll"  # we asked the provider (fetch_call)


@dataclass
class DialPolicy:
    """How hard to try. Filled from settings by whoever starts the workflow."""

    max_attempts: int = 5
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 15.0
    task_queue: str = "dialer-dial"


@dataclass
class FollowPolicy:
    """How a placed call is followed to its end. Filled from settings by whoever starts the
    workflow."""

    poll_after_seconds: float = 30.0  # without a status for this long, ask the provider
    poll_max_seconds: float = 600.0  # the quiet wait doubles up to this
    max_age_seconds: float = 7200.0  # stop following this long after the dial


@dataclass
class DialSlot:
    """A campaign's pacing of one call's first dial: it reaches the provider no earlier than
    `at` (Unix time, seconds), and no sooner than `min_gap` seconds after the previous dial
    with the same `key` (the campaign), across workers when the limits storage is shared
    (infra/limiter.py). A retry reserves its own moment from then. The campaign starts its calls
    ahead of their slots, so the dials keep its calls_per_second however long starting and
    preparing a call took, and a dial held up by a busy worker cannot bunch with the next."""

    at: float
    key: str
    min_gap: float
    # The account whose max_calls_per_second the dial counts in, beside its single calls
    # (README "Accounts and their limits"), and that rate; None: no account rate.
    account: str | None = None
    account_rate: float | None = None


@dataclass(frozen=True)
class CallPolicies:
    """How a call dials and is followed: the same settings for single calls and campaign calls
    (services/calls.py `call_policies`)."""

    dial: DialPolicy = field(default_factory=DialPolicy)
    follow: FollowPolicy = field(default_factory=FollowPolicy)

    @property
    def max_age(self) -> timedelta:
        # A little beyond the call workflow's own limit, so its last word is in the row first.
        return timedelta(seconds=self.follow.max_age_seconds + 60)


@dataclass
class CallOptions:
    """Call control asked for at creation (create_call's body, a campaign's options). The
    defaults change nothing: a run without options does what runs did before they existed."""

    scheduled_at: str | None = None  # ISO 8601, aware: dial no earlier
    latest_at: str | None = None  # ISO 8601, aware: not dialed by then -> latest_at_passed
    max_duration_seconds: int | None = None  # from the answer; None: no limit
    machine_detection: MachineDetection = MachineDetection.OFF
    voicemail_message: str | None = None  # detect_and_leave_message only


@dataclass(frozen=True)
class CallSpec:
    """One call as asked for, with its ids chosen and nothing started yet: what create_call
    and a campaign tick hand to services/calls.py, the one place that turns it into a
    CreateCallWorkflow (fingerprint, policies, start options). Not a payload."""

    call_session_id: str
    request_id: str
    user_id: str
    phone_number: str  # as submitted
    agent_id: str | None = None
    flow_id: str | None = None
    phone_number_id: str | None = None
    idempotency_key: str | None = None
    campaign_id: str | None = None
    dial_slot: DialSlot | None = None
    # For the agent, in its stream's parameters (contracts/context.py).
    variables: dict[str, Any] = field(default_factory=dict)
    # The client's own, stored and echoed, never sent to the carrier.
    metadata: dict[str, str] = field(default_factory=dict)
    options: CallOptions | None = None  # None: the defaults (services/calls.py)


@dataclass
class CreateCallInput:
    call_session_id: str
    request_id: str
    user_id: str
    phone_number: str  # as submitted; normalized by validation
    request_hash: str  # fingerprint of the parameters, for Idempotency-Key conflicts
    agent_id: str | None = None
    flow_id: str | None = None
    phone_number_id: str | None = None
    idempotency_key: str | None = None
    campaign_id: str | None = None
    policy: DialPolicy = field(default_factory=DialPolicy)
    follow: FollowPolicy = field(default_factory=FollowPolicy)
    dial_slot: DialSlot | None = None  # campaigns only
    variables: dict[str, Any] = field(default_factory=dict)  # see CallSpec
    metadata: dict[str, str] = field(default_factory=dict)
    options: CallOptions = field(default_factory=CallOptions)


@dataclass
class WaitForStageInput:
    stage: Stage
    request_hash: str


@dataclass
class CallState:
    """What the workflow knows of its call; the update and the query return it."""

    call_session_id: str
    request_id: str
    user_id: str
    status: SessionStatus
    stage: Stage = Stage.VALIDATING
    target_number: str | None = None
    from_phone_number: str | None = None
    telephony_leg_id: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    provider_error_code: str | None = None
    attempts: int = 0
    # A contracts.lifecycle.CallStatus value (kept `str`: recorded histories carry it as one).
    call_status: str | None = None
    duration_seconds: int | None = None
    scheduled_at: str | None = None
    answered_by: str | None = None
    ended_reason: str | None = None  # an EndedReason value, once the call is over


@dataclass
class CallControlInput:
    """The call_control update: what to do, and who asked (for the timeline)."""

    action: ControlAction
    requested_by: str  # "api key <prefix>", never the key


@dataclass
class CallControlResult:
    outcome: ControlOutcome
    state: CallState


@dataclass
class HangupInput:
    call_session_id: str
    provider: str
    telephony_leg_id: str
    answered: bool  # a call not answered yet is canceled, an answered one completed
    message: str | None = None  # spoken before hanging up (a voicemail)


@dataclass
class HangupResult:
    ended: bool  # False: the carrier had ended it already


@dataclass
class RecordCallEventInput:
    """One timeline entry the workflow itself knows (a control request, a hang-up sent)."""

    call_session_id: str
    key: str  # once per key
    type: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationResult:
    ok: bool
    target_number: str | None = None
    from_number: str | None = None
    phone_number_id: str | None = None
    provider: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    # Where the answered call's audio goes: the agent's, the flow's or the default URL, its
    # placeholders filled. None: no media stream (the simulated carrier's own talk only).
    media_stream_url: str | None = None
    # The account's Task Queue Fairness weight for its dials (None: the server's 1.0).
    fairness_weight: float | None = None
    # The carrier that confirmed the line as the account's own number (None: none did).
    line_confirmed_by: str | None = None


@dataclass
class PersistSessionInput:
    call: CreateCallInput
    validation: ValidationResult


@dataclass
class PersistSessionResult:
    """The row as stored. A row that was already terminal (e.g. the API recorded
    `orchestrator_unavailable`) wins over this run: the workflow must not dial."""

    status: SessionStatus
    already_terminal: bool = False
    telephony_leg_id: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    # This run wrote the row (False: it was there, e.g. prepare_call ran again after a
    # worker crash): what is counted once per call (the account's calls per second) is
    # counted only then.
    created: bool = False


@dataclass
class PrepareCallResult:
    """validate_call and persist_session in one local activity (one marker, one thread hop)."""

    validation: ValidationResult
    stored: PersistSessionResult


@dataclass
class AdmitCallInput:
    """A scheduled call at its time: may it dial within its account's limits?"""

    call_session_id: str
    user_id: str


@dataclass
class AdmitCallResult:
    """None: it may dial (and is counted in the account's calls per second). Else the limit
    it is at (`concurrency_limit` or `calls_per_second_limit`), why, and when to ask again."""

    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    retry_after: float = 0.0


@dataclass
class DialInput:
    call_session_id: str
    request_id: str
    user_id: str
    attempt: int
    to_number: str
    from_number: str
    provider: str
    slot: DialSlot | None = None  # hold the request until its slot (campaigns)
    media_stream_url: str | None = None
    # The stream's customParameters: the call's ids and variables (contracts/context.py).
    stream_parameters: dict[str, str] = field(default_factory=dict)
    max_duration_seconds: int | None = None  # the carrier's own limit where it has one
    machine_detection: MachineDetection = MachineDetection.OFF


@dataclass
class DialResult:
    placed: bool
    telephony_leg_id: str | None = None
    provider_error_code: str | None = None
    reason: str | None = None  # ours, neutral: it becomes the public failure_reason
    # The provider's own text (without the vendor's name), for the timeline and operators.
    provider_message: str | None = None


@dataclass
class ReconcileInput:
    call_session_id: str
    to_number: str
    from_number: str
    provider: str
    attempts: list[int] = field(default_factory=list)
    since: str | None = None  # ISO 8601: just before the first attempt


@dataclass
class ReconcileResult:
    telephony_leg_id: str | None = None


@dataclass
class RecordAttemptInput:
    call_session_id: str
    attempt: int
    result: AttemptResult
    provider_error_code: str | None = None
    detail: str | None = None
    provider_message: str | None = None  # the provider's own text, for the timeline


@dataclass
class CallStatusUpdate:
    """One provider status report about the session's call (the `call_statuses` signal
    carries a list of them: every report a carrier had ready at once, in one signal)."""

    status: str  # provider vocabulary; normalized by contracts.lifecycle
    telephony_leg_id: str | None = None
    occurred_at: str | None = None  # ISO 8601, the provider's time when it has one
    duration_seconds: int | None = None
    source: StatusSource = StatusSource.CALLBACK
    answered_by: str | None = None
    # What the carrier said about it beyond the status (e.g. the agent's stream refused).
    detail: str | None = None
    # Why a final status ended the call (an EndedReason value), when the carrier or the
    # workflow knows more than the status says; else it follows from the status.
    ended_reason: str | None = None


@dataclass
class RecordOutcomeInput:
    call_session_id: str
    status: SessionStatus
    attempts: int
    telephony_leg_id: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None
    provider_error_code: str | None = None
    # Status reports that arrived with the dial's result, recorded in the same local activity
    # (with a fast carrier the call is often over before the workflow sees its leg id).
    statuses: list[CallStatusUpdate] = field(default_factory=list)
    # The provider's own text about a refusal (failure_reason stays ours), for the timeline.
    provider_message: str | None = None
    # A call that was never placed (canceled, latest_at passed): its final call_status and
    # ended_reason. None: as before (a failed outcome's ended_reason is not_dialed).
    call_status: str | None = None
    ended_reason: str | None = None


@dataclass
class RecordCallStatusInput:
    call_session_id: str
    updates: list[CallStatusUpdate] = field(default_factory=list)
    # Set when the workflow stops following a call that never reported a final status.
    gave_up_after_seconds: float | None = None


@dataclass
class FetchCallStatusInput:
    call_session_id: str
    provider: str
    telephony_leg_id: str


@dataclass
class FetchCallStatusResult:
    update: CallStatusUpdate | None = None
    # The provider was not asked: its account's look-up budget was spent; ask again after this
    # many seconds (activities/lifecycle.py LookupBudget).
    deferred_seconds: float | None = None
