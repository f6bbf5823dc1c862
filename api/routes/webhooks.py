"""The customer's webhook endpoints, their delivery log, and redelivery (README "Webhooks")."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import AUTH_ERRORS, CurrentUser, EngineDep, Responses, SettingsDep, TemporalDep
from api.schemas import Detail, Page
from api.webhook_schemas import (
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
    WebhookUpdate,
    WebhookWithSecret,
)
from contracts.webhooks import DeliveryState, EventType
from services.webhooks import UnsafeUrl, WebhookDispatcher, WebhookService
from store import webhooks as store
from store.models import WebhookDelivery, WebhookEndpoint

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=AUTH_ERRORS)

NOT_FOUND: Responses = {
    404: {"model": Detail, "description": "No such endpoint (or not this user's)"}
}
REFUSED: Responses = {
    422: {"model": Detail, "description": "Unknown field or event type, unsafe URL"}
}
# A secret in the answer: no cache may keep it.
NO_STORE = {"Cache-Control": "no-store"}


def _service(settings: SettingsDep, engine: EngineDep, temporal: TemporalDep) -> WebhookService:
    return WebhookService(settings, engine, WebhookDispatcher(temporal.client, engine, settings))


def _public(row: WebhookEndpoint) -> WebhookPublic:
    events = [EventType(e) for e in json.loads(row.events)] if row.events is not None else None
    return WebhookPublic(
        id=row.id,
        url=row.url,
        events=events,
        description=row.description,
        include_phone_numbers=row.include_phone_numbers,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        failing_since=row.failing_since,
        previous_secret_expires_at=row.previous_secret_expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _with_secret(row: WebhookEndpoint, secret: str) -> WebhookWithSecret:
    return WebhookWithSecret(**_public(row).model_dump(), secret=secret)


def _delivery(row: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic(
        id=row.id,
        event_id=row.event_id,
        event_type=EventType(row.event_type),
        call_session_id=row.call_session_id,
        campaign_id=row.campaign_id,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _events(events: list[EventType] | None) -> list[str] | None:
    # Each type once, in the vocabulary's order.
    return None if events is None else [e.value for e in EventType if e in set(events)]


@router.post("", response_model=WebhookWithSecret, status_code=201, responses=REFUSED)
async def create_webhook(
    body: WebhookCreate,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
    response: Response,
) -> WebhookWithSecret:
    """Add an endpoint; its signing secret is in this answer only."""
    service = _service(settings, engine, temporal)
    try:
        created = await service.create(
            user_id=user.user_id,
            url=body.url,
            events=_events(body.events),
            description=body.description,
            include_phone_numbers=body.include_phone_numbers,
        )
    except UnsafeUrl as exc:
        raise HTTPException(422, f"url: {exc}") from exc
    response.headers.update(NO_STORE)
    return _with_secret(created.endpoint, created.secret)


@router.get("", response_model=list[WebhookPublic])
def list_webhooks(user: CurrentUser, engine: EngineDep) -> list[WebhookPublic]:
    """This user's endpoints (never their secrets)."""
    return [_public(r) for r in store.list_endpoints(engine, user.user_id)]


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=NOT_FOUND)
def get_webhook(webhook_id: uuid.UUID, user: CurrentUser, engine: EngineDep) -> WebhookPublic:
    """One endpoint, with why it is disabled if it is."""
    try:
        return _public(store.get_endpoint(engine, webhook_id, user.user_id))
    except store.EndpointNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses={**NOT_FOUND, **REFUSED})
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> WebhookPublic:
    """Change the URL, the events, the description, the phone numbers' opt-in; enable or
    disable it."""
    changes: dict[str, object] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name != "events" and name != "description":
            raise HTTPException(422, f"{name}: may not be null")
        changes[name] = _events(value) if name == "events" else value
    try:
        row = await _service(settings, engine, temporal).update(webhook_id, user.user_id, changes)
    except store.EndpointNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except UnsafeUrl as exc:
        raise HTTPException(422, f"url: {exc}") from exc
    return _public(row)


@router.delete("/{webhook_id}", status_code=204, responses=NOT_FOUND)
def delete_webhook(webhook_id: uuid.UUID, user: CurrentUser, engine: EngineDep) -> Response:
    """Remove an endpoint and its delivery log; nothing more is sent to it."""
    try:
        store.delete_endpoint(engine, webhook_id, user.user_id)
    except store.EndpointNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, responses=NOT_FOUND)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
    response: Response,
) -> WebhookWithSecret:
    """A new signing secret, in this answer only; the previous one keeps signing beside it
    for the grace period (DIALER_WEBHOOK_ROTATION_GRACE_SECONDS)."""
    try:
        rotated = await _service(settings, engine, temporal).rotate(webhook_id, user.user_id)
    except store.EndpointNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    response.headers.update(NO_STORE)
    return _with_secret(rotated.endpoint, rotated.secret)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryPublic], responses=NOT_FOUND)
def list_deliveries(
    webhook_id: uuid.UUID,
    user: CurrentUser,
    engine: EngineDep,
    state: DeliveryState | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DeliveryPublic]:
    """The endpoint's deliveries, newest first: event, attempts, last status code, next
    attempt, state."""
    try:
        rows, total = store.deliveries_page(
            engine, webhook_id, user.user_id, page=page, page_size=page_size, state=state
        )
    except store.EndpointNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return Page(items=[_delivery(r) for r in rows], total=total, page=page, page_size=page_size)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryPublic,
    status_code=202,
    responses={404: {"model": Detail, "description": "No such endpoint or delivery"}},
)
async def redeliver(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> DeliveryPublic:
    """Send the event again, with the same webhook-id and body."""
    try:
        row = await _service(settings, engine, temporal).redeliver(
            webhook_id, delivery_id, user.user_id
        )
    except (store.EndpointNotFound, store.DeliveryNotFound) as exc:
        raise HTTPException(404, str(exc)) from exc
    return _delivery(row)
