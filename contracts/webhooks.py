"""The customer's webhooks: event types, delivery states, and the inputs and results of the
delivery workflow and its activities (services/webhooks.py starts it, workflows/webhooks.py
runs it, activities/webhooks.py delivers). Plain data, the payloads of history: fields are
only ever added."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class EventType(StrEnum):
    """What a customer can subscribe to. Values are on the wire: they never change."""

    CALL_DIALED = "call.dialed"  # the carrier accepted the dial (leg id known)
    CALL_RINGING = "call.ringing"
    CALL_ANSWERED = "call.answered"
    CALL_ENDED = "call.ended"  # a final call_status, with the duration and answered_by
    CALL_FAILED = "call.failed"  # initiation failed (failure_code): nothing was dialed
    CAMPAIGN_STARTED = "campaign.started"
    CAMPAIGN_PAUSED = "campaign.paused"
    CAMPAIGN_RESUMED = "campaign.resumed"
    CAMPAIGN_COMPLETED = "campaign.completed"
    CAMPAIGN_CANCELED = "campaign.canceled"


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its turn, being attempted, or between attempts
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # given up (24 h by default), refused, or its endpoint was disabled


class DeliveryOutcome(StrEnum):
    """What one delivery activity made of its delivery (the metric's `outcome` label too)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # a non-2xx answer, a timeout, a refused connection: tried again
    FAILED = "failed"  # given up
    REFUSED = "refused"  # the URL's address is not allowed (production)
    DISABLED = "disabled"  # its endpoint is disabled or deleted: marked failed, not sent
    SKIPPED = "skipped"  # no longer pending (delivered already, or marked failed)


# Task queue of the delivery workflows and activities, unless DIALER_WEBHOOK_TASK_QUEUE says
# otherwise: a worker of their own, so a slow receiver never holds a call's workflow task.
WEBHOOK_TASK_QUEUE = "dialer-webhooks"


def call_stream(call_session_id: uuid.UUID | str) -> str:
    """The ordering unit of a call's events: delivered in order, per endpoint."""
    return f"call:{call_session_id}"


def campaign_stream(campaign_id: uuid.UUID | str) -> str:
    return f"campaign:{campaign_id}"


def delivery_workflow_id(stream: str) -> str:
    """One delivery workflow per stream at a time: `webhooks-call-<id>`."""
    return "webhooks-" + stream.replace(":", "-", 1)


@dataclass
class DeliveryPolicy:
    """From settings, fixed when the workflow starts (services/webhooks.py)."""

    task_queue: str = WEBHOOK_TASK_QUEUE
    attempt_timeout_seconds: float = 10.0
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    give_up_seconds: float = 86400.0


@dataclass
class DeliverStreamInput:
    stream: str
    user_id: str  # the fairness key of its activities: one user's backlog waits behind itself
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)


@dataclass
class DeliverStreamResult:
    delivered: int = 0
    failed: int = 0


@dataclass
class KickSignal:
    """New events (or a redelivery) on the stream: look again before ending."""


@dataclass
class ListPendingInput:
    stream: str


@dataclass
class PendingDelivery:
    delivery_id: str
    event_type: str


@dataclass
class PendingLane:
    """One endpoint's pending deliveries of the stream, in the order they must arrive."""

    endpoint_id: str
    deliveries: list[PendingDelivery] = field(default_factory=list)


@dataclass
class ListPendingResult:
    lanes: list[PendingLane] = field(default_factory=list)


@dataclass
class DeliverInput:
    delivery_id: str


@dataclass
class DeliverResult:
    outcome: DeliveryOutcome
    status_code: int | None = None


@dataclass
class MarkFailedInput:
    delivery_id: str
    reason: str
