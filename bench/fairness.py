"""`fairness` (issue 17): user A's 10,000-recipient campaign at full speed saturates a 20/s
dial cap while user B places single calls (`wait=dialed`); B's latency against B alone on the
idle stack, and each user's dials per second from the carrier's ledger. Run once per dev server
matching variant (bench.stack.MATCHING_VARIANTS), each on a stack of its own."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select

from bench.live import epoch, print_progress
from bench.scenarios import campaign_numbers, percentile
from bench.stack import BenchUser, Stack
from store.models import CallSession, SimulatedCall

CAP = 20.0
B_NUMBER = "+12025550100"
CAMPAIGN_RATE = 100  # the API's highest calls_per_second: A at full speed
CAMPAIGN_CONCURRENCY = 1000
# A's backlog counts as saturated once this many of its calls wait for their dial.
SATURATED_BACKLOG = 2 * int(CAP)
SATURATE_TIMEOUT = 120.0
DRAIN_SECONDS = 600.0


@dataclass
class Placed:
    session_id: str | None
    sent_at: datetime  # wall clock, UTC: compared with the ledger's placing time
    answer_seconds: float
    status: str


async def _one(http: httpx.AsyncClient, user: BenchUser) -> Placed:
    sent_at = datetime.now(UTC)
    began = time.perf_counter()
    try:
        resp = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": B_NUMBER, "wait": "dialed"},
            headers=user.headers,
        )
        body = resp.json() if resp.status_code == 200 else {}
        status = str(body.get("status", f"http {resp.status_code}"))
        session_id = body.get("call_session_id")
    except httpx.HTTPError as exc:
        status, session_id = type(exc).__name__, None
    return Placed(session_id, sent_at, time.perf_counter() - began, status)


async def open_loop(
    http: httpx.AsyncClient, user: BenchUser, rate: float, seconds: float
) -> list[Placed]:
    """One call every 1/rate seconds for `seconds`, each awaited on its own: B's calls go out
    on time however long the earlier ones wait for their dial."""
    tasks: list[asyncio.Task[Placed]] = []
    began = time.monotonic()
    i = 0
    while (at := began + i / rate) < began + seconds:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tasks.append(asyncio.create_task(_one(http, user)))
        i += 1
    return list(await asyncio.gather(*tasks))


def dial_delays(placed: list[Placed], dialed_at: dict[str, datetime]) -> list[float]:
    """Seconds from each request to its call's placing at the carrier (the ledger)."""
    out = []
    for p in placed:
        if p.session_id and p.session_id in dialed_at:
            out.append(epoch(dialed_at[p.session_id]) - p.sent_at.timestamp())
    return out


def latency_summary(seconds: list[float]) -> dict[str, float | int | None]:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"p50": None, "p99": None, "n": 0}
    return {"p50": round(percentile(ms, 50), 1), "p99": round(percentile(ms, 99), 1), "n": len(ms)}


def shares(
    dials: list[tuple[str, datetime]], start: float, end: float, users: dict[str, str]
) -> dict[str, float]:
    """Dials per second of each named user (users: user id -> name) within [start, end)."""
    span = end - start
    counts = dict.fromkeys(users.values(), 0)
    for user_id, at in dials:
        t = epoch(at)
        if start <= t < end and user_id in users:
            counts[users[user_id]] += 1
    return {name: round(c / span, 2) if span > 0 else 0.0 for name, c in counts.items()}


def per_second_by_user(
    dials: list[tuple[str, datetime]], start: float, end: float, users: dict[str, str]
) -> dict[str, list[int]]:
    seconds = max(0, int(end - start))
    out = {name: [0] * seconds for name in users.values()}
    for user_id, at in dials:
        i = math.floor(epoch(at) - start)
        if 0 <= i < seconds and user_id in users:
            out[users[user_id]][i] += 1
    return out


def _dials(engine: Any, user_ids: list[str]) -> list[tuple[str, datetime]]:
    """(user id, placing time) of every call these users' sessions placed."""
    with Session(engine) as session:
        rows = session.exec(
            select(CallSession.user_id, SimulatedCall.created_at)
            .join(CallSession, col(CallSession.id) == col(SimulatedCall.session_id))
            .where(col(CallSession.user_id).in_([uuid.UUID(u) for u in user_ids]))
        ).all()
    return [(str(u), at) for u, at in rows]


def _dialed_at(engine: Any, session_ids: list[str]) -> dict[str, datetime]:
    ids = [uuid.UUID(s) for s in session_ids]
    out: dict[str, datetime] = {}
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            for sid, at in session.exec(
                select(SimulatedCall.session_id, func.min(SimulatedCall.created_at))
                .where(col(SimulatedCall.session_id).in_(ids[start : start + 500]))
                .group_by(col(SimulatedCall.session_id))
            ).all():
                out[str(sid)] = at
    return out


def _backlog(engine: Any, campaign_id: str) -> int:
    """A's calls started and not yet dialed."""
    cid = uuid.UUID(campaign_id)
    with Session(engine) as session:
        started = session.exec(select(func.count()).where(CallSession.campaign_id == cid)).one()
        dialed = session.exec(
            select(func.count(func.distinct(SimulatedCall.session_id)))
            .join(CallSession, col(CallSession.id) == col(SimulatedCall.session_id))
            .where(CallSession.campaign_id == cid)
        ).one()
    return int(started) - int(dialed)


async def _wait_finished(
    http: httpx.AsyncClient, user: BenchUser, campaign_id: str, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await http.get(f"/api/v1/batch-call/{campaign_id}/status", headers=user.headers)
        if resp.status_code == 200 and resp.json().get("finished_at"):
            return True
        await asyncio.sleep(1.0)
    return False


async def fairness(
    stack: Stack,
    engine: Any,
    a: BenchUser,
    b: BenchUser,
    *,
    campaign_size: int,
    window: float,
    b_rate: float,
    alone_seconds: float,
    campaign_rate: float = CAMPAIGN_RATE,
) -> dict[str, Any]:
    write = print_progress
    users = {a.user_id: "A", b.user_id: "B"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as http:
        await open_loop(http, b, b_rate, min(3.0, alone_seconds))  # warm-up
        alone = await open_loop(http, b, b_rate, alone_seconds)
        body = {
            "batch_name": f"fairness: A's {campaign_size} at {campaign_rate:g}/s",
            "agent_id": a.agent_id,
            "recipients": [{"phone_number": n} for n in campaign_numbers(campaign_size)],
            "options": {
                "calls_per_second": campaign_rate,
                "max_concurrency": CAMPAIGN_CONCURRENCY,
            },
        }
        created = time.monotonic()
        resp = await http.post(
            "/api/v1/batch-call/create", json=body, headers=a.headers, timeout=600
        )
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"batch-call/create answered {resp.status_code}: {resp.text[:300]}")
        campaign_id = resp.json()["campaign"]["id"]
        create_seconds = time.monotonic() - created
        deadline = time.monotonic() + SATURATE_TIMEOUT
        while (backlog := await asyncio.to_thread(_backlog, engine, campaign_id)) < (
            SATURATED_BACKLOG
        ) and time.monotonic() < deadline:
            stack.check_alive()
            await asyncio.sleep(0.5)
        write(f"    A's backlog {backlog} calls; B for {window:.0f} s\n")
        window_start = time.time()
        sending = asyncio.create_task(open_loop(http, b, b_rate, window))
        # The window is while B sends (both users ask then), not until B's last answer.
        await asyncio.sleep(window)
        window_end = time.time()
        backlog_end = await asyncio.to_thread(_backlog, engine, campaign_id)
        loaded = await sending
        await http.post(f"/api/v1/batch-call/{campaign_id}/cancel", headers=a.headers)
        drained = await _wait_finished(http, a, campaign_id, DRAIN_SECONDS)
    # B's calls answered pending still dial: give the last of them a moment after the drain.
    await asyncio.sleep(2.0)
    b_ids = [p.session_id for p in alone + loaded if p.session_id]
    dialed_at = await asyncio.to_thread(_dialed_at, engine, b_ids)
    dials = await asyncio.to_thread(_dials, engine, [a.user_id, b.user_id])
    # The window B's open loop spans, less the last calls' own wait, is when both users ask.
    share = shares(dials, window_start, window_end, users)
    return {
        "cap": CAP,
        "campaign_size": campaign_size,
        "campaign_calls_per_second": campaign_rate,
        "campaign_create_seconds": round(create_seconds, 1),
        "window_seconds": round(window_end - window_start, 1),
        "b_rate": b_rate,
        "a_backlog_at_start": backlog,
        "a_backlog_at_end": backlog_end,
        "drained": drained,
        "b_alone": {
            "answer_ms": latency_summary([p.answer_seconds for p in alone]),
            "dial_ms": latency_summary(dial_delays(alone, dialed_at)),
            "not_success": sum(1 for p in alone if p.status != "success"),
        },
        "b_loaded": {
            "answer_ms": latency_summary([p.answer_seconds for p in loaded]),
            "dial_ms": latency_summary(dial_delays(loaded, dialed_at)),
            "not_success": sum(1 for p in loaded if p.status != "success"),
            "never_dialed": sum(1 for p in loaded if p.session_id not in dialed_at),
        },
        "dials_per_second": share,
        "share_of_cap": {k: round(v / CAP, 3) for k, v in share.items()},
        "dials_per_second_series": per_second_by_user(
            dials, window_start - 10, window_end + 10, users
        ),
        "series_starts_before_window": 10,
    }
