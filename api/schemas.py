"""Request and response schemas of the HTTP edge. No table object leaks into a response."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.config import JsonDict

from contracts import context
from contracts.calls import (
    ControlAction,
    ControlOutcome,
    EndedReason,
    MachineDetection,
    SessionStatus,
    Stage,
)
from contracts.lifecycle import CallStatus
from services.calls import AnswerStatus

T = TypeVar("T")

# Twilio's longest call (TimeLimit), and the longest voicemail message a call may leave.
MAX_CALL_SECONDS = 14400
MAX_VOICEMAIL_CHARS = 1000


def as_utc(value: datetime) -> datetime:
    """A time as the API shows it: in UTC, naive taken as UTC. Rows read from the database are
    aware UTC already (store.db.UTCDateTime); this covers values never read back, like the
    start_at a request gave with its own offset, answered from the row just written. As an
    input type it also refuses an instant that has no UTC form (9999-12-31T23:59:59-23:59 is
    in the year 10000), which the database column could not take either."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is outside the years 1 to 9999 in UTC") from None


UTCDatetime = Annotated[datetime, AfterValidator(as_utc)]

# Explicit bidirectional formatting characters (embeddings, overrides, isolates and the marks):
# they make a name read differently from what it is (U+202E turns "Bob\u202egnp.exe" around).
_BIDI_CLASSES = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})
_BIDI_MARKS = frozenset({"\u200e", "\u200f", "\u061c"})  # LRM, RLM, ALM
# Control characters (C0, C1, DEL), surrogates, and line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def plain_text(value: str) -> str:
    """Names and labels shown to people (agents, workflows, campaigns, line labels, reasons):
    no control character and no bidirectional formatting character, which would be stored and
    echoed into every screen and log that shows them."""
    for char in value:
        if (
            unicodedata.category(char) in _CONTROL_CATEGORIES
            or unicodedata.bidirectional(char) in _BIDI_CLASSES
            or char in _BIDI_MARKS
        ):
            raise ValueError(
                f"control or bidirectional formatting character U+{ord(char):04X} is not allowed"
            )
    return value


PlainText = Annotated[str, AfterValidator(plain_text)]

# The stages a create_call request can wait for (contracts.calls.WAIT_STAGES).
WaitStage = Literal[Stage.ACCEPTED, Stage.DIALED]


class RequestModel(BaseModel):
    """The base of every request model (bodies, create_call's query): a field it does not
    know is refused with a 422 that names it, never ignored, so a misspelled or misplaced
    field (`calls_per_second` beside `options`, `phone_number` for `phoneNumber`) cannot
    quietly fall back to a default. The OpenAPI document says so for bodies
    (additionalProperties: false); query parameters have no such keyword."""

    model_config = ConfigDict(extra="forbid")


class CreateCallQuery(RequestModel):
    """create_call's query parameters; any other parameter is refused."""

    phone_number: str = Field(alias="phoneNumber", min_length=1, max_length=64)
    agent_id: uuid.UUID | None = None
    workflow_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    wait: WaitStage = Stage.ACCEPTED


# Any, so a value keeps the JSON type it was sent with ("1" stays a string, 1 a number) and a
# wrong one gets one message from contracts.context rather than one per JSON type; the schema
# still says what is allowed.
VARIABLES_SCHEMA: JsonDict = {
    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
}
METADATA_SCHEMA: JsonDict = {"additionalProperties": {"type": "string"}}


class CreateCallBody(RequestModel):
    """create_call's optional JSON body: the call's context. The query parameters of the
    contract stay as they are; a request without a body is as valid as ever."""

    variables: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=VARIABLES_SCHEMA,
        description=f"Sent to the agent as stream parameters, each under its own name. At "
        f"most {context.MAX_VARIABLES}; names `[A-Za-z_][A-Za-z0-9_]{{0,63}}`, not one of "
        f"{', '.join(context.RESERVED_PARAMETERS)}; strings up to "
        f"{context.MAX_VARIABLE_CHARS} characters, numbers (integers within "
        f"±{context.MAX_SAFE_INTEGER}), booleans; together at most "
        f"{context.MAX_VARIABLES_TWIML_CHARS} characters of TwiML (see the README).",
        examples=[{"first_name": "Ada", "balance_due": 42.5, "vip": True}],
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=METADATA_SCHEMA,
        description=f"The client's own: stored and returned by call-analytics, never sent to "
        f"the carrier or the agent. At most {context.MAX_METADATA_KEYS} keys of up to "
        f"{context.MAX_METADATA_KEY_CHARS} characters, values up to "
        f"{context.MAX_METADATA_VALUE_CHARS}.",
        examples=[{"crm_contact": "C-1029"}],
    )
    scheduled_at: UTCDatetime | None = Field(
        default=None,
        description="Dial no earlier than this instant (ISO 8601 with its offset). At most "
        "DIALER_SCHEDULE_SKEW_SECONDS in the past (dialed at once), at most "
        "DIALER_SCHEDULE_HORIZON_DAYS ahead. The answer comes at once with call_status "
        "`scheduled`; wait=dialed is refused for a call scheduled in the future.",
    )
    latest_at: UTCDatetime | None = Field(
        default=None,
        description="Not dialed by then (Temporal, the worker or the carrier down): the call "
        "fails with failure_code `latest_at_passed` instead of calling late. After "
        "scheduled_at (or now).",
    )
    max_duration_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CALL_SECONDS,
        description="Counted from the answer: the carrier's own limit where it has one "
        "(Twilio TimeLimit), and the workflow hangs up otherwise; ended_reason "
        "`max_duration`. Default DIALER_MAX_DURATION_SECONDS.",
    )
    machine_detection: MachineDetection | None = Field(
        default=None,
        description="Answering machines: off, detect (answered_by only), detect_and_hang_up, "
        "detect_and_leave_message (voicemail_message after the beep, or the agent's). "
        "Default DIALER_MACHINE_DETECTION (off).",
    )
    voicemail_message: PlainText | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VOICEMAIL_CHARS,
        description="With detect_and_leave_message: what the carrier says after the beep, "
        "then it hangs up. Without it the agent on the stream leaves the message.",
    )

    @model_validator(mode="after")
    def _within_limits(self) -> CreateCallBody:
        problem = context.variables_problem(self.variables) or context.metadata_problem(
            self.metadata
        )
        if problem:
            raise ValueError(problem)
        if self.scheduled_at and self.latest_at and self.latest_at <= self.scheduled_at:
            raise ValueError("latest_at must be after scheduled_at")
        if self.voicemail_message and (
            self.machine_detection != MachineDetection.DETECT_AND_LEAVE_MESSAGE
        ):
            raise ValueError("voicemail_message needs machine_detection detect_and_leave_message")
        return self


class CreateCallResponse(BaseModel):
    status: AnswerStatus = Field(
        description="success: initiation accepted or dialed; failed: recorded as failed "
        "(see failure_code); pending: the wait budget ran out, the call proceeds durably."
    )
    request_id: uuid.UUID
    call_session_id: uuid.UUID
    user_id: uuid.UUID
    telephony_provider: Literal["pstn"] = "pstn"
    target_number: str = Field(description="Destination, E.164 when it could be normalized.")
    from_phone_number: str | None = None
    telephony_leg_id: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    call_status: CallStatus | None = Field(
        default=None, description="`scheduled` while a scheduled call waits for its time."
    )
    scheduled_at: UTCDatetime | None = None


class CallControlResponse(BaseModel):
    call_session_id: uuid.UUID
    action: ControlAction
    outcome: ControlOutcome = Field(
        description="canceled: it was not placed and never will be; hangup_sent: the carrier "
        "was asked to end the placed call; pending: not applied within the wait (a dial in "
        "flight comes back first), it will be."
    )
    status: SessionStatus
    call_status: CallStatus | None = None
    ended_reason: EndedReason | None = None


class CallEventPublic(BaseModel):
    type: str
    detail: dict[str, Any] | None = None
    created_at: UTCDatetime


class CallSessionPublic(BaseModel):
    call_session_id: uuid.UUID
    request_id: uuid.UUID
    user_id: uuid.UUID
    status: SessionStatus
    target_number: str | None
    from_phone_number: str | None
    telephony_provider: Literal["pstn"] = "pstn"
    telephony_leg_id: str | None
    failure_code: str | None
    failure_reason: str | None
    provider_error_code: str | None
    attempts: int
    agent_id: uuid.UUID | None
    workflow_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    created_at: UTCDatetime
    updated_at: UTCDatetime
    call_status: CallStatus | None = Field(
        default=None,
        description="Where the placed call is, from the provider's status callbacks or from "
        "asking the provider; completed, busy, no-answer, canceled and failed are final.",
    )
    answered_at: UTCDatetime | None = None
    ended_at: UTCDatetime | None = None
    duration_seconds: int | None = Field(default=None, description="Of a completed call.")
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="As sent to the agent (create_call's body or the "
        "campaign's and its recipient's).",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="The client's own (a campaign call: its recipient's external_id).",
    )
    external_id: str | None = Field(
        default=None, description="metadata's external_id (a campaign call: its recipient's)."
    )
    scheduled_at: UTCDatetime | None = None
    latest_at: UTCDatetime | None = None
    max_duration_seconds: int | None = None
    machine_detection: MachineDetection | None = None
    answered_by: str | None = Field(
        default=None,
        description="Answering-machine detection's verdict: human, machine_start, "
        "machine_end_beep, machine_end_silence, machine_end_other, fax, unknown.",
    )
    ended_reason: EndedReason | None = Field(
        default=None, description="Why the finished call ended (README, Call control)."
    )


class CallSessionDetail(CallSessionPublic):
    events: list[CallEventPublic]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class PhoneNumberCreate(RequestModel):
    number: str = Field(max_length=40, examples=["+12025550199"])
    provider: str = Field(default="simulated", max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")
    label: PlainText | None = Field(default=None, max_length=200)
    active: bool = True


class PhoneNumberUpdate(RequestModel):
    active: bool | None = None
    label: PlainText | None = Field(default=None, max_length=200)


class PhoneNumberPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    number: str
    provider: str
    label: str | None
    active: bool
    created_at: UTCDatetime
    confirmed_by: str | None = Field(
        description="The carrier that confirmed the number as its account's own (`twilio`: an "
        "incoming number or a verified caller id; `simulated` confirms every line), or null. "
        "With Twilio a line dials only once Twilio confirmed it."
    )
    confirmed_at: UTCDatetime | None


class MappingCreate(RequestModel):
    phone_number_id: uuid.UUID
    agent_id: uuid.UUID | None = None
    workflow_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MappingCreate:
        if (self.agent_id is None) == (self.workflow_id is None):
            raise ValueError("give exactly one of agent_id and workflow_id")
        return self


class MappingPublic(BaseModel):
    id: uuid.UUID
    phone_number_id: uuid.UUID
    agent_id: uuid.UUID | None
    workflow_id: uuid.UUID | None
    created_at: UTCDatetime


def _media_stream_url(value: str | None) -> str | None:
    if value is not None and (problem := context.media_stream_url_problem(value)):
        raise ValueError(problem)
    return value


MediaStreamUrl = Annotated[
    str | None,
    AfterValidator(_media_stream_url),
    Field(
        description="The agent's WebSocket (ws:// or wss://) the answered call's audio is "
        "streamed to, with the call's ids and variables as parameters. May hold "
        "{call_session_id} and {request_id}, filled per call. Without one, the workflow's, "
        "else DIALER_MEDIA_STREAM_URL.",
        examples=["wss://agent.example.com/media/{call_session_id}"],
    ),
]


class NamedCreate(RequestModel):
    """An agent or a conversation workflow."""

    name: PlainText = Field(min_length=1, max_length=200)
    media_stream_url: MediaStreamUrl = None


class NamedUpdate(RequestModel):
    """The fields to change; `media_stream_url: null` removes the URL."""

    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    media_stream_url: MediaStreamUrl = None


class AgentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    media_stream_url: str | None = None
    phone_number_id: uuid.UUID | None = None
    created_at: UTCDatetime


class FlowPublic(AgentPublic):
    pass


class SuppressionCreate(RequestModel):
    phone_number: str = Field(max_length=40)
    reason: PlainText | None = Field(default=None, max_length=500)


class SuppressionPublic(BaseModel):
    phone_number: str
    reason: str | None
    created_at: UTCDatetime


class AccountLimitsPublic(BaseModel):
    """The account's limits, set by an operator (`dialer users limits`); null: none."""

    max_concurrent_calls: int | None = Field(
        default=None, description="calls dialing, ringing or in progress at once"
    )
    max_calls_per_second: float | None = Field(
        default=None, description="dials per second across all the account's calls"
    )
    fairness_weight: float | None = Field(
        default=None, description="the account's share of the dial queue (null: 1.0)"
    )


class AccountUsagePublic(BaseModel):
    calls_in_flight: int = Field(
        description="calls dialing, ringing or in progress now (and campaign calls starting)"
    )


class MePublic(BaseModel):
    user_id: uuid.UUID
    email: str
    api_key_prefix: str | None
    limits: AccountLimitsPublic = Field(default_factory=AccountLimitsPublic)
    usage: AccountUsagePublic | None = None


class Detail(BaseModel):
    detail: str
