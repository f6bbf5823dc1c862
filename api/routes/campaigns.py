"""Batch calls (campaigns): create from JSON or a CSV upload, watch, pause, resume, cancel."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.datastructures import UploadFile

from api.campaign_schemas import (
    CallingWindow,
    CampaignCreate,
    CampaignCreated,
    CampaignFields,
    CampaignOptions,
    CampaignStatus,
    CampaignSummary,
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
from api.limits import check_recipient_count
from api.schemas import Detail, Page, as_utc
from contracts.campaigns import CampaignState
from core.windows import ALL_DAYS, DAY_NAMES
from services.campaigns import CampaignService, OrchestratorUnavailable
from store import campaigns as store
from store.models import Campaign

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/batch-call", tags=["campaigns"], responses=AUTH_ERRORS)
NOT_FOUND: Responses = {404: {"model": Detail, "description": "No such campaign (or not yours)"}}
CONFLICT: Responses = {
    409: {"model": Detail, "description": "Not possible in the campaign's state"}
}
PHONE_COLUMN = "phone_number"
EXTERNAL_ID_COLUMN = "external_id"
# Rows quoted back in a 422 when none is valid; the full list comes with a partial success.
MAX_QUOTED_ERRORS = 20

_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file", "batch_name"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "CSV, UTF-8, header row with a phone_number column; an external_id "
            "column is the recipient's external id; every other column becomes a variable",
        },
        "batch_name": {"type": "string", "minLength": 1, "maxLength": 200},
        "agent_id": {"type": "string", "format": "uuid"},
        "workflow_id": {"type": "string", "format": "uuid"},
        "phone_number_id": {"type": "string", "format": "uuid"},
        "options": {
            "type": "string",
            "description": "the options object, as JSON text (unknown fields are refused)",
        },
    },
    # Like every request body: a form field not listed here is refused with a 422 naming it.
    "additionalProperties": False,
}


# --- reading a request ----------------------------------------------------------------------


def parse_csv(data: bytes, max_rows: int) -> tuple[list[store.RecipientRow], list[RowError]]:
    """Recipients from a CSV file, and the rows that cannot be read (by their line number)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is not UTF-8 text") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise HTTPException(422, "the CSV file is empty: it needs a header row") from None
    except csv.Error as exc:
        raise HTTPException(422, f"the CSV header cannot be read: {exc}") from exc
    lowered = [h.lower() for h in header]
    if PHONE_COLUMN not in lowered:
        raise HTTPException(
            422, f"the CSV header has no {PHONE_COLUMN} column (found: {', '.join(header)})"
        )
    if len(set(lowered)) != len(lowered) or "" in lowered:
        raise HTTPException(422, "the CSV header has empty or repeated column names")
    phone_at = lowered.index(PHONE_COLUMN)
    external_at = lowered.index(EXTERNAL_ID_COLUMN) if EXTERNAL_ID_COLUMN in lowered else None
    rows: list[store.RecipientRow] = []
    errors: list[RowError] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(row=reader.line_num, reason=f"cannot be read: {exc}"))
            continue
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(rows) + len(errors) >= max_rows:
            raise HTTPException(
                422,
                f"too many recipients: at most {max_rows} per campaign "
                "(DIALER_MAX_CAMPAIGN_RECIPIENTS)",
            )
        if len(fields) > len(header):
            errors.append(
                RowError(row=line, reason=f"{len(fields)} fields, the header has {len(header)}")
            )
            continue
        fields += [""] * (len(header) - len(fields))
        phone = fields[phone_at].strip()
        if not phone:
            errors.append(RowError(row=line, reason="phone_number is empty"))
            continue
        external = fields[external_at].strip() if external_at is not None else ""
        if len(external) > 200:
            errors.append(RowError(row=line, reason="external_id is longer than 200 characters"))
            continue
        variables = {
            name: value
            for i, (name, value) in enumerate(zip(header, fields, strict=True))
            if i not in (phone_at, external_at) and value != ""
        }
        rows.append(
            store.RecipientRow(
                row_number=line,
                phone_number=phone[:64],
                variables=variables,
                external_id=external or None,
            )
        )
    return rows, errors


async def _read_upload(request: Request, max_bytes: int) -> tuple[CampaignFields, bytes]:
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, "the upload needs a `file` part with the CSV")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"upload too large: at most {max_bytes} bytes"
        )
    # An empty known field counts as not given; an unknown field, even empty, is kept so that
    # CampaignFields refuses it by name.
    values: dict[str, Any] = {
        k: v
        for k, v in form.items()
        if k != "file" and isinstance(v, str) and (v != "" or k not in CampaignFields.model_fields)
    }
    if "options" in values:
        try:
            values["options"] = json.loads(values["options"])
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"options is not valid JSON: {exc.msg}") from exc
    try:
        fields = CampaignFields.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return fields, data


async def _read_json(request: Request, max_rows: int) -> CampaignCreate:
    raw = await request.body()
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not valid JSON") from exc
    if isinstance(payload, dict) and isinstance(payload.get("recipients"), list):
        check_recipient_count(len(payload["recipients"]), max_rows)
    try:
        return CampaignCreate.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _spec(user_id: uuid.UUID, fields: CampaignFields) -> store.CampaignSpec:
    options = fields.options
    window = options.calling_window
    redial = options.redial
    return store.CampaignSpec(
        user_id=user_id,
        name=fields.batch_name,
        agent_id=fields.agent_id,
        flow_id=fields.workflow_id,
        phone_number_id=fields.phone_number_id,
        calls_per_second=options.calls_per_second,
        max_concurrency=options.max_concurrency,
        default_timezone=window.timezone if window else "UTC",
        window_start=window.start if window else None,
        window_end=window.end if window else None,
        window_days=(
            ",".join(
                str(DAY_NAMES.index(d) + 1) for d in sorted(set(window.days), key=DAY_NAMES.index)
            )
            if window
            else None
        ),
        start_at=options.start_at,
        redial_outcomes=",".join(sorted(set(redial.outcomes))) if redial else None,
        redial_max_attempts=redial.max_attempts if redial else 1,
        redial_delay_seconds=redial.delay_seconds if redial else 0,
    )


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


def _status(session: SessionDep, row: Campaign) -> CampaignStatus:
    by_state, by_code = store.counts(session, row.id)
    return CampaignStatus(
        **_summary(row), options=_options(row), counts=by_state, failure_codes=by_code
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
                "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
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
        fields, data = await _read_upload(request, settings.max_upload_bytes)
        rows, errors = await run_in_threadpool(parse_csv, data, max_rows)
    elif kind == "application/json" or kind.endswith("+json"):
        body = await _read_json(request, max_rows)
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
            _spec(user.user_id, fields), rows
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
def campaign_status(
    campaign_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> CampaignStatus:
    """The campaign with its recipients counted per state and per failure code."""
    try:
        row = store.get_owned(session, campaign_id, user.user_id)
    except store.CampaignNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return _status(session, row)


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
