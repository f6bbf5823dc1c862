"""Batch calls (campaigns): create from JSON or a CSV upload, watch, pause, resume, cancel."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.campaign_input import UPLOAD_SCHEMA, campaign_spec, parse_csv, read_json, read_upload
from api.campaign_schemas import (
    CallingWindow,
    CampaignCreate,
    CampaignCreated,
    CampaignOptions,
    CampaignStatus,
    CampaignSummary,
    RecipientResult,
    RedialOutcome,
    RedialPolicy,
    RowError,
    inline_schema,
)
from api.deps import (
    AUTH_ERRORS,
    CurrentUser,
    EngineDep,
    Responses,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.schemas import Detail, Page, as_utc
from contracts.calls import MachineDetection
from contracts.campaigns import (
    AttemptOutcome,
    CampaignProgress,
    CampaignState,
    RecipientState,
    WaitReason,
)
from core.csv_cells import csv_writer
from core.windows import ALL_DAYS, DAY_NAMES
from services.calls import default_options
from services.campaigns import CampaignService, OrchestratorUnavailable
from store import campaign_recipients as recipients
from store import campaigns as store
from store.models import Campaign

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/batch-call", tags=["campaigns"], responses=AUTH_ERRORS)
NOT_FOUND: Responses = {404: {"model": Detail, "description": "No such campaign (or not yours)"}}
CONFLICT: Responses = {
    409: {"model": Detail, "description": "Not possible in the campaign's state"}
}
# Rows quoted back in a 422 when none is valid; the full list comes with a partial success.
MAX_QUOTED_ERRORS = 20


# --- answers --------------------------------------------------------------------------------


def _options(row: Campaign) -> CampaignOptions:
    window = None
    if row.window_start and row.window_end:
        days = [int(d) for d in row.window_days.split(",")] if row.window_days else ALL_DAYS
        window = CallingWindow(
            start=row.window_start,
            end=row.window_end,
            days=[DAY_NAMES[d - 1] for d in days],
            timezone=row.default_timezone,
        )
    redial = None
    if row.redial_outcomes:
        redial = RedialPolicy(
            # Stored joined after the request's validation; the model validates them again.
            outcomes=cast(list[RedialOutcome], row.redial_outcomes.split(",")),
            max_attempts=row.redial_max_attempts,
            delay_seconds=row.redial_delay_seconds,
        )
    return CampaignOptions(
        calls_per_second=row.calls_per_second,
        max_concurrency=row.max_concurrency,
        calling_window=window,
        start_at=as_utc(row.start_at) if row.start_at else None,
        redial=redial,
        max_duration_seconds=row.max_duration_seconds,
        machine_detection=(
            MachineDetection(row.machine_detection) if row.machine_detection else None
        ),
        voicemail_message=row.voicemail_message,
    )


def _summary(row: Campaign) -> dict[str, Any]:
    return {
        "id": row.id,
        "batch_name": row.name,
        "state": row.state,
        "agent_id": row.agent_id,
        "workflow_id": row.flow_id,
        "phone_number_id": row.phone_number_id,
        "total_recipients": row.total_recipients,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }


def _status(
    session: SessionDep, row: Campaign, progress: CampaignProgress | None = None
) -> CampaignStatus:
    by_state, by_code = store.counts(session, row.id)
    waiting_for, next_start_at = None, None
    if progress is not None and progress.waiting_for is not None:
        waiting_for, next_start_at = progress.waiting_for, progress.waiting_until
    elif row.state == CampaignState.SCHEDULED and row.start_at is not None:
        # The row alone knows this much, even when no worker answers.
        waiting_for, next_start_at = WaitReason.START_AT, row.start_at
    return CampaignStatus(
        **_summary(row),
        options=_options(row),
        variables=json.loads(row.variables) if row.variables else {},
        counts=by_state,
        failure_codes=by_code,
        waiting_for=waiting_for,
        next_start_at=next_start_at,
    )


# --- routes ---------------------------------------------------------------------------------


@router.post(
    "/create",
    response_model=CampaignCreated,
    status_code=201,
    responses={
        **NOT_FOUND,
        413: {"model": Detail, "description": "Upload too large"},
        415: {"model": Detail, "description": "Neither JSON nor a multipart CSV upload"},
        503: {"model": Detail, "description": "Temporal unreachable; nothing was created"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(CampaignCreate)},
                "multipart/form-data": {"schema": UPLOAD_SCHEMA},
            },
        }
    },
)
async def create_campaign(
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignCreated:
    """Create a campaign from JSON recipients or a CSV upload and start it."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    max_rows = settings.max_campaign_recipients
    if kind == "multipart/form-data":
        fields, data = await read_upload(request, settings.max_upload_bytes)
        rows, errors = await run_in_threadpool(parse_csv, data, max_rows)
    elif kind == "application/json" or kind.endswith("+json"):
        body = await read_json(request, max_rows)
        fields = body
        rows = [
            store.RecipientRow(
                row_number=i,
                phone_number=r.phone_number,
                variables=r.variables,
                external_id=r.external_id,
            )
            for i, r in enumerate(body.recipients, start=1)
        ]
        errors = []
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send application/json, or multipart/form-data with a CSV `file`",
        )
    try:
        report = await CampaignService(settings, engine, temporal).create(
            campaign_spec(user.user_id, fields, default_options(settings).machine_detection),
            rows,
        )
    except store.CampaignNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except store.NoValidRecipients as exc:
        all_errors = sorted(
            errors + [RowError(row=r.row_number, reason=r.reason) for r in exc.rejected],
            key=lambda e: e.row,
        )
        quoted = "; ".join(f"row {e.row}: {e.reason}" for e in all_errors[:MAX_QUOTED_ERRORS])
        more = len(all_errors) - MAX_QUOTED_ERRORS
        suffix = f"; and {more} more" if more > 0 else ""
        raise HTTPException(422, f"{exc}: {quoted}{suffix}") from exc
    except OrchestratorUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the call orchestrator is unreachable; the campaign was not created",
            headers={"Retry-After": "5"},
        ) from exc
    campaign = report.campaign
    rejected = sorted(
        errors + [RowError(row=r.row_number, reason=r.reason) for r in report.rejected],
        key=lambda e: e.row,
    )
    with Session(engine) as session:
        return CampaignCreated(
            campaign=_status(session, campaign),
            accepted=report.accepted,
            skipped=report.skipped,
            rejected=rejected,
        )


@router.get("", response_model=Page[CampaignSummary])
def list_campaigns(
    user: CurrentUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[CampaignSummary]:
    """Your campaigns, newest first."""
    where = Campaign.user_id == user.user_id
    total = session.exec(select(func.count()).select_from(Campaign).where(where)).one()
    rows = session.exec(
        select(Campaign)
        .where(where)
        .order_by(col(Campaign.created_at).desc(), col(Campaign.id))
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return Page[CampaignSummary](
        items=[CampaignSummary(**_summary(r)) for r in rows],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/{campaign_id}/status", response_model=CampaignStatus, responses=NOT_FOUND)
async def campaign_status(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignStatus:
    """The campaign with its recipients counted per state and per failure code, and while it
    waits, why and until when (from its workflow)."""
    with Session(engine) as session:
        try:
            row = store.get_owned(session, campaign_id, user.user_id)
        except store.CampaignNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    progress = await CampaignService(settings, engine, temporal).progress(row)
    with Session(engine) as session:
        return await run_in_threadpool(_status, session, row, progress)


def _owned_or_404(engine: EngineDep, campaign_id: uuid.UUID, user: CurrentUser) -> Campaign:
    with Session(engine) as session:
        try:
            return store.get_owned(session, campaign_id, user.user_id)
        except store.CampaignNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/{campaign_id}/recipients", response_model=Page[RecipientResult], responses=NOT_FOUND)
def campaign_recipients(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    state: Annotated[RecipientState | None, Query(description="only recipients in it")] = None,
    outcome: Annotated[
        AttemptOutcome | None, Query(description="only recipients whose latest call ended so")
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[RecipientResult]:
    """Each recipient in row order: external_id, state, attempts, and every attempt's call id
    and outcome."""
    try:
        store.get_owned(session, campaign_id, user.user_id)
    except store.CampaignNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    views, total = recipients.recipients_page(
        session,
        campaign_id,
        recipients.RecipientFilter(state=state, outcome=outcome),
        (page - 1) * page_size,
        page_size,
    )
    return Page[RecipientResult](
        items=[RecipientResult.model_validate(dataclasses.asdict(v)) for v in views],
        total=total,
        page=page,
        page_size=page_size,
    )


CSV_COLUMNS = (
    "row_number",
    "phone_number",
    "external_id",
    "state",
    "attempts",
    "outcome",
    "failure_code",
    "reason",
)


def _csv_lines(
    engine: EngineDep, campaign: Campaign, where: recipients.RecipientFilter
) -> Iterator[str]:
    """The export, one keyset page of recipients per chunk (iterated in a worker thread by
    StreamingResponse); every cell through core/csv_cells.py."""
    attempts = max(1, campaign.redial_max_attempts)
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    header = list(CSV_COLUMNS)
    for n in range(1, attempts + 1):
        header += [f"call_{n}_session_id", f"call_{n}_outcome"]
    writer.writerow(header)
    for views in recipients.all_recipients(engine, campaign.id, where):
        for v in views:
            row: list[object] = [
                v.row_number,
                v.phone_number,
                v.external_id,
                v.state,
                v.attempts,
                v.outcome,
                v.failure_code,
                v.reason,
            ]
            for n in range(attempts):
                call = v.calls[n] if n < len(v.calls) else None
                row += [call.call_session_id, call.outcome] if call else [None, None]
            writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if tail := buffer.getvalue():
        yield tail


@router.get(
    "/{campaign_id}/recipients.csv",
    responses={
        **NOT_FOUND,
        200: {"content": {"text/csv": {}}, "description": "The recipients as CSV"},
    },
    response_class=StreamingResponse,
)
def campaign_recipients_csv(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    engine: EngineDep,
    state: Annotated[RecipientState | None, Query(description="only recipients in it")] = None,
    outcome: Annotated[
        AttemptOutcome | None, Query(description="only recipients whose latest call ended so")
    ] = None,
) -> StreamingResponse:
    """The recipients as CSV (the same as the recipients page, one row each: a pair of
    call_N_session_id, call_N_outcome columns per possible attempt), streamed. A cell a
    spreadsheet would read as a formula starts with a `'`."""
    campaign = _owned_or_404(engine, campaign_id, user)
    where = recipients.RecipientFilter(state=state, outcome=outcome)
    return StreamingResponse(
        _csv_lines(engine, campaign, where),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-recipients.csv"'
        },
    )


async def _control(
    campaign_id: uuid.UUID,
    target: CampaignState,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignStatus:
    try:
        row = await CampaignService(settings, engine, temporal).control(
            campaign_id, user.user_id, target
        )
    except store.CampaignNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except store.InvalidTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    with Session(engine) as session:
        return _status(session, row)


@router.post(
    "/{campaign_id}/pause", response_model=CampaignStatus, responses={**NOT_FOUND, **CONFLICT}
)
async def pause_campaign(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignStatus:
    """Stop starting new calls; calls in progress finish."""
    return await _control(campaign_id, CampaignState.PAUSED, user, settings, engine, temporal)


@router.post(
    "/{campaign_id}/resume", response_model=CampaignStatus, responses={**NOT_FOUND, **CONFLICT}
)
async def resume_campaign(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignStatus:
    """Start calls again where the campaign stopped."""
    return await _control(campaign_id, CampaignState.RUNNING, user, settings, engine, temporal)


@router.post(
    "/{campaign_id}/cancel", response_model=CampaignStatus, responses={**NOT_FOUND, **CONFLICT}
)
async def cancel_campaign(
    campaign_id: uuid.UUID,
    user: CurrentUser,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
) -> CampaignStatus:
    """Start no more calls (recipients not called become canceled); calls in progress finish."""
    return await _control(campaign_id, CampaignState.CANCELED, user, settings, engine, temporal)
