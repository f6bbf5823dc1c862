"""The scenarios. Each measures Dialer and its baseline against the same server in the same
run, interleaving them by repetition so that the machine's noise hits both alike."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench.raw import AcceptedWorkflow, DialedWorkflow, ThroughputWorkflow, own_queue
from bench.stack import RAW_TASK_QUEUE, Stack
from store.models import CallSession, SimulatedCall

NUMBER = "+12025550100"
POLL_INTERVAL = 0.05
# Waiting for results of raw workflows: at most this many long polls at once.
RESULT_WAITERS = 200
# How long a canceled campaign's calls in flight may take to finish before the next scenario.
DRAIN_SECONDS = 300.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "n": len(ms),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median over repetitions."""
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


# --- one call of each kind ------------------------------------------------------------------


class Callers:
    """One request of each kind, timed; http clients with keep-alive, one Temporal client."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, plain: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = http
        self.plain = plain
        assert stack.client is not None
        self.client: Client = stack.client

    async def dialer(self, wait: str, allow_pending: bool = False) -> str:
        resp = await self.http.post(
            "/api/call/create_call",
            params={"phoneNumber": NUMBER, "wait": wait},
            headers=self.stack.headers,
        )
        body = resp.json()
        ok = ("success", "pending") if allow_pending else ("success",)
        if resp.status_code != 200 or body.get("status") not in ok:
            raise RuntimeError(f"create_call answered {resp.status_code}: {resp.text}")
        session_id: str = body["call_session_id"]  # JSON is Any
        return session_id

    async def warm_up(self, timeout: float = 120.0) -> None:
        """Until a call of each kind succeeds: the first workflow tasks of a cold worker
        (imports, sandbox) can take longer than create_call's wait budget."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.dialer("dialed")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
        await self.raw_dialed()
        await self.plain_call()

    async def plain_call(self) -> str:
        resp = await self.plain.post(
            "/call", params={"phoneNumber": NUMBER}, headers=self.stack.headers
        )
        if resp.status_code != 200:
            raise RuntimeError(f"plain answered {resp.status_code}: {resp.text}")
        session_id: str = resp.json()["call_session_id"]  # JSON is Any
        return session_id

    async def raw_update_with_start(self, workflow: Any, value: str = "") -> str:
        wid = f"raw-{uuid.uuid4()}"
        await self.client.execute_update_with_start_workflow(
            workflow.wait,
            wid,
            start_workflow_operation=WithStartWorkflowOperation(
                workflow.run,
                value,
                id=wid,
                task_queue=RAW_TASK_QUEUE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            ),
        )
        return wid

    async def raw_accepted(self) -> str:
        return await self.raw_update_with_start(AcceptedWorkflow)

    async def raw_dialed(self) -> str:
        return await self.raw_update_with_start(DialedWorkflow)

    async def raw_dialed_own_queue(self) -> str:
        return await self.raw_update_with_start(DialedWorkflow, own_queue(RAW_TASK_QUEUE))


async def timed_sequence(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def latency_pair(
    stack: Stack,
    name: str,
    dialer: Callable[[], Awaitable[Any]],
    baseline: Callable[[], Awaitable[Any]],
    n: int,
    reps: int,
    extra: dict[str, Callable[[], Awaitable[Any]]] | None = None,
) -> dict[str, Any]:
    """Sequential latency of Dialer and its baseline, `reps` repetitions of `n` calls each,
    alternating which goes first; the figures are medians over the repetitions."""
    kinds = {"dialer": dialer, "baseline": baseline, **(extra or {})}
    for call in kinds.values():  # warm-up: connections, caches, first workflow tasks
        await timed_sequence(call, min(10, n))
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    sampler = stack.sampler
    assert sampler is not None
    order = list(kinds)
    for rep in range(reps):
        for kind in order if rep % 2 == 0 else list(reversed(order)):
            before = sampler.cpu()
            timed = await timed_sequence(kinds[kind], n)
            runs[kind].append(summary_ms(timed))
            samples[kind] += [round(t * 1000, 2) for t in timed]
            after = sampler.cpu()
            # CPU per call of each process: far less noisy than latency on a shared machine.
            cpu[kind].append({p: round((after[p] - before[p]) * 1000 / n, 2) for p in after})
    result: dict[str, Any] = {"scenario": name, "n_per_rep": n, "reps": reps}
    for kind, values in runs.items():
        result[kind] = median_of(values)
        result[f"{kind}_reps"] = values
        # Every sample, for the latency distribution charts (bench/charts.py).
        result[f"{kind}_samples_ms"] = samples[kind]
        result[f"{kind}_cpu_ms_per_call"] = median_of(cpu[kind])
    return result


# --- throughput ---------------------------------------------------------------------------


async def _fan_out(total: int, concurrency: int, one: Callable[[], Awaitable[Any]]) -> list[Any]:
    """`total` calls of `one`, `concurrency` at a time (each slot calls again as it is done)."""
    left = total
    out: list[Any] = []

    async def slot() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            out.append(await one())

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return out


def _count_sessions(stack: Stack, engine: Any, ids: list[uuid.UUID]) -> tuple[int, int]:
    """(sessions recorded as success, of them the ones whose call ended)."""
    with Session(engine) as session:
        done = ended = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.exec(
                select(CallSession.status, CallSession.call_status, func.count())
                .where(col(CallSession.id).in_(chunk))
                .group_by(col(CallSession.status), col(CallSession.call_status))
            ).all()
            for status, call_status, count in rows:
                if status == "success":
                    done += count
                    if call_status == "completed":
                        ended += count
    return done, ended


async def wait_for_sessions(
    stack: Stack, engine: Any, ids: list[uuid.UUID], timeout: float
) -> tuple[float, float]:
    """Monotonic times at which every session was `success`, and every call had ended."""
    deadline = time.monotonic() + timeout
    all_success = None
    while time.monotonic() < deadline:
        done, ended = await asyncio.to_thread(_count_sessions, stack, engine, ids)
        now = time.monotonic()
        if all_success is None and done >= len(ids):
            all_success = now
        if ended >= len(ids):
            return all_success or now, now
        stack.check_alive()
        await asyncio.sleep(POLL_INTERVAL)
    raise TimeoutError(f"sessions not all done within {timeout:.0f}s: {done}/{len(ids)} success")


async def dialer_throughput(
    callers: Callers, engine: Any, n: int, concurrency: int
) -> dict[str, Any]:
    refused = 0

    async def one() -> str | None:
        nonlocal refused
        try:
            return await callers.dialer("accepted", allow_pending=True)
        except RuntimeError:
            # e.g. orchestrator_unavailable when the server sheds load: counted, not waited for
            refused += 1
            return None

    started = time.monotonic()
    ids = [i for i in await _fan_out(n, concurrency, one) if i is not None]
    submitted = time.monotonic()
    success_at, ended_at = await wait_for_sessions(
        callers.stack, engine, [uuid.UUID(i) for i in ids], timeout=max(120.0, n / 2)
    )
    return {
        "calls_per_second": round(len(ids) / (success_at - started), 2),
        "ended_calls_per_second": round(len(ids) / (ended_at - started), 2),
        "submit_seconds": round(submitted - started, 2),
        "refused": refused,
    }


async def raw_throughput(callers: Callers, n: int, concurrency: int) -> dict[str, Any]:
    client = callers.client

    async def start() -> Any:
        wid = f"raw-tp-{uuid.uuid4()}"
        return await client.start_workflow(
            ThroughputWorkflow.run, wid, id=wid, task_queue=RAW_TASK_QUEUE
        )

    started = time.monotonic()
    handles = await _fan_out(n, concurrency, start)
    submitted = time.monotonic()
    gate = asyncio.Semaphore(RESULT_WAITERS)

    async def result(handle: Any) -> None:
        async with gate:
            await handle.result()

    await asyncio.gather(*(result(h) for h in handles))
    done = time.monotonic()
    return {
        "calls_per_second": round(n / (done - started), 2),
        "submit_seconds": round(submitted - started, 2),
    }


async def throughput(
    callers: Callers, engine: Any, n: int, concurrencies: list[int], reps: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": "throughput", "n_per_rep": n, "reps": reps, "points": []}
    for concurrency in concurrencies:
        dialer_runs: list[dict[str, Any]] = []
        raw_runs: list[dict[str, Any]] = []
        for rep in range(reps):
            pair = [
                ("dialer", lambda c=concurrency: dialer_throughput(callers, engine, n, c)),
                ("raw", lambda c=concurrency: raw_throughput(callers, n, c)),
            ]
            for kind, run in pair if rep % 2 == 0 else list(reversed(pair)):
                (dialer_runs if kind == "dialer" else raw_runs).append(await run())
        out["points"].append(
            {
                "concurrency": concurrency,
                "dialer": median_of(dialer_runs),
                "baseline": median_of(raw_runs),
                "dialer_reps": dialer_runs,
                "baseline_reps": raw_runs,
            }
        )
    best_d = max(p["dialer"]["calls_per_second"] for p in out["points"])
    best_r = max(p["baseline"]["calls_per_second"] for p in out["points"])
    out["best"] = {"dialer": best_d, "baseline": best_r}
    return out


# --- campaigns ----------------------------------------------------------------------------


def campaign_numbers(count: int) -> list[str]:
    """Distinct, valid, non-magic US numbers (area codes 212, 312, 415, ...)."""
    numbers = []
    for area in (212, 312, 415, 617, 713, 305):
        for line in range(10_000):
            numbers.append(f"+1{area}555{line:04d}")
            if len(numbers) == count:
                return numbers
    raise ValueError("too many recipients asked for")


def _dial_times(engine: Any, campaign_id: str) -> list[datetime]:
    with Session(engine) as session:
        ids = select(CallSession.id).where(CallSession.campaign_id == uuid.UUID(campaign_id))
        rows = session.exec(
            select(SimulatedCall.created_at).where(col(SimulatedCall.session_id).in_(ids))
        ).all()
    return sorted(rows)


def _campaign_counts(engine: Any, campaign_id: str) -> tuple[int, int]:
    with Session(engine) as session:
        rows = session.exec(
            select(CallSession.status, func.count())
            .where(CallSession.campaign_id == uuid.UUID(campaign_id))
            .group_by(CallSession.status)
        ).all()
    counts = dict(rows)
    return counts.get("success", 0), sum(counts.values())


def per_second_counts(times: list[datetime], start: datetime | None = None) -> list[int]:
    """Dials in each whole second from `start` (default the first dial) to the last dial."""
    if not times:
        return []
    origin = (start or min(times)).timestamp()
    counts: list[int] = []
    for t in times:
        at = math.floor(t.timestamp() - origin)
        if at < 0:
            continue
        if at >= len(counts):
            counts += [0] * (at + 1 - len(counts))
        counts[at] += 1
    return counts


def window_stats(times: list[datetime]) -> dict[str, float]:
    """Rate of the dials from first to last, and the most dials in any one-second window."""
    secs = [t.timestamp() for t in times]
    worst, j = 0, 0
    for i in range(len(secs)):
        while secs[i] - secs[j] >= 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    span = secs[-1] - secs[0] if len(secs) > 1 else 0.0
    return {
        "dials": len(secs),
        "dial_rate": round((len(secs) - 1) / span, 2) if span else 0.0,
        "worst_one_second_window": worst,
    }


async def run_campaign(
    callers: Callers,
    engine: Any,
    size: int,
    calls_per_second: float,
    max_concurrency: int,
    budget: float = 600.0,
) -> dict[str, Any]:
    body = {
        "batch_name": f"bench {size} at {calls_per_second}/s",
        "agent_id": callers.stack.agent_id,
        "recipients": [{"phone_number": n} for n in campaign_numbers(size)],
        "options": {"calls_per_second": calls_per_second, "max_concurrency": max_concurrency},
    }
    started = time.monotonic()
    resp = await callers.http.post(
        "/api/v1/batch-call/create", json=body, headers=callers.stack.headers, timeout=300
    )
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"batch-call/create answered {resp.status_code}: {resp.text[:500]}")
    campaign_id = resp.json()["campaign"]["id"]
    created = time.monotonic()
    deadline = created + budget
    complete = True
    while True:
        success, total = await asyncio.to_thread(_campaign_counts, engine, campaign_id)
        if success >= size:
            break
        if time.monotonic() > deadline:
            # Out of time on a slow machine: the rate so far is the figure; cancel the rest so
            # that it does not load the next scenarios.
            complete = False
            await callers.http.post(
                f"/api/v1/batch-call/{campaign_id}/cancel", headers=callers.stack.headers
            )
            break
        callers.stack.check_alive()
        await asyncio.sleep(0.2)
    done = time.monotonic()
    times = await asyncio.to_thread(_dial_times, engine, campaign_id)
    stats = window_stats(times)
    if not complete:
        # Calls already started still finish after a cancel: let them, before the next
        # scenario (not counted in this one's figures, which are taken above).
        drained = await _wait_finished(callers, campaign_id, DRAIN_SECONDS)
    return {
        "recipients": size,
        "calls_per_second_option": calls_per_second,
        "max_concurrency": max_concurrency,
        "complete": complete,
        "succeeded": success,
        "create_seconds": round(created - started, 2),
        # From the request until every recipient's session is `success`, creation included
        # (or until the time budget ran out: the calls that succeeded by then).
        "calls_per_second": round(success / (done - started), 2),
        "calls_per_second_after_create": round(success / (done - created), 2),
        **({} if complete else {"drained_before_next_scenario": drained}),
        **stats,
        # Dials in each second from the first (the ledger), for the chart of the pacing.
        "dials_per_second": per_second_counts(times),
    }


async def _wait_finished(callers: Callers, campaign_id: str, timeout: float) -> bool:
    """Until the campaign reports finished_at (no call of it in flight); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await callers.http.get(
            f"/api/v1/batch-call/{campaign_id}/status", headers=callers.stack.headers
        )
        if resp.status_code == 200 and resp.json().get("finished_at"):
            return True
        await asyncio.sleep(1.0)
    return False


# --- sustained load -----------------------------------------------------------------------


async def sustained(
    callers: Callers, seconds: float, concurrency: int, settle: float = 5.0
) -> dict[str, Any]:
    """create_call (wait=accepted) at `concurrency` for `seconds`; resident memory of the API
    and the worker just before, and after the load (once the calls have ended)."""
    sampler = callers.stack.sampler
    assert sampler is not None
    before = sampler.now()
    sampler.reset()
    stop_at = time.monotonic() + seconds
    count = 0

    refused = 0

    async def slot() -> None:
        nonlocal count, refused
        while time.monotonic() < stop_at:
            try:
                await callers.dialer("accepted", allow_pending=True)
                count += 1
            except RuntimeError:
                refused += 1

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    await asyncio.sleep(settle)
    after = sampler.now()
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "calls": count,
        "refused": refused,
        "calls_per_second": round(count / seconds, 2),
        "rss_before_mb": {k: round(v / 2**20, 1) for k, v in before.items()},
        "rss_after_mb": {k: round(v / 2**20, 1) for k, v in after.items()},
        "rss_growth": {k: round(after[k] / before[k] - 1, 4) for k in before if k in after},
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sampler.peaks().items()},
    }


def _seed_recipients(engine: Any, agent_id: str, size: int) -> str:
    """A campaign of `size` recipients straight into the database, each with one finished-
    looking attempt (so the export looks its calls up), never started: its start_at is far
    ahead and no workflow runs it."""
    from sqlalchemy import update

    from core.ids import campaign_call_ids
    from store import campaigns as store
    from store.db import session_scope
    from store.models import Agent, CampaignRecipient

    with Session(engine) as session:
        agent = session.get(Agent, uuid.UUID(agent_id))
        assert agent is not None
        user_id = agent.user_id
    spec = store.CampaignSpec(
        user_id=user_id,
        name="recipients csv bench",
        agent_id=agent.id,
        flow_id=None,
        phone_number_id=None,
        calls_per_second=1.0,
        max_concurrency=1,
        default_timezone="UTC",
        start_at=datetime(2099, 1, 1),
    )
    areas = (212, 312, 415, 617, 713, 305, 206, 303, 404, 503, 602, 702)
    numbers = (f"+1{area}555{line:04d}" for area in areas for line in range(10_000))
    rows = (
        store.RecipientRow(row_number=i, phone_number=n, external_id=f"=ext{i}")
        for i, n in zip(range(1, size + 1), numbers, strict=False)
    )
    campaign = store.create_campaign(engine, spec, rows, "US").campaign
    with session_scope(engine) as session:
        ids = session.exec(
            select(CampaignRecipient.id).where(CampaignRecipient.campaign_id == campaign.id)
        ).all()
        for start in range(0, len(ids), 1000):
            session.execute(  # ORM bulk update by primary key
                update(CampaignRecipient),
                [
                    {
                        "id": rid,
                        "attempts": 1,
                        "state": "completed",
                        "call_session_id": uuid.UUID(campaign_call_ids(campaign.id, rid, 1)[0]),
                    }
                    for rid in ids[start : start + 1000]
                ],
            )
    return str(campaign.id)


async def recipients_csv(callers: Callers, engine: Any, size: int) -> dict[str, Any]:
    """GET .../recipients.csv of a `size`-recipient campaign, streamed to the end: the API's
    peak RSS during the download against its idle RSS just before, and the time."""
    stack = callers.stack
    sampler = stack.sampler
    assert sampler is not None
    seed_began = time.monotonic()
    campaign_id = await asyncio.to_thread(_seed_recipients, engine, stack.agent_id, size)
    seeded = time.monotonic() - seed_began
    await asyncio.sleep(2.0)
    idle = sampler.now()["api"]
    sampler.reset()
    began = time.monotonic()
    first_byte: float | None = None
    size_bytes = lines = 0
    async with callers.http.stream(
        "GET",
        f"/api/v1/batch-call/{campaign_id}/recipients.csv",
        headers=stack.headers,
        timeout=600,
    ) as resp:
        assert resp.status_code == 200, resp.status_code
        async for chunk in resp.aiter_bytes():
            if first_byte is None:
                first_byte = time.monotonic() - began
            size_bytes += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.monotonic() - began
    peak = max(sampler.peaks().get("api", 0), sampler.now()["api"])
    assert lines == size + 1, (lines, size)  # the header and one line per recipient
    return {
        "recipients": size,
        "seed_seconds": round(seeded, 1),
        "seconds": round(seconds, 2),
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "rows_per_second": round(size / seconds, 1),
        "megabytes": round(size_bytes / 2**20, 2),
        "api_idle_rss_mb": round(idle / 2**20, 1),
        "api_peak_rss_mb": round(peak / 2**20, 1),
        "api_rss_growth_mb": round((peak - idle) / 2**20, 1),
    }
