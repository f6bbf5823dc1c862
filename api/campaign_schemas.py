"""Request and response schemas of the batch-call (campaign) routes. Every request model,
nested ones included, refuses fields it does not know (api.schemas.RequestModel)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from api.schemas import (
    MAX_CALL_SECONDS,
    MAX_VOICEMAIL_CHARS,
    VARIABLES_SCHEMA,
    PlainText,
    RequestModel,
    UTCDatetime,
    as_utc,
)
from contracts.calls import MachineDetection
from contracts.campaigns import (
    MAX_CALLS_PER_SECOND,
    MIN_CALLS_PER_SECOND,
    AttemptOutcome,
    CampaignState,
    RecipientState,
)
from contracts.context import variables_problem
from core.windows import DAY_NAMES, DayName, valid_zone

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
VariableValue = str | int | float | bool | None


class CallingWindow(RequestModel):
    """Local hours in which a recipient may be called, in the recipient's time zone when the
    number has exactly one (e.g. a US area code), else in `timezone`."""

    start: str = Field(default="09:00", pattern=_HHMM, examples=["09:00"])
    end: str = Field(default="20:00", pattern=_HHMM, description="exclusive", examples=["20:00"])
    days: list[DayName] = Field(default=list(DAY_NAMES), min_length=1)
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA zone for numbers whose zone is ambiguous",
        examples=["America/New_York"],
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not valid_zone(value):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)")
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> CallingWindow:
        if self.start >= self.end:
            raise ValueError("calling_window.start must be before end (same day)")
        return self


RedialOutcome = Literal[RecipientState.BUSY, RecipientState.NO_ANSWER, RecipientState.VOICEMAIL]


class RedialPolicy(RequestModel):
    outcomes: list[RedialOutcome] = Field(min_length=1)
    max_attempts: int = Field(
        default=2, ge=2, le=10, description="calls per recipient in all, the first included"
    )
    delay_seconds: int = Field(default=600, ge=0, le=7 * 86400)


class CampaignOptions(RequestModel):
    calls_per_second: float = Field(
        default=1.0,
        ge=MIN_CALLS_PER_SECOND,
        le=MAX_CALLS_PER_SECOND,
        description=f"dials per second, from {MIN_CALLS_PER_SECOND} (one call every "
        f"{1 / MIN_CALLS_PER_SECOND:.0f} seconds) to {MAX_CALLS_PER_SECOND}",
    )
    max_concurrency: int = Field(default=10, ge=1, le=1000)
    calling_window: CallingWindow | None = None
    start_at: datetime | None = Field(default=None, description="not before this instant")
    redial: RedialPolicy | None = None
    max_duration_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CALL_SECONDS,
        description="each call's, counted from the answer (create_call's option); default "
        "DIALER_MAX_DURATION_SECONDS",
    )
    machine_detection: MachineDetection | None = Field(
        default=None,
        description="each call's answering-machine handling (create_call's option): off, "
        "detect, detect_and_hang_up, detect_and_leave_message; a call a machine answered ends "
        "its recipient `voicemail`. Default DIALER_MACHINE_DETECTION (off).",
    )
    voicemail_message: PlainText | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VOICEMAIL_CHARS,
        description="with detect_and_leave_message: what the carrier says after the beep",
    )

    @model_validator(mode="after")
    def _voicemail_needs_leave_message(self) -> CampaignOptions:
        if self.voicemail_message and (
            self.machine_detection != MachineDetection.DETECT_AND_LEAVE_MESSAGE
        ):
            raise ValueError("voicemail_message needs machine_detection detect_and_leave_message")
        return self

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("start_at needs a time zone offset (e.g. 2026-12-01T09:00:00Z)")
        return None if value is None else as_utc(value)  # refuses an instant with no UTC form


class RecipientIn(RequestModel):
    phone_number: str = Field(max_length=64, examples=["+12025550100"])
    variables: dict[str, VariableValue] = Field(
        default_factory=dict,
        description="merged over the campaign's variables (null removes one of them); the "
        "merged set must stay within create_call's limits, or the row is rejected",
    )
    external_id: PlainText | None = Field(
        default=None,
        max_length=200,
        description="the client's id of the recipient: the call's metadata.external_id",
    )


class CampaignFields(RequestModel):
    """Everything of a campaign but its recipients (the form fields of a CSV upload)."""

    batch_name: PlainText = Field(min_length=1, max_length=200)
    agent_id: uuid.UUID | None = None
    workflow_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    options: CampaignOptions = Field(default_factory=CampaignOptions)
    variables: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=VARIABLES_SCHEMA,
        description="sent to the agent with every call of the campaign, under create_call's "
        "limits; a recipient's own variables (JSON field or CSV columns) win",
        examples=[{"campaign_name": "renewals", "discount": 10}],
    )

    @model_validator(mode="after")
    def _agent_xor_workflow(self) -> CampaignFields:
        if (self.agent_id is None) == (self.workflow_id is None):
            raise ValueError("give exactly one of agent_id and workflow_id")
        if problem := variables_problem(self.variables):
            raise ValueError(problem)
        return self


class CampaignCreate(CampaignFields):
    recipients: list[RecipientIn] = Field(min_length=1)


class RowError(BaseModel):
    row: int = Field(description="1-based recipient index (JSON) or line of the CSV file")
    reason: str


class CampaignSummary(BaseModel):
    id: uuid.UUID
    batch_name: str
    state: CampaignState
    agent_id: uuid.UUID | None
    workflow_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    total_recipients: int
    created_at: UTCDatetime
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None


class CampaignStatus(CampaignSummary):
    options: CampaignOptions
    variables: dict[str, Any] = Field(description="the campaign's own (defaults of each call)")
    counts: dict[str, int] = Field(
        description="recipients per state: not_started, queued, calling, completed, failed, "
        "busy, no_answer, skipped, canceled, voicemail (a machine answered)"
    )
    failure_codes: dict[str, int] = Field(
        description="recipients per failure or skip code (e.g. invalid_number, duplicate)"
    )
    waiting_for: str | None = Field(
        default=None,
        description="why no call is being started now: start_at, calling_window, "
        "redial_delay, max_concurrency, account_max_concurrent_calls (the account's "
        "max_concurrent_calls are in flight), last_calls, paused, pacing; null when calls are "
        "being started or the campaign is over",
    )
    next_start_at: UTCDatetime | None = Field(
        default=None,
        description="when the campaign looks again for a call to start (the start_at, the "
        "next calling window's opening, the next redial), while it waits",
    )


class CampaignCreated(BaseModel):
    campaign: CampaignStatus
    accepted: int = Field(description="recipients that will be called")
    skipped: int = Field(description="duplicates and suppressed numbers, stored as skipped")
    rejected: list[RowError] = Field(description="rows not stored, with the reason")


class RecipientAttempt(BaseModel):
    attempt: int = Field(description="1 for the first call, 2 for the first redial, ...")
    call_session_id: uuid.UUID = Field(description="the call's id (GET /api/v1/calls/{id})")
    outcome: AttemptOutcome | None = Field(
        description="completed, voicemail (a machine answered), busy, no_answer or failed; "
        "null while the call is not over"
    )
    call_status: str | None = None
    answered_by: str | None = None
    ended_reason: str | None = None
    failure_code: str | None = None


class RecipientResult(BaseModel):
    row_number: int = Field(description="1-based index (JSON) or line of the CSV file")
    phone_number: str
    external_id: str | None
    state: RecipientState
    attempts: int = Field(description="calls started for the recipient so far")
    outcome: AttemptOutcome | None = Field(description="the latest attempt's outcome")
    failure_code: str | None
    reason: str | None
    calls: list[RecipientAttempt] = Field(description="every attempt, the first first")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested definitions inlined, for an OpenAPI request
    body that the route reads itself (it accepts JSON or a CSV upload)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)  # a dict comes back a dict
    return inlined
