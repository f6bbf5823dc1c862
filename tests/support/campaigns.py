"""Campaign test helpers: fictional numbers, a campaign in the database, a recording launcher."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contracts.calls import CallSpec, DialSlot, SessionStatus
from services.calls import request_fingerprint
from store import campaigns
from store.db import session_scope
from store.models import CallSession, CampaignRecipient

# Only fictional numbers: the 555-0100..0199 block, which US numbering reserves for fiction.
# One area code gives 100 of them; bigger campaigns take the same block in other US area codes
# (+1 212 555 01xx, +1 312 555 01xx, ...), all valid numbers that the simulated carrier accepts
# (0100 is its "accepted" number; the magic 0101..0107 are left out).
AREA_CODES = (202, 212, 312, 213, 305, 415, 617, 206, 303, 404, 512, 602, 702, 713, 215)
_SAFE_SUFFIXES = [n for n in range(100, 200) if not 101 <= n <= 107]


def fictional_numbers(count: int) -> list[str]:
    numbers = [f"+1{ac}5550{n}" for ac in AREA_CODES for n in _SAFE_SUFFIXES]
    if count > len(numbers):
        raise ValueError(f"only {len(numbers)} fictional numbers available")
    return numbers[:count]


def make_campaign(
    engine: Engine,
    user_id: uuid.UUID,
    numbers: list[str],
    **options: Any,
) -> uuid.UUID:
    values: dict[str, Any] = {  # CampaignSpec's fields, any of them overridden
        "user_id": user_id,
        "name": "test campaign",
        "agent_id": None,
        "flow_id": None,
        "phone_number_id": None,
        "calls_per_second": 100.0,
        "max_concurrency": 100,
        "default_timezone": "UTC",
    }
    values.update(options)
    spec = campaigns.CampaignSpec(**values)
    if spec.agent_id is None and spec.flow_id is None:
        spec.flow_id = _flow(engine, user_id)
    rows = [campaigns.RecipientRow(row_number=i, phone_number=n) for i, n in enumerate(numbers, 1)]
    return campaigns.create_campaign(engine, spec, rows, "US").campaign.id


def _flow(engine: Engine, user_id: uuid.UUID) -> uuid.UUID:
    from store.models import Flow

    with session_scope(engine) as session:
        flow = Flow(user_id=user_id, name="campaign flow")
        session.add(flow)
    return flow.id


def recipient_states(engine: Engine, campaign_id: uuid.UUID) -> Counter[str]:
    with Session(engine) as session:
        return Counter(
            session.exec(
                select(CampaignRecipient.state).where(CampaignRecipient.campaign_id == campaign_id)
            ).all()
        )


@dataclass
class RecordingLauncher:
    """Records each start with the test server's clock and writes the session as a finished
    call at once (unless `hold` says to leave it in progress), like a very fast carrier."""

    engine: Engine
    clock: Callable[[], Awaitable[datetime]]
    hold: Callable[[CallSpec], bool] = lambda _call: False
    starts: list[tuple[datetime, str]] = field(default_factory=list)
    slots: dict[str, DialSlot | None] = field(default_factory=dict)  # by call_session_id
    held: list[str] = field(default_factory=list)
    number_of: dict[str, str] = field(default_factory=dict)  # call_session_id -> number

    async def start(self, calls: list[CallSpec]) -> None:
        for call in calls:
            self.starts.append((await self.clock(), call.call_session_id))
            self.slots[call.call_session_id] = call.dial_slot
            self.number_of[call.call_session_id] = call.phone_number
            if self.hold(call):
                self.held.append(call.call_session_id)
                status = "dialing"
            else:
                status = SessionStatus.SUCCESS
            self._session(call, status)

    def _session(self, call: CallSpec, status: str) -> None:
        with session_scope(self.engine) as session:
            if session.get(CallSession, uuid.UUID(call.call_session_id)) is not None:
                return
            session.add(
                CallSession(
                    id=uuid.UUID(call.call_session_id),
                    request_id=uuid.UUID(call.request_id),
                    user_id=uuid.UUID(call.user_id),
                    campaign_id=uuid.UUID(call.campaign_id) if call.campaign_id else None,
                    requested_number=call.phone_number,
                    target_number=call.phone_number,
                    status=status,
                    request_hash=request_fingerprint(call, "US"),
                    call_status="completed" if status == SessionStatus.SUCCESS else None,
                )
            )

    def finish(self, call_session_id: str, call_status: str = "completed") -> None:
        with session_scope(self.engine) as session:
            row = session.get(CallSession, uuid.UUID(call_session_id))
            assert row is not None
            row.status = SessionStatus.SUCCESS
            row.call_status = call_status
            session.add(row)
