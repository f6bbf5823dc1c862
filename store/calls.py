"""Queries behind the call path: validation against mappings, the session row, its events.

Every write here is idempotent, because activities that call it may run more than once."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from contracts.calls import (
    TERMINAL,
    CreateCallInput,
    EndedReason,
    FailureCode,
    MachineDetection,
    PersistSessionInput,
    PersistSessionResult,
    RecordAttemptInput,
    RecordCallEventInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from contracts.context import fill_media_stream_url
from contracts.lifecycle import CallStatus
from contracts.webhooks import EventType
from core.phone import InvalidNumber, normalize
from store import webhooks
from store.db import insert_ignoring_duplicates, session_scope
from store.models import (
    Agent,
    CallEvent,
    CallSession,
    Flow,
    LineMapping,
    PhoneNumber,
    SuppressedNumber,
    utcnow,
)


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


def _fail(code: FailureCode, reason: str, **known: Any) -> ValidationResult:
    return ValidationResult(ok=False, failure_code=code, failure_reason=reason, **known)


def validate_call(
    engine: Engine,
    call: CreateCallInput,
    default_region: str,
    default_media_stream_url: str | None = None,
) -> ValidationResult:
    """Check ownership of every id, resolve the from-line and the media stream URL (the
    agent's, else the flow's, else the default), check the destination.

    Another user's id is treated exactly like an id that does not exist."""
    user_id = uuid.UUID(call.user_id)
    try:
        target = normalize(call.phone_number, default_region)
    except InvalidNumber as exc:
        return _fail(FailureCode.INVALID_NUMBER, str(exc))

    with Session(engine) as session:
        agent_id, flow_id, line_id = (
            _uuid(call.agent_id),
            _uuid(call.flow_id),
            _uuid(call.phone_number_id),
        )
        agent = session.get(Agent, agent_id) if agent_id else None
        if agent_id and (agent is None or agent.user_id != user_id):
            return _fail(
                FailureCode.AGENT_NOT_FOUND, "agent_id does not exist", target_number=target
            )
        flow = session.get(Flow, flow_id) if flow_id else None
        if flow_id and (flow is None or flow.user_id != user_id):
            return _fail(
                FailureCode.WORKFLOW_NOT_FOUND, "workflow_id does not exist", target_number=target
            )

        line: PhoneNumber | None = None
        if line_id:
            line = session.get(PhoneNumber, line_id)
            if line is None or line.user_id != user_id:
                return _fail(
                    FailureCode.PHONE_NUMBER_NOT_FOUND,
                    "phone_number_id does not exist",
                    target_number=target,
                )
            if not line.active:
                return _fail(
                    FailureCode.PHONE_NUMBER_INACTIVE,
                    "phone_number_id is not active",
                    target_number=target,
                )
        else:
            line = _mapped_line(session, user_id, agent_id=agent_id, flow_id=flow_id)
        if line is None:
            return _fail(
                FailureCode.NO_ACTIVE_LINE,
                "no active caller line: add a phone number or activate one",
                target_number=target,
            )

        suppressed = session.exec(
            select(SuppressedNumber.id).where(
                SuppressedNumber.user_id == user_id, SuppressedNumber.number == target
            )
        ).first()
        template = (
            (agent.media_stream_url if agent else None)
            or (flow.media_stream_url if flow else None)
            or default_media_stream_url
        )
        known: dict[str, Any] = {
            "target_number": target,
            "from_number": line.number,
            "phone_number_id": str(line.id),
            "provider": line.provider,
            "line_confirmed_by": line.confirmed_by,
            "media_stream_url": fill_media_stream_url(
                template, call.call_session_id, call.request_id
            )
            if template
            else None,
        }
        if suppressed:
            return _fail(
                FailureCode.SUPPRESSED_NUMBER, "the number is on the do-not-call list", **known
            )
        return ValidationResult(ok=True, **known)


def _mapped_line(
    session: Session, user_id: uuid.UUID, *, agent_id: uuid.UUID | None, flow_id: uuid.UUID | None
) -> PhoneNumber | None:
    """agent's line -> flow's line -> the user's first active line (oldest first)."""
    for column, value in ((LineMapping.agent_id, agent_id), (LineMapping.flow_id, flow_id)):
        if value is None:
            continue
        line = session.exec(
            select(PhoneNumber)
            .join(LineMapping, col(LineMapping.phone_number_id) == col(PhoneNumber.id))
            .where(column == value, PhoneNumber.user_id == user_id, col(PhoneNumber.active))
        ).first()
        if line:
            return line
    return session.exec(
        select(PhoneNumber)
        .where(PhoneNumber.user_id == user_id, col(PhoneNumber.active))
        .order_by(col(PhoneNumber.created_at), col(PhoneNumber.id))
    ).first()


def add_event(session: Session, session_id: uuid.UUID, key: str, type_: str, **detail: Any) -> None:
    """Append a timeline event once: a retried write with the same key is absorbed."""
    add_events(session, session_id, [(key, type_, detail)])


def add_events(
    session: Session, session_id: uuid.UUID, events: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Append timeline events (key, type, detail) once each, in one statement.

    INSERT ... ON CONFLICT DO NOTHING on (session_id, key), so two concurrent writers of the
    same event (an activity retried while its first run still commits) cannot both insert,
    and the loser neither fails nor aborts its transaction (PostgreSQL would, on a plain
    unique violation)."""
    if not events:
        return
    now = utcnow()
    rows = []
    for key, type_, detail in events:
        clean = {k: v for k, v in detail.items() if v is not None}
        rows.append(
            {
                "session_id": session_id,
                "key": key,
                "type": type_,
                "detail": json.dumps(clean) if clean else None,
                "created_at": now,
            }
        )
    session.flush()  # the session row these events point at must be written first
    session.execute(insert_ignoring_duplicates(session, CallEvent, rows, ["session_id", "key"]))


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def new_session_row(call: CreateCallInput, validation: ValidationResult) -> CallSession:
    options = call.options
    external_id = call.metadata.get("external_id")
    return CallSession(
        id=uuid.UUID(call.call_session_id),
        request_id=uuid.UUID(call.request_id),
        user_id=uuid.UUID(call.user_id),
        agent_id=_uuid(call.agent_id),
        flow_id=_uuid(call.flow_id),
        phone_number_id=_uuid(validation.phone_number_id or call.phone_number_id),
        campaign_id=_uuid(call.campaign_id),
        # As submitted, minus NUL (PostgreSQL text cannot hold it; the write would retry forever).
        requested_number=call.phone_number.replace("\x00", "")[:64],
        target_number=validation.target_number,
        from_number=validation.from_number,
        provider=validation.provider,
        status=SessionStatus.ACCEPTED if validation.ok else SessionStatus.FAILED,
        failure_code=validation.failure_code,
        failure_reason=validation.failure_reason,
        idempotency_key=call.idempotency_key,
        request_hash=call.request_hash,
        variables=json.dumps(call.variables) if call.variables else None,
        call_metadata=json.dumps(call.metadata) if call.metadata else None,
        scheduled_at=_instant(options.scheduled_at),
        latest_at=_instant(options.latest_at),
        max_duration_seconds=options.max_duration_seconds,
        machine_detection=options.machine_detection
        if options.machine_detection != MachineDetection.OFF
        else None,
        call_status=CallStatus.SCHEDULED if options.scheduled_at and validation.ok else None,
        ended_reason=None if validation.ok else EndedReason.NOT_DIALED,
        external_id=external_id[:200] if isinstance(external_id, str) else None,
    )


def persist_session(engine: Engine, input: PersistSessionInput) -> PersistSessionResult:
    """Insert the session row, or return the one already there (upsert by id)."""
    row = new_session_row(input.call, input.validation)
    existed = True
    try:
        with session_scope(engine) as session:
            existing = session.get(CallSession, row.id)
            if existing is None:
                existed = False
                session.add(row)
                session.flush()
                add_event(
                    session,
                    row.id,
                    "created",
                    "created",
                    status=row.status,
                    failure_code=row.failure_code,
                )
                if row.status == SessionStatus.FAILED:
                    _failed_event(session, row)
            else:
                row = existing
    except IntegrityError:
        # A concurrent writer inserted it first; read what it wrote. It existed, so a terminal
        # row written by that writer (the API recording `orchestrator_unavailable`) wins.
        existed = True
        with Session(engine) as session:
            found = session.get(CallSession, row.id)
            if found is None:
                raise
            row = found
    return PersistSessionResult(
        status=SessionStatus(row.status),
        # A row already terminal (e.g. the API recorded that Temporal was unreachable) wins:
        # the run must report it and must not dial.
        already_terminal=existed and row.status in TERMINAL,
        created=not existed,
        telephony_leg_id=row.telephony_leg_id,
        failure_code=FailureCode(row.failure_code) if row.failure_code else None,
        failure_reason=row.failure_reason,
    )


def record_call_event(engine: Engine, input: RecordCallEventInput) -> None:
    """A timeline entry the workflow knows itself (a control request and who asked, a
    hang-up sent), once per key."""
    sid = uuid.UUID(input.call_session_id)
    with session_scope(engine) as session:
        if session.get(CallSession, sid) is None:
            raise LookupError(f"session {sid} does not exist")
        add_event(session, sid, input.key, input.type, **input.detail)


def record_attempt(engine: Engine, input: RecordAttemptInput) -> None:
    sid = uuid.UUID(input.call_session_id)
    with session_scope(engine) as session:
        row = session.get(CallSession, sid, with_for_update=True)
        if row is None:
            raise LookupError(f"session {sid} does not exist")
        row.attempts = max(row.attempts, input.attempt)
        row.updated_at = utcnow()
        add_event(
            session,
            sid,
            f"attempt:{input.attempt}:{input.result}",
            "dial_attempt",
            attempt=input.attempt,
            result=input.result,
            provider_error_code=input.provider_error_code,
            detail=input.detail,
            provider_message=input.provider_message,
        )


def _never_placed(input: RecordOutcomeInput) -> dict[str, Any]:
    """The end of a call that was never placed (canceled, latest_at passed, refused)."""
    if input.status != SessionStatus.FAILED:
        return {}
    values: dict[str, Any] = {"ended_reason": input.ended_reason or EndedReason.NOT_DIALED}
    if input.call_status:
        values["call_status"] = input.call_status
        values["ended_at"] = utcnow()
    return values


def write_outcome(session: Session, input: RecordOutcomeInput) -> CallSession:
    """The dial's outcome, in the caller's transaction: the first terminal outcome wins.
    Returns the session row as it is now (the session keeps it only while it is referenced:
    a caller that goes on with the row holds it, and saves reading it again)."""
    sid = uuid.UUID(input.call_session_id)
    now = utcnow()
    # One conditional UPDATE: the first terminal outcome wins whole, on every database
    # (a read-then-write would let a racing writer mix its fields into the winner's row).
    # Written first and read once after (_outcome_event): a row read before it would only
    # be read again, since the UPDATE bypasses the ORM.
    won = session.exec(
        update(CallSession)
        .where(col(CallSession.id) == sid, col(CallSession.status).not_in(TERMINAL))
        .values(
            status=input.status,
            attempts=case(
                (col(CallSession.attempts) > input.attempts, col(CallSession.attempts)),
                else_=input.attempts,
            ),
            telephony_leg_id=input.telephony_leg_id,
            failure_code=input.failure_code,
            failure_reason=input.failure_reason,
            provider_error_code=input.provider_error_code,
            updated_at=now,
            dialed_at=now if input.telephony_leg_id else None,
            **_never_placed(input),
        )
        .execution_options(synchronize_session=False)
    )
    won_it = bool(getattr(won, "rowcount", 0))
    row = None if won_it else session.get(CallSession, sid)
    if not won_it and row is None:
        raise LookupError(f"session {sid} does not exist")
    add_event(
        session,
        sid,
        f"outcome:{input.status}",
        input.status,
        attempts=input.attempts,
        telephony_leg_id=input.telephony_leg_id,
        failure_code=input.failure_code,
        provider_error_code=input.provider_error_code,
        provider_message=input.provider_message,
    )
    if won_it:
        row = _outcome_event(session, sid)
    if row is None:  # it was updated in this transaction: it cannot have gone since
        raise LookupError(f"session {sid} does not exist")
    return row


def _outcome_event(session: Session, sid: uuid.UUID) -> CallSession | None:
    """The customer's event for the outcome that has just won (store/webhooks.py)."""
    # populate_existing: the UPDATE above bypassed the ORM, so a copy in the session is stale.
    row = session.get(CallSession, sid, populate_existing=True)
    if row is None:
        return None
    if row.status == SessionStatus.SUCCESS and row.telephony_leg_id:
        dialed_at = row.dialed_at.isoformat() if row.dialed_at else None
        extra = {"attempts": row.attempts, "dialed_at": dialed_at}
        webhooks.add_call_event(session, row, EventType.CALL_DIALED, extra)
    elif row.status == SessionStatus.FAILED:
        _failed_event(session, row)
    return row


def _failed_event(session: Session, row: CallSession) -> None:
    extra = {
        "failure_code": row.failure_code,
        "failure_reason": row.failure_reason,
        "provider_error_code": row.provider_error_code,
        "attempts": row.attempts,
    }
    webhooks.add_call_event(session, row, EventType.CALL_FAILED, extra)
