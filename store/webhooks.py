"""The customer's webhooks in the database: endpoints, and the delivery outbox.

An event is written here in the transaction that records the status change it reports
(store/calls.py, store/lifecycle.py, store/campaigns.py, store/campaign_ticks.py call
`add_call_events` / `add_campaign_event` with their session), one row per subscribed endpoint,
keyed by (event id, endpoint): a retried writer lands once. The row holds the exact body that
is signed and sent, so every attempt sends the same bytes under the same `webhook-id`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from contracts.webhooks import (
    DeliveryState,
    EventType,
    ListPendingResult,
    PendingDelivery,
    PendingLane,
    call_stream,
    campaign_stream,
)
from core.phone import mask
from store.db import insert_ignoring_duplicates, session_scope, table_of
from store.models import CallSession, Campaign, WebhookDelivery, WebhookEndpoint, utcnow

# Names Dialer's own event ids derive from (uuid5), so a retried writer derives the same id.
_EVENT_NAMESPACE = uuid.UUID("8a4f1d3e-52b7-4c36-9a0e-1f2b3c4d5e6f")


class EndpointNotFound(LookupError):
    """No such endpoint for this user (another user's id reads the same)."""


class DeliveryNotFound(LookupError):
    pass


def event_id(*parts: object) -> str:
    """A stable `webhook-id`: `evt_` + 32 hex digits, derived from what names the event."""
    return "evt_" + uuid.uuid5(_EVENT_NAMESPACE, ":".join(str(p) for p in parts)).hex


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    if endpoint.events is None:
        return True
    types: list[str] = json.loads(endpoint.events)
    return event_type in types


# --- endpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSpec:
    user_id: uuid.UUID
    url: str
    events: list[str] | None
    description: str | None
    include_phone_numbers: bool
    sealed_secret: str


def create_endpoint(engine: Engine, spec: EndpointSpec) -> WebhookEndpoint:
    row = WebhookEndpoint(
        user_id=spec.user_id,
        url=spec.url,
        events=json.dumps(spec.events) if spec.events is not None else None,
        description=spec.description,
        include_phone_numbers=spec.include_phone_numbers,
        secret=spec.sealed_secret,
    )
    with session_scope(engine) as session:
        session.add(row)
    return row


def list_endpoints(engine: Engine, user_id: uuid.UUID) -> list[WebhookEndpoint]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.user_id == user_id)
                .order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
            ).all()
        )


def _owned(session: Session, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> WebhookEndpoint:
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.user_id != user_id:
        raise EndpointNotFound("webhook endpoint not found")
    return row


def get_endpoint(engine: Engine, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> WebhookEndpoint:
    with Session(engine) as session:
        return _owned(session, endpoint_id, user_id)


def update_endpoint(
    engine: Engine, endpoint_id: uuid.UUID, user_id: uuid.UUID, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Apply the given fields (url, events, description, enabled, include_phone_numbers).
    Enabling clears the reason it was disabled and its failure streak."""
    with session_scope(engine) as session:
        row = _owned(session, endpoint_id, user_id)
        for name, value in changes.items():
            if name == "events":
                row.events = json.dumps(value) if value is not None else None
            elif name == "enabled":
                if value and not row.enabled:
                    row.disabled_reason = None
                    row.failing_since = None
                elif not value and row.enabled:
                    row.disabled_reason = "disabled by the user"
                row.enabled = bool(value)
            else:
                setattr(row, name, value)
        row.updated_at = utcnow()
        session.add(row)
    return row


def delete_endpoint(engine: Engine, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """The endpoint and its delivery log; a delivery in flight finds it gone and stops."""
    with session_scope(engine) as session:
        row = _owned(session, endpoint_id, user_id)
        session.execute(
            table_of(WebhookDelivery)
            .delete()
            .where(col(WebhookDelivery.endpoint_id) == endpoint_id)
        )
        session.delete(row)


def rotate_secret(
    engine: Engine,
    endpoint_id: uuid.UUID,
    user_id: uuid.UUID,
    sealed_secret: str,
    grace: timedelta,
) -> WebhookEndpoint:
    """The new secret signs from now on; the current one signs beside it for `grace`."""
    now = utcnow()
    with session_scope(engine) as session:
        row = _owned(session, endpoint_id, user_id)
        if grace > timedelta(0):
            row.previous_secret = row.secret
            row.previous_secret_expires_at = now + grace
        else:
            row.previous_secret = None
            row.previous_secret_expires_at = None
        row.secret = sealed_secret
        row.updated_at = now
        session.add(row)
    return row


# --- writing events ----------------------------------------------------------------------------


# session.info key: delivery rows this session wrote (a step's session_scope is its own).
_DELIVERIES_WRITTEN = "dialer.webhook_deliveries_written"


def deliveries_written(session: Session) -> int:
    """Delivery rows written through this session (duplicates a retry absorbed included):
    none, and the step has nothing to hand to a delivery workflow."""
    written: int = session.info.get(_DELIVERIES_WRITTEN, 0)
    return written


# session.info key: the enabled endpoints of each user, as read once in the current transaction.
_ENDPOINTS_READ = "dialer.webhook_endpoints"


def _read_enabled(session: Session, user_id: uuid.UUID) -> list[WebhookEndpoint]:
    return list(
        session.exec(
            select(WebhookEndpoint).where(
                WebhookEndpoint.user_id == user_id, col(WebhookEndpoint.enabled)
            )
        ).all()
    )


def _enabled_endpoints(session: Session, user_id: uuid.UUID) -> list[WebhookEndpoint]:
    """The user's enabled endpoints, read once per transaction: a dial's outcome and the
    statuses that came with it are up to four events of one user in one transaction, and
    each read would find the same rows. A new transaction reads them again."""
    transaction = session.get_transaction()
    if transaction is None:  # nothing begun yet: this read begins it
        return _read_enabled(session, user_id)
    read = session.info.get(_ENDPOINTS_READ)
    if read is None or read[0] is not transaction:
        read = (transaction, {})
        session.info[_ENDPOINTS_READ] = read
    by_user: dict[uuid.UUID, list[WebhookEndpoint]] = read[1]
    if user_id not in by_user:
        by_user[user_id] = _read_enabled(session, user_id)
    return by_user[user_id]


def _endpoints_for(session: Session, user_id: uuid.UUID, event_type: str) -> list[WebhookEndpoint]:
    return [r for r in _enabled_endpoints(session, user_id) if subscribed(r, event_type)]


def _next_sequence(session: Session, stream: str) -> int:
    last = session.exec(
        select(func.max(WebhookDelivery.sequence)).where(WebhookDelivery.stream == stream)
    ).one()
    return (last or 0) + 1


def _body(event_type: str, at: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": at.isoformat(), "data": data}, separators=(",", ":")
    )


def _insert(
    session: Session,
    *,
    user_id: uuid.UUID,
    stream: str,
    event_type: str,
    evt_id: str,
    rows: list[dict[str, Any]],
) -> None:
    if not rows:
        return
    sequence = _next_sequence(session, stream)
    session.info[_DELIVERIES_WRITTEN] = deliveries_written(session) + len(rows)
    now = utcnow()
    for row in rows:
        row.update(
            id=uuid.uuid4(),
            user_id=user_id,
            event_id=evt_id,
            event_type=event_type,
            stream=stream,
            sequence=sequence,
            state=DeliveryState.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
    session.execute(
        insert_ignoring_duplicates(session, WebhookDelivery, rows, ["event_id", "endpoint_id"])
    )


def call_data(row: CallSession, endpoint: WebhookEndpoint, extra: dict[str, Any]) -> dict[str, Any]:
    """The call's ids, numbers (masked unless the endpoint opted in), status and metadata."""

    def number(value: str | None) -> str | None:
        if value is None:
            return None
        return value if endpoint.include_phone_numbers else mask(value)

    data: dict[str, Any] = {
        "call_session_id": str(row.id),
        "request_id": str(row.request_id),
        "campaign_id": str(row.campaign_id) if row.campaign_id else None,
        "status": row.status,
        "call_status": row.call_status,
        "telephony_leg_id": row.telephony_leg_id,
        "to_number": number(row.target_number),
        "from_number": number(row.from_number),
        "metadata": json.loads(row.call_metadata) if row.call_metadata else {},
    }
    data.update(extra)
    return data


def add_call_event(
    session: Session,
    row: CallSession,
    event_type: EventType,
    extra: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """One event of a call, for each of its user's endpoints subscribed to it, in the
    caller's transaction. A call has each event type once, so its id derives from both."""
    endpoints = _endpoints_for(session, row.user_id, event_type)
    if not endpoints:
        return
    session.flush()  # the caller's changes to the session row are in the payload
    at = at or utcnow()
    rows = [
        {
            "endpoint_id": e.id,
            "call_session_id": row.id,
            "campaign_id": row.campaign_id,
            "payload": _body(event_type, at, call_data(row, e, extra or {})),
        }
        for e in endpoints
    ]
    _insert(
        session,
        user_id=row.user_id,
        stream=call_stream(row.id),
        event_type=event_type,
        evt_id=event_id(row.id, event_type),
        rows=rows,
    )


def add_campaign_event(
    session: Session,
    campaign: Campaign,
    event_type: EventType,
    counts: dict[str, int],
    *,
    transition: str | None = None,
) -> None:
    """One event of a campaign. Started, completed and canceled happen once per campaign;
    pause and resume may repeat, so `transition` (unique per change) names each one."""
    endpoints = _endpoints_for(session, campaign.user_id, event_type)
    if not endpoints:
        return
    now = utcnow()
    data = {
        "campaign_id": str(campaign.id),
        "name": campaign.name,
        "state": campaign.state,
        "total_recipients": campaign.total_recipients,
        "counts": counts,
        "started_at": campaign.started_at.isoformat() if campaign.started_at else None,
        "finished_at": campaign.finished_at.isoformat() if campaign.finished_at else None,
    }
    body = _body(event_type, now, data)
    rows = [{"endpoint_id": e.id, "campaign_id": campaign.id, "payload": body} for e in endpoints]
    _insert(
        session,
        user_id=campaign.user_id,
        stream=campaign_stream(campaign.id),
        event_type=event_type,
        evt_id=event_id(campaign.id, event_type, transition or ""),
        rows=rows,
    )


def delete_campaign_events(session: Session, campaign_id: uuid.UUID) -> None:
    """A campaign's undelivered events, when its creation is undone."""
    session.execute(
        table_of(WebhookDelivery)
        .delete()
        .where(col(WebhookDelivery.stream) == campaign_stream(campaign_id))
    )


# --- delivering --------------------------------------------------------------------------------


def pending_streams(engine: Engine, streams: Sequence[str]) -> list[tuple[str, uuid.UUID]]:
    """(stream, user id) of the given streams that have pending deliveries."""
    if not streams:
        return []
    with Session(engine) as session:
        found = session.exec(
            select(WebhookDelivery.stream, WebhookDelivery.user_id)
            .where(
                col(WebhookDelivery.stream).in_(list(streams)),
                WebhookDelivery.state == DeliveryState.PENDING,
            )
            .distinct()
        ).all()
    return [(s, u) for s, u in found]


def stale_streams(engine: Engine, idle: timedelta, limit: int = 500) -> list[tuple[str, uuid.UUID]]:
    """Streams with pending deliveries that nothing has touched for `idle` and that wait for no
    retry: their workflow was never started (Temporal was unreachable when the event was
    recorded) or is gone. The worker's sweeper hands them to a workflow again."""
    cutoff = utcnow() - idle
    with Session(engine) as session:
        found = session.exec(
            select(WebhookDelivery.stream, WebhookDelivery.user_id)
            .where(WebhookDelivery.state == DeliveryState.PENDING)
            .group_by(col(WebhookDelivery.stream), col(WebhookDelivery.user_id))
            .having(func.max(WebhookDelivery.updated_at) < cutoff)
            .having(
                (func.max(WebhookDelivery.next_attempt_at).is_(None))
                | (func.max(WebhookDelivery.next_attempt_at) < cutoff)
            )
            .limit(limit)
        ).all()
    return [(s, u) for s, u in found]


def list_pending(engine: Engine, stream: str) -> ListPendingResult:
    """The stream's pending deliveries, one lane per endpoint, each in sequence order."""
    with Session(engine) as session:
        rows = session.exec(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.stream == stream,
                WebhookDelivery.state == DeliveryState.PENDING,
            )
            .order_by(
                col(WebhookDelivery.endpoint_id),
                col(WebhookDelivery.sequence),
                col(WebhookDelivery.created_at),
            )
        ).all()
    lanes: dict[uuid.UUID, PendingLane] = {}
    for row in rows:
        lane = lanes.setdefault(row.endpoint_id, PendingLane(endpoint_id=str(row.endpoint_id)))
        lane.deliveries.append(PendingDelivery(str(row.id), row.event_type))
    return ListPendingResult(lanes=list(lanes.values()))


@dataclass(frozen=True)
class Attempt:
    """What a delivery activity needs: the row's body and id, the endpoint's URL and
    (sealed) secrets."""

    delivery: WebhookDelivery
    endpoint: WebhookEndpoint | None  # None: deleted


def load_attempt(engine: Engine, delivery_id: uuid.UUID) -> Attempt | None:
    with Session(engine) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return None
        return Attempt(delivery, session.get(WebhookEndpoint, delivery.endpoint_id))


def record_success(engine: Engine, delivery_id: uuid.UUID, status_code: int) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return
        row.attempts += 1
        row.state = DeliveryState.DELIVERED
        row.last_status_code = status_code
        row.last_error = None
        row.next_attempt_at = None
        row.updated_at = row.finished_at = now
        session.add(row)
        session.execute(
            update(WebhookEndpoint)
            .where(col(WebhookEndpoint.id) == row.endpoint_id)
            .values(failing_since=None)
        )


def record_failure(
    engine: Engine,
    delivery_id: uuid.UUID,
    *,
    status_code: int | None,
    error: str,
    next_attempt_at: datetime | None,
    disable_after: timedelta,
) -> str | None:
    """Count a failed attempt, start the endpoint's failure streak if none runs, and disable
    the endpoint when the streak is older than `disable_after`. Returns the reason it was
    disabled (the delivery is then failed), else None (it will be tried again)."""
    now = utcnow()
    with session_scope(engine) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return None
        endpoint = session.get(WebhookEndpoint, row.endpoint_id, with_for_update=True)
        row.attempts += 1
        row.last_status_code = status_code
        row.last_error = error[:1000]
        row.next_attempt_at = next_attempt_at
        row.updated_at = now
        disabled: str | None = None
        if endpoint is not None:
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            elif endpoint.enabled and now - endpoint.failing_since >= disable_after:
                disabled = (
                    f"every delivery failed for {_duration(disable_after)} (since "
                    f"{endpoint.failing_since.isoformat()}); the last: {error[:300]}"
                )
                endpoint.enabled = False
                endpoint.disabled_reason = disabled
                endpoint.updated_at = now
            session.add(endpoint)
        if disabled is not None:
            row.state = DeliveryState.FAILED
            # The log says why this delivery stopped (the endpoint says why it was disabled).
            row.last_error = f"{error[:900]}; given up: the endpoint was disabled"
            row.next_attempt_at = None
            row.finished_at = now
        session.add(row)
        return disabled


def _duration(span: timedelta) -> str:
    """`24 h`, `90 min`, `2 s`: the streak's length as a person reads it."""
    seconds = span.total_seconds()
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def mark_failed(engine: Engine, delivery_id: uuid.UUID, reason: str) -> bool:
    """Give a pending delivery up; False if it was not pending."""
    now = utcnow()
    with session_scope(engine) as session:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id) == delivery_id,
                col(WebhookDelivery.state) == DeliveryState.PENDING,
            )
            .values(
                state=DeliveryState.FAILED,
                last_error=reason[:1000],
                next_attempt_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        return bool(getattr(result, "rowcount", 0))


# --- the delivery log --------------------------------------------------------------------------


def deliveries_page(
    engine: Engine,
    endpoint_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    page: int,
    page_size: int,
    state: str | None = None,
) -> tuple[list[WebhookDelivery], int]:
    """The endpoint's deliveries, newest first."""
    with Session(engine) as session:
        _owned(session, endpoint_id, user_id)
        where = [WebhookDelivery.endpoint_id == endpoint_id]
        if state is not None:
            where.append(WebhookDelivery.state == state)
        total = session.exec(select(func.count()).select_from(WebhookDelivery).where(*where)).one()
        rows = session.exec(
            select(WebhookDelivery)
            .where(*where)
            .order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.sequence).desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).all()
    return list(rows), total


def redeliver(
    engine: Engine, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, user_id: uuid.UUID
) -> WebhookDelivery:
    """Send the event again (same id, same body): the row is pending again. A delivery still
    pending stays as it is (its workflow is on it)."""
    with session_scope(engine) as session:
        _owned(session, endpoint_id, user_id)
        row = session.get(WebhookDelivery, delivery_id)
        if row is None or row.endpoint_id != endpoint_id:
            raise DeliveryNotFound("delivery not found")
        if row.state != DeliveryState.PENDING:
            row.state = DeliveryState.PENDING
            row.next_attempt_at = None
            row.finished_at = None
            row.updated_at = utcnow()
            session.add(row)
    return row
