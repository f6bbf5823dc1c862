"""Request and response schemas of the HTTP edge. No table object leaks into a response."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.calls import SessionStatus, Stage
from contracts.lifecycle import CallStatus
from services.calls import AnswerStatus

T = TypeVar("T")


def as_utc(value: datetime) -> datetime:
    """A time as the API shows it: in UTC, naive taken as UTC. Rows read from the database are
    aware UTC already (store.db.UTCDateTime); this covers values never read back, like the
    start_at a request gave with its own offset, answered from the row just written."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDatetime = Annotated[datetime, AfterValidator(as_utc)]

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
    label: str | None = Field(default=None, max_length=200)
    active: bool = True


class PhoneNumberUpdate(RequestModel):
    active: bool | None = None
    label: str | None = Field(default=None, max_length=200)


class PhoneNumberPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    number: str
    provider: str
    label: str | None
    active: bool
    created_at: UTCDatetime


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


class NamedCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)


class AgentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    phone_number_id: uuid.UUID | None = None
    created_at: UTCDatetime


class FlowPublic(AgentPublic):
    pass


class SuppressionCreate(RequestModel):
    phone_number: str = Field(max_length=40)
    reason: str | None = Field(default=None, max_length=500)


class SuppressionPublic(BaseModel):
    phone_number: str
    reason: str | None
    created_at: UTCDatetime


class MePublic(BaseModel):
    user_id: uuid.UUID
    email: str
    api_key_prefix: str | None


class Detail(BaseModel):
    detail: str
