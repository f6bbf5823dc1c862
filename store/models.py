"""SQLModel tables. Alembic (store/migrations) is the only way the schema changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from contracts.campaigns import CampaignState, RecipientState
from store.db import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Column[datetime]:
    """A timestamp column: stored as UTC, always read back aware (store.db.UTCDateTime)."""
    return Column(UTCDateTime(), nullable=nullable, index=index)


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # Per-account limits set by an operator (`dialer users limits`); None: no limit. Calls
    # dialing, ringing or in progress at once; dials per second; the account's Task Queue
    # Fairness weight on the dial queue (None: the server's 1.0).
    max_concurrent_calls: int | None = None
    max_calls_per_second: float | None = None
    fairness_weight: float | None = None


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    # A short public prefix identifies a key in listings; the secret exists only as a hash.
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=128, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class PhoneNumber(SQLModel, table=True):
    """A caller line owned by a user."""

    __tablename__ = "phone_numbers"
    __table_args__ = (
        UniqueConstraint("user_id", "number", name="uq_phone_numbers_user_number"),
        # A number is one account's line: `owner_number` is the number, unique across
        # accounts; NULL only on lines migration 0007 found held by a second account
        # (deactivated, never dialed: README "A caller line belongs to one account").
        UniqueConstraint("owner_number", name="uq_phone_numbers_owner_number"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    number: str = Field(max_length=32)
    owner_number: str | None = Field(default=None, max_length=32)
    provider: str = Field(default="simulated", max_length=32)
    label: str | None = Field(default=None, max_length=200)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # The carrier that confirmed the number as its account's own (an incoming number or a
    # verified caller id at Twilio) and when; NULL: never confirmed. A carrier that keeps an
    # account of numbers dials only a line it confirmed itself (activities/calls.py).
    confirmed_by: str | None = Field(default=None, max_length=32)
    confirmed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=200)
    # ws:// or wss://, may hold {call_session_id} and {request_id} (contracts/context.py).
    media_stream_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Flow(SQLModel, table=True):
    """A user's conversation workflow (the contract's `workflow_id`), not a Temporal workflow."""

    __tablename__ = "flows"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=200)
    media_stream_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LineMapping(SQLModel, table=True):
    """Maps exactly one agent or one flow to a line; each agent or flow has at most one line."""

    __tablename__ = "line_mappings"
    __table_args__ = (
        CheckConstraint(
            "(agent_id IS NULL) <> (flow_id IS NULL)", name="ck_line_mappings_agent_xor_flow"
        ),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    phone_number_id: uuid.UUID = Field(foreign_key="phone_numbers.id", index=True)
    agent_id: uuid.UUID | None = Field(default=None, foreign_key="agents.id", unique=True)
    flow_id: uuid.UUID | None = Field(default=None, foreign_key="flows.id", unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class CallSession(SQLModel, table=True):
    __tablename__ = "call_sessions"
    __table_args__ = (
        Index("ix_call_sessions_user_created", "user_id", "created_at"),
        Index("ix_call_sessions_user_external_id", "user_id", "external_id"),
    )
    id: uuid.UUID = Field(primary_key=True)
    request_id: uuid.UUID = Field(unique=True)
    user_id: uuid.UUID = Field(foreign_key="users.id")
    agent_id: uuid.UUID | None = None
    flow_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    campaign_id: uuid.UUID | None = Field(default=None, index=True)
    requested_number: str = Field(max_length=64)
    target_number: str | None = Field(default=None, max_length=32)
    from_number: str | None = Field(default=None, max_length=32)
    provider: str | None = Field(default=None, max_length=32)
    telephony_leg_id: str | None = Field(default=None, max_length=64)
    # accepted -> dialing -> success | failed   (success and failed are terminal)
    status: str = Field(max_length=16, index=True)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    provider_error_code: str | None = Field(default=None, max_length=32)
    attempts: int = 0
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str = Field(max_length=64)
    # The call's context as JSON objects (contracts/context.py): the agent's variables, and the
    # client's metadata (`metadata` is SQLModel's own attribute, hence the column's name).
    variables: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    call_metadata: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    dialed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # The call's lifecycle after the dial (contracts.lifecycle): only ever moves forward.
    call_status: str | None = Field(default=None, max_length=16)
    answered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    ended_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    duration_seconds: int | None = None
    # Call control (contracts.calls.CallOptions, EndedReason): when it may be dialed, how
    # long it may last, what it does about machines; who answered and why it ended.
    scheduled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    latest_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    max_duration_seconds: int | None = None
    machine_detection: str | None = Field(default=None, max_length=32)
    answered_by: str | None = Field(default=None, max_length=32)
    ended_reason: str | None = Field(default=None, max_length=32)
    # metadata's external_id (a campaign call: its recipient's), so it can be searched.
    external_id: str | None = Field(default=None, max_length=200)


class CallEvent(SQLModel, table=True):
    """Append-only timeline of a session. `key` makes a retried write land once."""

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("session_id", "key", name="uq_call_events_session_key"),)
    id: int | None = Field(default=None, primary_key=True)
    session_id: uuid.UUID = Field(foreign_key="call_sessions.id", index=True)
    key: str = Field(max_length=64)
    type: str = Field(max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SuppressedNumber(SQLModel, table=True):
    """The user's do-not-call list."""

    __tablename__ = "suppressed_numbers"
    __table_args__ = (UniqueConstraint("user_id", "number", name="uq_suppressed_user_number"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", index=True)
    number: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class SimulatedCall(SQLModel, table=True):
    """The simulated carrier's ledger: every call it placed, durable like a real carrier's."""

    __tablename__ = "simulated_calls"
    sid: str = Field(primary_key=True, max_length=64)
    session_id: uuid.UUID = Field(index=True)
    attempt_tag: str = Field(max_length=80, unique=True)
    to_number: str = Field(max_length=32)
    from_number: str = Field(max_length=32)
    status: str = Field(default="queued", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # Set when the call ended otherwise than its timeline says (its agent hung up first, or
    # its media stream could not be reached): the end is then the carrier's record, not a
    # function of the placing time.
    ended_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    duration_seconds: int | None = None


class Campaign(SQLModel, table=True):
    """A batch of calls. Its options are columns, so the workflow re-reads them from here and
    its history holds only the campaign id."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(
            "(agent_id IS NULL) <> (flow_id IS NULL)", name="ck_campaigns_agent_xor_flow"
        ),
        Index("ix_campaigns_user_created", "user_id", "created_at"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id")
    name: str = Field(max_length=200)
    agent_id: uuid.UUID | None = None
    flow_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    calls_per_second: float = 1.0
    max_concurrency: int = 10
    # Calling window: local times "HH:MM", ISO weekdays (1 = Monday) as "1,2,3,4,5".
    window_start: str | None = Field(default=None, max_length=5)
    window_end: str | None = Field(default=None, max_length=5)
    window_days: str | None = Field(default=None, max_length=20)
    default_timezone: str = Field(default="UTC", max_length=64)
    start_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # Redial: outcomes as "busy,no_answer"; max_attempts counts the first call too.
    redial_outcomes: str | None = Field(default=None, max_length=40)
    redial_max_attempts: int = 1
    redial_delay_seconds: int = 0
    # Variables every call of the campaign sends its agent; a recipient's own win (JSON).
    variables: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Call control for every call of the campaign (contracts.calls.CallOptions).
    max_duration_seconds: int | None = None
    machine_detection: str | None = Field(default=None, max_length=32)
    voicemail_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # scheduled -> running <-> paused -> completed | canceled
    state: str = Field(default=CampaignState.SCHEDULED, max_length=16)
    total_recipients: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    started_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class CampaignRecipient(SQLModel, table=True):
    """One row of a campaign. `dedupe_key` is the number for the first row with that number and
    NULL for skipped duplicates, so the unique index allows one callable row per number."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "row_number", name="uq_campaign_recipients_row"),
        UniqueConstraint("campaign_id", "dedupe_key", name="uq_campaign_recipients_number"),
        Index("ix_campaign_recipients_campaign_state", "campaign_id", "state", "row_number"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    campaign_id: uuid.UUID = Field(foreign_key="campaigns.id")
    row_number: int
    phone_number: str = Field(max_length=64)  # E.164 when valid, else as submitted
    dedupe_key: str | None = Field(default=None, max_length=32)
    timezone: str | None = Field(default=None, max_length=64)  # None: the campaign default
    variables: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON
    external_id: str | None = Field(default=None, max_length=200)
    # not_started, queued, calling, completed, failed, busy, no_answer, skipped, canceled
    state: str = Field(default=RecipientState.NOT_STARTED, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    failure_code: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    call_session_id: uuid.UUID | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WebhookEndpoint(SQLModel, table=True):
    """Where a user's events go. The signing secret is stored sealed (core/security.py), never
    in the clear; during a rotation the previous one signs too until it expires."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_user_created", "user_id", "created_at"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id")
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    # A JSON list of event types; NULL means every type.
    events: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    include_phone_numbers: bool = False
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_expires_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # Set by the first failed attempt after a success, cleared by the next success.
    failing_since: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one row per event and endpoint, written in the transaction that records
    the status change. `event_id` is the `webhook-id` a receiver sees; `stream` is what orders
    deliveries ("call:<id>" or "campaign:<id>"), `sequence` the event's place in it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_stream", "stream", "endpoint_id", "sequence"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    endpoint_id: uuid.UUID = Field(foreign_key="webhook_endpoints.id")
    user_id: uuid.UUID = Field(foreign_key="users.id")
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=32)
    stream: str = Field(max_length=80)
    sequence: int
    call_session_id: uuid.UUID | None = None
    campaign_id: uuid.UUID | None = None
    # The exact body that is signed and sent, the same on every attempt.
    payload: str = Field(sa_column=Column(Text, nullable=False))
    # pending -> delivered | failed (a redelivery sets it pending again)
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
