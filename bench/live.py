"""`live_calls` (issue 18): N calls whose simulated talk time holds them all open at once, then
their ends; what holding a live call costs, against the same stack idle."""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select

from bench import promtext
from bench.scenarios import summary_ms
from bench.stack import Stack
from contracts.lifecycle import FINAL
from store.models import CallSession, SimulatedCall

NUMBER = "+12025550100"
# Warm-up calls before the idle readings: the simulated carrier's busy number, whose calls end
# at once (ring and answer take no time here), so none is live while the others are measured.
WARM_UP_NUMBER = "+12025550101"
WARM_UP_CALLS = 20
CONCURRENCY = 16
IDLE_SECONDS = 10.0
# After the last dial, before the quiet window opens (the last calls' first tasks settle), and
# before the first end, when it closes.
SETTLE_SECONDS = 5.0
PROCESSES = ("worker", "api", "temporal")
# create_call wait=accepted, one at a time, to the busy number (its calls end at once): on the
# idle stack, and again with the N calls live (just after the quiet window, before the first
# end), so the table says what holding them costs a new call's answer.
LATENCY_PROBES = 30


def default_talk_seconds(n: int, full: bool = False) -> float:
    """Long enough that all `n` are live together for a while: 60 + n/4 s (500: 185 s, all
    live for two minutes if placed at 7.7 calls/s or faster); for `--full`, 60 + n/3 (10,000:
    3,393 s, two minutes all live if placed at 3.1/s or faster: a loaded machine placed 1,500
    live calls at 6.4/s)."""
    return 60.0 + n / (3 if full else 4)


def live_counts(
    intervals: Sequence[tuple[float, float | None]], times: Sequence[float]
) -> list[int]:
    """How many of the (dialed, ended) intervals are live at each time (ended None: still):
    those begun by then less those ended by then."""
    starts = sorted(a for a, _ in intervals)
    ends = sorted(b for _, b in intervals if b is not None)
    return [bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t) for t in times]


def sample_seconds(talk_seconds: float) -> float:
    """The RSS and CPU series' interval: a second, or longer for a long talk (at most about
    2,000 points for the charts and the JSON)."""
    return max(1.0, round(talk_seconds / 1000, 1))


def per_live_call_minute(amount: float, calls: int, seconds: float) -> float | None:
    """`amount` per live call-minute over `seconds` with `calls` live throughout."""
    if calls <= 0 or seconds <= 0:
        return None
    return amount / (calls * seconds / 60)


def net_cpu(
    before: dict[str, float], after: dict[str, float], idle_rate: dict[str, float], seconds: float
) -> dict[str, float]:
    """CPU seconds each process used between two readings, minus what it uses idle."""
    return {
        p: max(0.0, after[p] - before[p] - idle_rate.get(p, 0.0) * seconds)
        for p in after
        if p in before
    }


def _ledger(engine: Any, ids: list[uuid.UUID]) -> dict[str, Any]:
    """Dials per session, sessions not final, and each call's (dialed, ended) times."""
    dials: dict[uuid.UUID, int] = {}
    first_dial: dict[uuid.UUID, datetime] = {}
    ended: dict[uuid.UUID, datetime | None] = {}
    not_final = 0
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for sid, count, first in session.exec(
                select(
                    SimulatedCall.session_id,
                    func.count(),
                    func.min(SimulatedCall.created_at),
                )
                .where(col(SimulatedCall.session_id).in_(chunk))
                .group_by(col(SimulatedCall.session_id))
            ).all():
                dials[sid] = count
                first_dial[sid] = first
            for sid, call_status, ended_at in session.exec(
                select(CallSession.id, CallSession.call_status, CallSession.ended_at).where(
                    col(CallSession.id).in_(chunk)
                )
            ).all():
                ended[sid] = ended_at
                if call_status not in FINAL or ended_at is None:
                    not_final += 1
    return {"dials": dials, "first_dial": first_dial, "ended": ended, "not_final": not_final}


def _counts(engine: Any, ids: list[uuid.UUID]) -> tuple[int, int]:
    """(sessions dialed, sessions whose call ended)."""
    dialed = ended = 0
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            dialed += session.exec(
                select(func.count(func.distinct(SimulatedCall.session_id))).where(
                    col(SimulatedCall.session_id).in_(chunk)
                )
            ).one()
            ended += session.exec(
                select(func.count()).where(
                    col(CallSession.id).in_(chunk),
                    col(CallSession.call_status).in_(list(FINAL)),
                )
            ).one()
    return dialed, ended


def _mb(values: dict[str, int]) -> dict[str, float]:
    return {k: round(v / 2**20, 1) for k, v in values.items()}


async def live_calls(stack: Stack, engine: Any, n: int, talk_seconds: float) -> dict[str, Any]:
    sampler = stack.sampler
    assert sampler is not None
    write = print_progress
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:
        for _ in range(WARM_UP_CALLS):
            await http.post(
                "/api/call/create_call",
                params={"phoneNumber": WARM_UP_NUMBER, "wait": "dialed"},
                headers=stack.headers,
            )
    # The stack idle, warm: resident memory, CPU per second, the worker's metrics.
    await asyncio.sleep(SETTLE_SECONDS)
    idle_rss = sampler.now()
    cpu0, t0 = sampler.cpu(), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    cpu1, t1 = sampler.cpu(), time.monotonic()
    idle_rate = {p: (cpu1[p] - cpu0[p]) / (t1 - t0) for p in cpu1 if p in cpu0}
    idle_latency = await accepted_latency(stack)
    m_start = await promtext.scrape(stack.metrics_url)

    series: list[dict[str, Any]] = []
    began_wall = time.time()
    stop = asyncio.Event()
    interval = sample_seconds(talk_seconds)

    async def sample() -> None:
        while not stop.is_set():
            series.append(
                {
                    "t": round(time.time() - began_wall, 2),
                    "rss_mb": _mb(sampler.now()),
                    "cpu_s": {k: round(v, 3) for k, v in sampler.cpu().items()},
                }
            )
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    sampling = asyncio.create_task(sample())
    ids: list[uuid.UUID] = []
    refused = 0
    left = n
    place_began = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:

        async def slot() -> None:
            nonlocal left, refused
            while left > 0:
                left -= 1
                resp = await http.post(
                    "/api/call/create_call",
                    params={"phoneNumber": NUMBER, "wait": "accepted"},
                    headers=stack.headers,
                )
                body = resp.json() if resp.status_code == 200 else {}
                if body.get("status") in ("success", "pending"):
                    ids.append(uuid.UUID(body["call_session_id"]))
                else:
                    refused += 1

        await asyncio.gather(*(slot() for _ in range(CONCURRENCY)))
    placed = time.monotonic()
    write(f"  live_calls: {len(ids)} placed in {placed - place_began:.0f} s\n")
    # Every call dialed: the quiet window runs from then (settled) until just before the first
    # call is due to end.
    deadline = placed + 600
    while True:
        dialed, ended = await asyncio.to_thread(_counts, engine, ids)
        if dialed >= len(ids) or time.monotonic() > deadline:
            break
        stack.check_alive()
        await asyncio.sleep(1.0)
    all_dialed = time.monotonic()
    write(f"  live_calls: {dialed} dialed, {ended} ended; talk {talk_seconds:.0f} s\n")
    first = await asyncio.to_thread(_first_dial, engine, ids)
    first_end_mono = all_dialed + (first + talk_seconds - time.time())
    quiet_from = all_dialed + SETTLE_SECONDS
    quiet_to = first_end_mono - SETTLE_SECONDS
    quiet: dict[str, Any] = {"seconds": round(max(0.0, quiet_to - quiet_from), 1)}
    if quiet_to - quiet_from >= 10:
        await asyncio.sleep(max(0.0, quiet_from - time.monotonic()))
        q_cpu0, q_t0 = sampler.cpu(), time.monotonic()
        q_m0 = await promtext.scrape(stack.metrics_url)
        await asyncio.sleep(max(0.0, quiet_to - time.monotonic()))
        q_cpu1, q_t1 = sampler.cpu(), time.monotonic()
        q_m1 = await promtext.scrape(stack.metrics_url)
        live_rss = sampler.now()
        secs = q_t1 - q_t0
        calls = len(ids)
        cpu = net_cpu(q_cpu0, q_cpu1, idle_rate, secs)
        window = promtext.delta(q_m1, q_m0)
        requests = promtext.provider_requests(window)
        # Still every call live: the first ends SETTLE_SECONDS from now.
        quiet["accepted_latency_ms"] = await accepted_latency(stack)
        quiet.update(
            {
                "seconds": round(secs, 1),
                "live_calls": calls,
                "rss_live_mb": _mb(live_rss),
                "rss_kb_per_live_call": {
                    p: round((live_rss[p] - idle_rss[p]) / 1024 / calls, 1)
                    for p in PROCESSES
                    if p in live_rss and p in idle_rss
                },
                "cpu_ms_per_live_call_minute": {
                    p: round((per_live_call_minute(cpu[p] * 1000, calls, secs) or 0.0), 3)
                    for p in PROCESSES
                    if p in cpu
                },
                "provider_requests": requests,
                "provider_requests_per_live_call_minute": round(
                    per_live_call_minute(requests, calls, secs) or 0.0, 4
                ),
                "activities": promtext.activity_counts(window),
                "workflow_tasks": promtext.workflow_tasks(window),
                "sticky_cache_size": q_m1.total("temporal_sticky_cache_size"),
            }
        )
    # Then every call ends.
    deadline = time.monotonic() + talk_seconds + 900
    while True:
        dialed, ended = await asyncio.to_thread(_counts, engine, ids)
        if ended >= len(ids) or time.monotonic() > deadline:
            break
        stack.check_alive()
        await asyncio.sleep(2.0)
    all_ended = time.monotonic()
    await asyncio.sleep(SETTLE_SECONDS)
    stop.set()
    await sampling
    m_end = await promtext.scrape(stack.metrics_url)
    after_rss = sampler.now()
    ledger = await asyncio.to_thread(_ledger, engine, ids)
    whole = promtext.delta(m_end, m_start)
    dials = ledger["dials"]
    intervals = [
        (
            epoch(ledger["first_dial"][s]) - began_wall,
            (epoch(ledger["ended"][s]) - began_wall) if ledger["ended"].get(s) else None,
        )
        for s in ids
        if s in ledger["first_dial"]
    ]
    counts = live_counts(intervals, [p["t"] for p in series])
    for point, live in zip(series, counts, strict=True):
        point["live"] = live
    last_dial = max((a for a, _ in intervals), default=0.0)
    first_end = min((b for _, b in intervals if b is not None), default=0.0)
    activities = promtext.activity_counts(whole)
    return {
        "calls": n,
        "placed": len(ids),
        "refused": refused,
        "talk_seconds": talk_seconds,
        "place_seconds": round(placed - place_began, 1),
        "place_calls_per_second": round(len(ids) / (placed - place_began), 2),
        "dial_seconds": round(all_dialed - place_began, 1),
        "end_seconds": round(all_ended - place_began, 1),
        "all_live_together_seconds": round(first_end - last_dial, 1),
        "peak_live": max(counts, default=0),
        "rss_idle_mb": _mb(idle_rss),
        "rss_after_mb": _mb(after_rss),
        "idle_cpu_cores": {k: round(v, 4) for k, v in idle_rate.items()},
        "idle_accepted_latency_ms": idle_latency,
        "quiet": quiet,
        "whole_run": {
            "activities": activities,
            "provider_requests_per_call": round(
                promtext.provider_requests(whole) / max(1, len(ids)), 3
            ),
            "workflow_tasks": promtext.workflow_tasks(whole),
        },
        "check": {
            "sessions_without_dial": len(ids) - len(dials),
            "sessions_with_more_than_one_dial": sum(1 for c in dials.values() if c > 1),
            "sessions_not_final": ledger["not_final"],
            "one_dial_each_all_ended": len(dials) == len(ids)
            and all(c == 1 for c in dials.values())
            and ledger["not_final"] == 0
            and len(ids) == n,
        },
        "series": series,
    }


async def accepted_latency(stack: Stack, count: int = LATENCY_PROBES) -> dict[str, float]:
    """p50 / p90 / p99 (ms) of create_call wait=accepted, sent one at a time."""
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:
        for _ in range(count):
            began = time.perf_counter()
            resp = await http.post(
                "/api/call/create_call",
                params={"phoneNumber": WARM_UP_NUMBER, "wait": "accepted"},
                headers=stack.headers,
            )
            resp.raise_for_status()
            samples.append(time.perf_counter() - began)
    return summary_ms(samples)


def _first_dial(engine: Any, ids: list[uuid.UUID]) -> float:
    """Epoch seconds of the earliest dial of these sessions."""
    with Session(engine) as session:
        earliest: datetime | None = None
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            at = session.exec(
                select(func.min(SimulatedCall.created_at)).where(
                    col(SimulatedCall.session_id).in_(chunk)
                )
            ).one()
            if at is not None and (earliest is None or at < earliest):
                earliest = at
    return time.time() if earliest is None else epoch(earliest)


def epoch(at: datetime) -> float:
    """Epoch seconds of a database time (naive ones are UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def print_progress(text: str) -> None:
    import sys

    sys.stdout.write(text)
    sys.stdout.flush()
