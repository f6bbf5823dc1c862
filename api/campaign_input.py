"""Reading a campaign request: the JSON body or the multipart CSV upload, into the store's
`CampaignSpec` and `RecipientRow`s. Input only; creating and starting the campaign is
services/campaigns.py."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.campaign_schemas import CampaignCreate, CampaignFields, RowError
from api.limits import UnacceptableJSON, check_recipient_count, loads_json
from contracts.calls import MachineDetection
from contracts.context import variables_problem
from core.windows import DAY_NAMES
from store import campaigns as store

PHONE_COLUMN = "phone_number"
EXTERNAL_ID_COLUMN = "external_id"

UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file", "batch_name"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "CSV, UTF-8, header row with a phone_number column; an external_id "
            "column is the recipient's external id; every other column is a variable of the "
            "recipient's call, named by its header (a valid variable name), empty cells left out",
        },
        "batch_name": {"type": "string", "minLength": 1, "maxLength": 200},
        "agent_id": {"type": "string", "format": "uuid"},
        "workflow_id": {"type": "string", "format": "uuid"},
        "phone_number_id": {"type": "string", "format": "uuid"},
        "options": {
            "type": "string",
            "description": "the options object, as JSON text (unknown fields are refused)",
        },
        "variables": {
            "type": "string",
            "description": "the campaign's variables object, as JSON text; a recipient's "
            "columns win over it",
        },
    },
    # Like every request body: a form field not listed here is refused with a 422 naming it.
    "additionalProperties": False,
}


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
    for i, name in enumerate(header):
        if i in (phone_at, external_at):
            continue
        if problem := variables_problem({name: ""}):
            raise HTTPException(
                422, f"CSV column {name[:70]!r}: {problem.removeprefix('variables: ')}"
            )
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


async def read_upload(request: Request, max_bytes: int) -> tuple[CampaignFields, bytes]:
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
    for name in ("options", "variables"):
        if name in values:
            try:
                values[name] = loads_json(values[name])
            except json.JSONDecodeError as exc:
                raise HTTPException(422, f"{name} is not valid JSON: {exc.msg}") from exc
            except UnacceptableJSON as exc:
                raise HTTPException(422, f"{name} cannot be accepted: {exc}") from exc
    try:
        fields = CampaignFields.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return fields, data


async def read_json(request: Request, max_rows: int) -> CampaignCreate:
    raw = await request.body()
    try:
        payload = loads_json(raw)
    except UnacceptableJSON as exc:  # JSONBodyLimits answers these first; kept for any caller
        raise HTTPException(422, f"the JSON body cannot be accepted: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not valid JSON") from exc
    if isinstance(payload, dict) and isinstance(payload.get("recipients"), list):
        check_recipient_count(len(payload["recipients"]), max_rows)
    try:
        return CampaignCreate.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def campaign_spec(
    user_id: uuid.UUID,
    fields: CampaignFields,
    default_detection: MachineDetection = MachineDetection.OFF,
) -> store.CampaignSpec:
    """The store's spec of the campaign. Its calls' options, when it asks for any, are
    resolved now as create_call resolves them (a machine_detection left out is the setting's,
    `default_detection`); asking for none leaves each call the settings' defaults."""
    options = fields.options
    window = options.calling_window
    redial = options.redial
    call_options = (
        options.max_duration_seconds,
        options.machine_detection,
        options.voicemail_message,
    )
    detection = None
    if any(value is not None for value in call_options):
        detection = options.machine_detection or default_detection
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
        variables=dict(fields.variables),
        max_duration_seconds=options.max_duration_seconds,
        machine_detection=detection,
        voicemail_message=options.voicemail_message,
    )
