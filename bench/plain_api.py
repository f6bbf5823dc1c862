"""What a user would build instead: one FastAPI endpoint that checks the API key (Dialer's own
dependency), writes the session, calls the simulated carrier synchronously and records the
outcome. No Temporal: a crash between the dial and the write loses the call, a retried
request dials twice. Run as `python -m bench.plain_api` with DIALER_* settings."""

from __future__ import annotations

import uuid

import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlmodel import col, select

from api.deps import CurrentUser
from core.config import get_settings
from core.phone import normalize
from store.db import get_engine, session_scope
from store.models import CallSession, PhoneNumber, utcnow
from store.simulated_ledger import DatabaseLedger
from telephony.base import DialRequest
from telephony.simulated import SimulatedProvider


def create_plain_app() -> FastAPI:
    settings = get_settings()
    engine = get_engine(settings)
    provider = SimulatedProvider(DatabaseLedger(engine), settings.simulated_latency_ms)
    app = FastAPI(title="plain")
    app.state.settings = settings
    app.state.engine = engine

    def write_session(user_id: uuid.UUID, number: str) -> CallSession:
        target = normalize(number, settings.default_region)
        with session_scope(engine) as session:
            line = session.exec(
                select(PhoneNumber)
                .where(PhoneNumber.user_id == user_id, col(PhoneNumber.active).is_(True))
                .order_by(col(PhoneNumber.created_at))
            ).first()
            assert line is not None, "the bench seeds a line"
            row = CallSession(
                id=uuid.uuid4(),
                request_id=uuid.uuid4(),
                user_id=user_id,
                requested_number=number,
                target_number=target,
                from_number=line.number,
                provider="simulated",
                status="dialing",
                request_hash="-",
            )
            session.add(row)
        return row

    def record(row_id: uuid.UUID, leg_id: str) -> None:
        with session_scope(engine) as session:
            row = session.get(CallSession, row_id)
            assert row is not None
            row.status, row.telephony_leg_id, row.attempts = "success", leg_id, 1
            row.dialed_at = row.updated_at = utcnow()
            session.add(row)

    @app.post("/call")
    async def call(user: CurrentUser, phoneNumber: str) -> dict[str, str]:  # as create_call's
        row = await run_in_threadpool(write_session, user.user_id, phoneNumber)
        placed = await provider.create_call(
            DialRequest(
                call_session_id=str(row.id),
                request_id=str(row.request_id),
                attempt=1,
                to_number=row.target_number or phoneNumber,
                from_number=row.from_number or "",
            )
        )
        await run_in_threadpool(record, row.id, placed.sid)
        return {"status": "success", "call_session_id": str(row.id), "telephony_leg_id": placed.sid}

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return app


if __name__ == "__main__":
    s = get_settings()
    uvicorn.run(create_plain_app(), host=s.api_host, port=s.api_port, log_level="warning")
