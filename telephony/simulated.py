"""A simulated carrier: no credentials, realistic latency, a durable ledger.

Magic destination numbers drive every path (see README). Behaviour depends only on the
number and the attempt, so it is the same after a worker crash; the ledger of placed calls
lives in the database, like a real carrier's, so reconciliation and the one-dial-per-session
checks work across processes."""

from __future__ import annotations

import asyncio
import secrets
import uuid

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import session_scope
from store.models import SimulatedCall
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, Rejected, attempt_tag

BUSY = "+12025550101"
NO_ANSWER = "+12025550102"
INVALID = "+12025550103"
TWO_TRANSIENT = "+12025550104"
AMBIGUOUS_ONCE = "+12025550105"
ALWAYS_TRANSIENT = "+12025550106"
RATE_LIMITED_ONCE = "+12025550107"


class SimulatedProvider:
    name = "simulated"

    def __init__(self, engine: Engine, latency_ms: int = 150) -> None:
        self._engine = engine
        self._latency = latency_ms / 1000

    async def create_call(self, request: DialRequest) -> ProviderCall:
        if self._latency:
            await asyncio.sleep(self._latency)
        to, attempt = request.to_number, request.attempt
        if to == INVALID:
            raise Rejected("The 'To' number is not a valid phone number.", code="21211")
        if to == ALWAYS_TRANSIENT or (to == TWO_TRANSIENT and attempt <= 2):
            raise NotPlaced("connection refused by the carrier gateway", code="connect")
        if to == RATE_LIMITED_ONCE and attempt == 1:
            raise NotPlaced("Too Many Requests", code="20429", retry_after=1.0)
        call = await asyncio.to_thread(self._place, request)
        if to == AMBIGUOUS_ONCE and attempt == 1:
            # The carrier placed the call, but its answer never reaches us.
            raise Ambiguous("timed out waiting for the carrier's response")
        return call

    def _place(self, request: DialRequest) -> ProviderCall:
        row = SimulatedCall(
            sid="SM" + secrets.token_hex(16),
            session_id=uuid.UUID(request.call_session_id),
            attempt_tag=request.attempt_tag,
            to_number=request.to_number,
            from_number=request.from_number,
        )
        with session_scope(self._engine) as session:
            session.add(row)
        return ProviderCall(sid=row.sid, status=row.status, to_number=row.to_number)

    async def lookup_call(
        self, *, call_session_id: str, attempts: list[int], to_number: str, from_number: str
    ) -> ProviderCall | None:
        tags = [attempt_tag(call_session_id, a) for a in attempts]

        def find() -> ProviderCall | None:
            with Session(self._engine) as session:
                row = session.exec(
                    select(SimulatedCall)
                    .where(col(SimulatedCall.attempt_tag).in_(tags))
                    .order_by(col(SimulatedCall.created_at))
                ).first()
            return row and ProviderCall(sid=row.sid, status=row.status, to_number=row.to_number)

        return await asyncio.to_thread(find)

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        def get() -> ProviderCall | None:
            with Session(self._engine) as session:
                row = session.get(SimulatedCall, sid)
            return row and ProviderCall(sid=row.sid, status=row.status, to_number=row.to_number)

        return await asyncio.to_thread(get)

    def dial_count(self, call_session_id: str) -> int:
        """How many calls this carrier placed for a session (tests assert it is at most 1)."""
        with Session(self._engine) as session:
            return len(
                session.exec(
                    select(SimulatedCall.sid).where(
                        SimulatedCall.session_id == uuid.UUID(call_session_id)
                    )
                ).all()
            )
