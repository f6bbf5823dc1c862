"""create_call and call-analytics."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from sqlalchemy import ColumnElement, func
from sqlmodel import col, select

from api.deps import AUTH_ERRORS, CurrentUser, EngineDep, SessionDep, SettingsDep, TemporalDep
from api.schemas import (
    CallControlResponse,
    CallEventPublic,
    CallSessionDetail,
    CallSessionPublic,
    CreateCallBody,
    CreateCallQuery,
    CreateCallResponse,
    Detail,
    Page,
    UTCDatetime,
)
from contracts.calls import (
    CallOptions,
    ControlAction,
    EndedReason,
    MachineDetection,
    SessionStatus,
    Stage,
)
from contracts.lifecycle import CallStatus
from core.config import Settings
from infra.metrics import CREATE_CALLS
from services.call_control import CallController, CallNotFound, CallOver
from services.calls import CallRequest, CallStarter, IdempotencyConflict, default_options
from services.temporal import TemporalUnavailable
from store.models import CallEvent, CallSession

router = APIRouter()


@router.post(
    "/api/call/create_call",
    response_model=CreateCallResponse,
    responses={
        **AUTH_ERRORS,
        409: {"model": Detail, "description": "Idempotency-Key reused with other parameters"},
    },
    tags=["calls"],
)
async def create_call(
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
    # One model for the query, so an unknown parameter is a 422 that names it.
    query: Annotated[CreateCallQuery, Query()],
    body: CreateCallBody | None = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> CreateCallResponse:
    """Initiate an outbound call; answers with the ids at once (HTTP 200 even when failed).
    The optional JSON body carries the call's context: `variables` for the agent, `metadata`
    for the client."""
    context = body or CreateCallBody()
    options = _options(context, query.wait, settings)
    starter = CallStarter(settings, engine, temporal)
    try:
        answer = await starter.create(
            CallRequest(
                user_id=user.user_id,
                phone_number=query.phone_number,
                agent_id=query.agent_id,
                flow_id=query.workflow_id,
                phone_number_id=query.phone_number_id,
                wait=query.wait,
                idempotency_key=idempotency_key,
                variables=dict(context.variables),
                metadata=dict(context.metadata),
                options=options,
            )
        )
    except IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    CREATE_CALLS.labels(answer.status, answer.failure_code or "").inc()
    return CreateCallResponse(**dataclasses.asdict(answer))


def _options(body: CreateCallBody, wait: Stage, settings: Settings) -> CallOptions | None:
    """The call-control options of a create_call body (None: it asked for none), checked
    against now: 422 for a schedule in the past beyond the skew or beyond the horizon, a
    latest_at already passed, or wait=dialed on a call that is to wait."""
    asked = (
        body.scheduled_at,
        body.latest_at,
        body.max_duration_seconds,
        body.machine_detection,
        body.voicemail_message,
    )
    if all(value is None for value in asked):
        return None
    now = datetime.now(UTC)
    if body.scheduled_at is not None:
        if body.scheduled_at < now - timedelta(seconds=settings.schedule_skew_seconds):
            raise HTTPException(422, "scheduled_at is in the past")
        if body.scheduled_at > now + timedelta(days=settings.schedule_horizon_days):
            raise HTTPException(
                422, f"scheduled_at is more than {settings.schedule_horizon_days:g} days ahead"
            )
        if wait == Stage.DIALED and body.scheduled_at > now:
            raise HTTPException(422, "wait=dialed cannot wait for a call scheduled later")
    if body.latest_at is not None and body.latest_at <= now:
        raise HTTPException(422, "latest_at has passed")
    detection = body.machine_detection or default_options(settings).machine_detection
    return CallOptions(
        scheduled_at=body.scheduled_at.isoformat() if body.scheduled_at else None,
        latest_at=body.latest_at.isoformat() if body.latest_at else None,
        max_duration_seconds=body.max_duration_seconds,
        machine_detection=MachineDetection(detection),
        voicemail_message=body.voicemail_message,
    )


def _requested_by(user: CurrentUser) -> str:
    return f"api key {user.key_prefix}"


async def _control(
    action: ControlAction,
    call_session_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CallControlResponse:
    controller = CallController(settings, engine, temporal)
    try:
        answer = await controller.control(
            user_id=user.user_id,
            call_session_id=call_session_id,
            action=action,
            requested_by=_requested_by(user),
        )
    except CallNotFound as exc:
        raise HTTPException(404, "call session not found") from exc
    except CallOver as exc:
        raise HTTPException(409, "the call is over: nothing to cancel or hang up") from exc
    except TemporalUnavailable as exc:
        raise HTTPException(503, "the call orchestrator is unreachable; try again") from exc
    return CallControlResponse(**dataclasses.asdict(answer))


_CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": Detail, "description": "No such session"},
    409: {"model": Detail, "description": "The call is over"},
    503: {"model": Detail, "description": "Temporal unreachable"},
}


@router.post(
    "/api/v1/calls/{call_session_id}/cancel",
    response_model=CallControlResponse,
    responses=_CONTROL_RESPONSES,
    tags=["calls"],
)
async def cancel_call(
    call_session_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CallControlResponse:
    """Cancel a call: one scheduled or not dialed yet never dials; a dial in flight is
    reconciled first, and a placed call is ended. Idempotent; 409 once the call is over."""
    return await _control(ControlAction.CANCEL, call_session_id, user, settings, engine, temporal)


@router.post(
    "/api/v1/calls/{call_session_id}/hangup",
    response_model=CallControlResponse,
    responses=_CONTROL_RESPONSES,
    tags=["calls"],
)
async def hangup_call(
    call_session_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CallControlResponse:
    """End a live call at the carrier (one not placed yet is never dialed). Idempotent; 409
    once the call is over."""
    return await _control(ControlAction.HANGUP, call_session_id, user, settings, engine, temporal)


def _public(row: CallSession) -> dict[str, Any]:
    return {
        "call_session_id": row.id,
        "request_id": row.request_id,
        "user_id": row.user_id,
        "status": row.status,
        "target_number": row.target_number or row.requested_number,
        "from_phone_number": row.from_number,
        "telephony_leg_id": row.telephony_leg_id,
        "failure_code": row.failure_code,
        "failure_reason": row.failure_reason,
        "provider_error_code": row.provider_error_code,
        "attempts": row.attempts,
        "agent_id": row.agent_id,
        "workflow_id": row.flow_id,
        "phone_number_id": row.phone_number_id,
        "campaign_id": row.campaign_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "call_status": row.call_status,
        "answered_at": row.answered_at,
        "ended_at": row.ended_at,
        "duration_seconds": row.duration_seconds,
        "variables": json.loads(row.variables) if row.variables else {},
        "metadata": json.loads(row.call_metadata) if row.call_metadata else {},
        "external_id": row.external_id,
        "scheduled_at": row.scheduled_at,
        "latest_at": row.latest_at,
        "max_duration_seconds": row.max_duration_seconds,
        "machine_detection": row.machine_detection,
        "answered_by": row.answered_by,
        "ended_reason": row.ended_reason,
    }


@router.get(
    "/api/v1/call-analytics",
    response_model=CallSessionDetail | Page[CallSessionPublic],
    responses={**AUTH_ERRORS, 404: {"model": Detail, "description": "No such session"}},
    tags=["calls"],
)
def call_analytics(
    user: CurrentUser,
    session: SessionDep,
    request_id: uuid.UUID | None = None,
    call_session_id: uuid.UUID | None = None,
    status: SessionStatus | None = None,
    campaign_id: uuid.UUID | None = None,
    call_status: CallStatus | None = None,
    answered_by: Annotated[str | None, Query(max_length=32)] = None,
    ended_reason: EndedReason | None = None,
    external_id: Annotated[str | None, Query(max_length=200)] = None,
    # UTCDatetime: an instant with no UTC form (year 10000 once converted) is a 422.
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CallSessionDetail | Page[CallSessionPublic]:
    """One session with its event timeline (by request_id or call_session_id), or a page."""
    if request_id or call_session_id:
        query = select(CallSession).where(CallSession.user_id == user.user_id)
        if request_id:
            query = query.where(CallSession.request_id == request_id)
        if call_session_id:
            query = query.where(CallSession.id == call_session_id)
        row = session.exec(query).first()
        if row is None:
            raise HTTPException(404, "call session not found")
        events = session.exec(
            select(CallEvent)
            .where(CallEvent.session_id == row.id)
            .order_by(col(CallEvent.created_at), col(CallEvent.id))
        ).all()
        return CallSessionDetail(
            **_public(row),
            events=[
                CallEventPublic(
                    type=e.type,
                    detail=json.loads(e.detail) if e.detail else None,
                    created_at=e.created_at,
                )
                for e in events
            ],
        )

    filters: list[ColumnElement[bool]] = [col(CallSession.user_id) == user.user_id]
    if status:
        filters.append(col(CallSession.status) == status)
    if campaign_id:
        filters.append(col(CallSession.campaign_id) == campaign_id)
    for column, value in (
        (CallSession.call_status, call_status),
        (CallSession.answered_by, answered_by),
        (CallSession.ended_reason, ended_reason),
        (CallSession.external_id, external_id),
    ):
        if value is not None:
            filters.append(col(column) == value)
    if since:
        # Naive means UTC, any offset is compared as UTC: the column type (store.db.UTCDateTime).
        filters.append(col(CallSession.created_at) >= since)
    if until:
        filters.append(col(CallSession.created_at) < until)
    total = session.exec(select(func.count()).select_from(CallSession).where(*filters)).one()
    rows = session.exec(
        select(CallSession)
        .where(*filters)
        .order_by(col(CallSession.created_at).desc(), col(CallSession.id))
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return Page[CallSessionPublic](
        items=[CallSessionPublic(**_public(r)) for r in rows],
        total=total,
        page=page,
        page_size=page_size,
    )
