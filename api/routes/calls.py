"""create_call and call-analytics."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from sqlalchemy import ColumnElement, func
from sqlmodel import col, select

from api.deps import AUTH_ERRORS, CurrentUser, EngineDep, SessionDep, SettingsDep, TemporalDep
from api.schemas import (
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
from contracts.calls import SessionStatus
from infra.metrics import CREATE_CALLS
from services.calls import CallRequest, CallStarter, IdempotencyConflict
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
            )
        )
    except IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    CREATE_CALLS.labels(answer.status, answer.failure_code or "").inc()
    return CreateCallResponse(**dataclasses.asdict(answer))


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
