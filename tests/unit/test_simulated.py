"""telephony.simulated: the magic numbers, attempt by attempt, and its durable ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contracts.lifecycle import StatusEvent, is_final
from store.models import SimulatedCall
from store.simulated_ledger import DatabaseLedger
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, Rejected, attempt_tag
from telephony.simulated import SimulatedProvider, SimulatedTimeline

FROM = "+12025550199"


@pytest.fixture
def carrier(engine: Engine) -> SimulatedProvider:
    return SimulatedProvider(DatabaseLedger(engine), latency_ms=0)


def request(to: str, attempt: int, session_id: str | None = None) -> DialRequest:
    return DialRequest(
        call_session_id=session_id or str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        attempt=attempt,
        to_number=to,
        from_number=FROM,
    )


def ledger(engine: Engine, session_id: str) -> list[SimulatedCall]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(SimulatedCall).where(SimulatedCall.session_id == uuid.UUID(session_id))
            ).all()
        )


async def lookup(
    carrier: SimulatedProvider, session_id: str, attempts: list[int], to: str
) -> ProviderCall | None:
    return await carrier.lookup_call(
        call_session_id=session_id, attempts=attempts, to_number=to, from_number=FROM
    )


@pytest.mark.parametrize("to", ["+12025550100", "+12025550101", "+12025550102", "+12025550142"])
async def test_accepted_numbers_place_one_call(
    carrier: SimulatedProvider, engine: Engine, to: str
) -> None:
    req = request(to, 1)
    call = await carrier.create_call(req)
    assert call.sid.startswith("SM") and call.to_number == to
    (row,) = ledger(engine, req.call_session_id)
    assert (row.sid, row.attempt_tag, row.to_number, row.from_number) == (
        call.sid,
        attempt_tag(req.call_session_id, 1),
        to,
        FROM,
    )
    assert carrier.dial_count(req.call_session_id) == 1


@pytest.mark.parametrize("attempt", [1, 2, 5])
async def test_0103_is_rejected_permanently_with_21211(
    carrier: SimulatedProvider, engine: Engine, attempt: int
) -> None:
    req = request("+12025550103", attempt)
    with pytest.raises(Rejected) as info:
        await carrier.create_call(req)
    assert info.value.code == "21211"
    assert "not a valid phone number" in info.value.message
    assert carrier.dial_count(req.call_session_id) == 0


async def test_0104_fails_twice_without_placing_then_is_accepted(
    carrier: SimulatedProvider,
) -> None:
    sid = str(uuid.uuid4())
    for attempt in (1, 2):
        with pytest.raises(NotPlaced) as info:
            await carrier.create_call(request("+12025550104", attempt, sid))
        assert info.value.retry_after == 0.0
        assert not isinstance(info.value, (Rejected, Ambiguous))
    assert carrier.dial_count(sid) == 0
    call = await carrier.create_call(request("+12025550104", 3, sid))
    assert carrier.dial_count(sid) == 1
    found = await lookup(carrier, sid, [1, 2, 3], "+12025550104")
    assert found is not None and found.sid == call.sid


async def test_0105_places_the_call_but_loses_the_answer_once(
    carrier: SimulatedProvider, engine: Engine
) -> None:
    sid = str(uuid.uuid4())
    with pytest.raises(Ambiguous):
        await carrier.create_call(request("+12025550105", 1, sid))
    # The call exists at the carrier: the ledger has it, and reconciliation finds it.
    (row,) = ledger(engine, sid)
    assert row.attempt_tag == attempt_tag(sid, 1)
    found = await lookup(carrier, sid, [1], "+12025550105")
    assert found is not None and found.sid == row.sid
    assert carrier.dial_count(sid) == 1
    # Only once: a later attempt (for a session where the first was not found) is accepted.
    other = str(uuid.uuid4())
    await carrier.create_call(request("+12025550105", 2, other))
    assert carrier.dial_count(other) == 1


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 10])
async def test_0106_is_never_placed(carrier: SimulatedProvider, attempt: int) -> None:
    req = request("+12025550106", attempt)
    with pytest.raises(NotPlaced):
        await carrier.create_call(req)
    assert carrier.dial_count(req.call_session_id) == 0


async def test_0107_is_rate_limited_once_with_retry_after(carrier: SimulatedProvider) -> None:
    sid = str(uuid.uuid4())
    with pytest.raises(NotPlaced) as info:
        await carrier.create_call(request("+12025550107", 1, sid))
    assert info.value.code == "20429"
    assert info.value.retry_after > 0
    assert carrier.dial_count(sid) == 0
    await carrier.create_call(request("+12025550107", 2, sid))
    assert carrier.dial_count(sid) == 1


async def test_lookup_finds_only_the_attempts_asked_for(carrier: SimulatedProvider) -> None:
    sid = str(uuid.uuid4())
    call = await carrier.create_call(request("+12025550100", 2, sid))
    assert await lookup(carrier, sid, [1], "+12025550100") is None
    assert await lookup(carrier, sid, [], "+12025550100") is None
    found = await lookup(carrier, sid, [2], "+12025550100")
    assert found is not None and found.sid == call.sid
    found = await lookup(carrier, sid, [1, 2, 3], "+12025550100")
    assert found is not None and found.sid == call.sid


async def test_lookup_never_finds_another_sessions_call(carrier: SimulatedProvider) -> None:
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    await carrier.create_call(request("+12025550100", 1, theirs))
    assert await lookup(carrier, mine, [1], "+12025550100") is None
    assert carrier.dial_count(mine) == 0 and carrier.dial_count(theirs) == 1


async def test_the_ledger_outlives_the_provider_object(engine: Engine) -> None:
    """A worker crash loses the process, not the carrier's memory."""
    sid = str(uuid.uuid4())
    with pytest.raises(Ambiguous):
        await SimulatedProvider(DatabaseLedger(engine), latency_ms=0).create_call(
            request("+12025550105", 1, sid)
        )
    restarted = SimulatedProvider(DatabaseLedger(engine), latency_ms=0)
    assert restarted.dial_count(sid) == 1
    assert await lookup(restarted, sid, [1], "+12025550105") is not None


async def test_a_request_past_its_deadline_is_refused_on_arrival(engine: Engine) -> None:
    """The sender was stopped after sending (the request's send_by passed before the carrier
    acted on it): the carrier places nothing, as the workflow may already be dialing again."""
    slow = SimulatedProvider(DatabaseLedger(engine), latency_ms=300)
    late = replace(request("+12025550100", 1), send_by=time.time() + 0.1)
    with pytest.raises(NotPlaced) as info:
        await slow.create_call(late)
    assert info.value.code == "expired"
    assert slow.dial_count(late.call_session_id) == 0
    in_time = replace(request("+12025550100", 1), send_by=time.time() + 5)
    await slow.create_call(in_time)
    assert slow.dial_count(in_time.call_session_id) == 1


async def test_dial_count_counts_every_placed_call(carrier: SimulatedProvider) -> None:
    sid = str(uuid.uuid4())
    assert carrier.dial_count(sid) == 0
    await carrier.create_call(request("+12025550100", 1, sid))
    await carrier.create_call(request("+12025550100", 2, sid))
    # Two placed calls for one session is exactly what the safety tests must be able to see.
    assert carrier.dial_count(sid) == 2


async def test_fetch_call_reads_the_ledger(carrier: SimulatedProvider) -> None:
    call = await carrier.create_call(request("+12025550100", 1))
    fetched = await carrier.fetch_call(call.sid)
    assert fetched is not None and fetched.sid == call.sid
    assert await carrier.fetch_call("SMdoesnotexist") is None


async def _deliveries(engine: Engine, timeline: SimulatedTimeline, to: str) -> list[list[str]]:
    """The carrier's status deliveries for one call, each as its list of statuses."""
    deliveries: list[list[StatusEvent]] = []
    done = asyncio.Event()

    async def sink(events: Sequence[StatusEvent]) -> None:
        deliveries.append(list(events))
        if is_final(events[-1].status):
            done.set()

    carrier = SimulatedProvider(
        DatabaseLedger(engine), latency_ms=0, timeline=timeline, status_sink=sink
    )
    req = request(to, 1)
    call = await carrier.create_call(req)
    await asyncio.wait_for(done.wait(), 5)
    for events in deliveries:
        assert all(e.call_session_id == req.call_session_id and e.sid == call.sid for e in events)
    return [[e.status for e in events] for events in deliveries]


async def test_statuses_due_together_go_out_in_one_delivery(engine: Engine) -> None:
    """A carrier whose call is over at once reports the whole lifecycle in one delivery (one
    signal to the workflow, not four)."""
    instant = SimulatedTimeline(ring_seconds=0, answer_seconds=0, talk_seconds=0)
    assert await _deliveries(engine, instant, "+12025550100") == [
        ["initiated", "ringing", "answered", "completed"]
    ]
    assert await _deliveries(engine, instant, "+12025550101") == [["initiated", "ringing", "busy"]]


async def test_statuses_due_apart_go_out_apart_in_order(engine: Engine) -> None:
    spaced = SimulatedTimeline(ring_seconds=0.05, answer_seconds=0.05, talk_seconds=0)
    assert await _deliveries(engine, spaced, "+12025550100") == [
        ["initiated"],
        ["ringing"],
        ["answered", "completed"],
    ]
