"""Request and response schemas of the webhook routes. Request models refuse fields they do
not know (api.schemas.RequestModel) and event types that do not exist (422)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from api.schemas import PlainText, RequestModel
from contracts.webhooks import DeliveryState, EventType
from core.webhooks import MAX_URL_LENGTH

WebhookUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=MAX_URL_LENGTH,
        description="https:// (http:// too in development). In production, a URL whose host "
        "resolves to a loopback, private, link-local or metadata address is refused, at "
        "creation and at every delivery.",
        examples=["https://example.com/dialer-events"],
    ),
]
EventsFilter = Field(
    default=None,
    min_length=1,
    max_length=len(EventType),
    description="The event types to send; omitted or null: every type.",
)


class WebhookCreate(RequestModel):
    url: WebhookUrl
    events: list[EventType] | None = EventsFilter
    description: PlainText | None = Field(default=None, max_length=500)
    include_phone_numbers: bool = Field(
        default=False,
        description="Full phone numbers in the payloads; otherwise only their last 4 digits.",
    )


class WebhookUpdate(RequestModel):
    url: WebhookUrl | None = None
    events: list[EventType] | None = EventsFilter
    description: PlainText | None = Field(default=None, max_length=500)
    include_phone_numbers: bool | None = None
    enabled: bool | None = Field(
        default=None, description="false disables it; true enables it again (and clears why)."
    )


class WebhookPublic(BaseModel):
    id: uuid.UUID
    url: str
    events: list[EventType] | None
    description: str | None
    include_phone_numbers: bool
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why it is disabled: by the user, or after a day of failed deliveries."
    )
    failing_since: datetime | None = Field(
        description="When its deliveries began failing without a success since; null if none."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret before the last rotation still signs too."
    )
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(
        description="The signing secret (`whsec_` + base64, Standard Webhooks). Shown only "
        "now: at creation and at rotation."
    )


class DeliveryPublic(BaseModel):
    id: uuid.UUID
    event_id: str = Field(description="The `webhook-id` header: the same on every retry.")
    event_type: EventType
    call_session_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
