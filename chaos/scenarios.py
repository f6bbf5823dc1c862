"""The scenarios. Each starts its own stack in a temporary directory, sends create_call load
with one Idempotency-Key per call (so a client may retry safely), injects its fault, repairs
it, waits for every session to reach a terminal state (bounded), and counts from the database
and the simulated carrier's ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from chaos.procs import SECRET, Postgres, Stack, wait_for
from contracts.calls import TERMINAL, Stage
from services.calls import CallRequest, ids_for
from store import crud
from store.db import make_engine, session_scope
from store.models import CallSession, PhoneNumber, SimulatedCall

CREATE_CALL = "/api/call/create_call"
# Numbers whose every path ends in a terminal state with at most one dial (README table).
MIX = ["+12025550100", "+12025550101", "+12025550102", "+12025550104", "+12025550105"]
SETTLE_SECONDS = 180.0


@dataclass
class Row:
    scenario: str
    requested: int = 0
    terminal: int = 0
    lost: int = 0
    second_dials: int = 0
    http_5xx: int = 0
    documented_503: int = 0
    recover_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.second_dials == 0 and self.http_5xx == 0


@dataclass
class Account:
    user_id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


def make_account(engine: Engine) -> Account:
    user = crud.create_user(engine=engine, email=f"chaos-{uuid.uuid4().hex[:8]}@example.test")
    key = crud.create_key(engine=engine, user=user, secret=SECRET)
    with session_scope(engine) as session:
        session.add(PhoneNumber(user_id=user.id, number="+12025550199", label="chaos line"))
    return Account(user_id=user.id, key=key)


class Load:
    """create_call requests with retries on what a careful client retries: connection errors,
    5xx and 503 (after its Retry-After, capped), always with the same Idempotency-Key."""

    def __init__(self, base_url: str, account: Account, row: Row, *, wait: str = "accepted"):
        self.base_url = base_url
        self.account = account
        self.row = row
        self.wait = wait
        self.keys: list[tuple[str, str]] = []  # (idempotency key, number)

    async def call(self, client: httpx.AsyncClient, key: str, number: str) -> dict[str, Any] | None:
        self.keys.append((key, number))
        headers = {**self.account.headers, "Idempotency-Key": key}
        params = {"phoneNumber": number, "wait": self.wait}
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            try:
                resp = await client.post(CREATE_CALL, params=params, headers=headers)
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
                continue
            if resp.status_code == 200:
                answer: dict[str, Any] = resp.json()
                return answer
            if resp.status_code == 503 and "Retry-After" in resp.headers:
                self.row.documented_503 += 1
                await asyncio.sleep(min(1.0, float(resp.headers["Retry-After"])))
                continue
            if resp.status_code >= 500:
                self.row.http_5xx += 1
                await asyncio.sleep(0.3)
                continue
            self.row.notes.append(f"unexpected HTTP {resp.status_code}: {resp.text[:120]}")
            return None
        self.row.notes.append("a request never got an answer")
        return None

    async def run(
        self, prefix: str, count: int, rate: float, concurrency: int = 20
    ) -> list[dict[str, Any] | None]:
        """`count` calls started at `rate` per second, at most `concurrency` at once."""
        gate = asyncio.Semaphore(concurrency)
        timeout = httpx.Timeout(30.0, connect=2.0)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits) as c:

            async def one(i: int) -> dict[str, Any] | None:
                await asyncio.sleep(i / rate)
                async with gate:
                    return await self.call(c, f"{prefix}-{i}", MIX[i % len(MIX)])

            return await asyncio.gather(*(one(i) for i in range(count)))


async def probe_recovery(load: Load, started: float) -> float:
    """Seconds from `started` (the repair) until a fresh call is dialed again end to end."""
    n = 0
    async with httpx.AsyncClient(base_url=load.base_url, timeout=httpx.Timeout(30.0)) as client:
        while time.monotonic() - started < SETTLE_SECONDS:
            n += 1
            body = await load.call(client, f"probe-{uuid.uuid4().hex[:8]}-{n}", MIX[0])
            if body and body["status"] == "success" and body["telephony_leg_id"]:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
    raise RuntimeError("the stack did not recover")


def session_ids(account: Account, keys: list[tuple[str, str]]) -> list[uuid.UUID]:
    ids = []
    for key, number in keys:
        req = CallRequest(account.user_id, number, None, None, None, Stage.ACCEPTED, key)
        ids.append(ids_for(req)[0])
    return ids


def count(engine: Engine, ids: list[uuid.UUID], row: Row) -> None:
    """Wait (bounded) for every session to be terminal, then count from the database."""
    unique = list(dict.fromkeys(ids))

    def terminal() -> int:
        with Session(engine) as session:
            return session.exec(
                select(func.count())
                .select_from(CallSession)
                .where(col(CallSession.id).in_(unique), col(CallSession.status).in_(TERMINAL))
            ).one()

    try:
        wait_for("every session terminal", lambda: terminal() == len(unique), SETTLE_SECONDS)
    except RuntimeError as exc:
        row.notes.append(str(exc))
    row.requested = len(unique)
    row.terminal = terminal()
    row.lost = row.requested - row.terminal
    if row.lost:
        # Say what the unfinished ones are doing: slow (attempts, a status) or missing.
        with Session(engine) as session:
            open_rows = session.exec(
                select(CallSession).where(
                    col(CallSession.id).in_(unique), col(CallSession.status).not_in(TERMINAL)
                )
            ).all()
        states = [f"{r.status}/attempts={r.attempts}" for r in open_rows]
        row.notes.append(f"not terminal: {states}; without a row: {row.lost - len(open_rows)}")
    with Session(engine) as session:
        dials = session.exec(
            select(SimulatedCall.session_id, func.count())
            .where(col(SimulatedCall.session_id).in_(unique))
            .group_by(col(SimulatedCall.session_id))
        ).all()
    row.second_dials = sum(n - 1 for _, n in dials if n > 1)
    with Session(engine) as session:
        unavailable = session.exec(
            select(func.count())
            .select_from(CallSession)
            .where(
                col(CallSession.id).in_(unique),
                CallSession.failure_code == "orchestrator_unavailable",
            )
        ).one()
    if unavailable:
        row.notes.append(f"{unavailable} calls answered 200 orchestrator_unavailable (recorded)")


async def start_campaign(base_url: str, account: Account, recipients: int) -> str:
    """A campaign paced slowly enough to be running when the fault hits."""
    numbers = [f"+1202555{110 + i:04d}" for i in range(recipients)]  # plain "accepted" numbers
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        agent = await client.post(
            "/api/v1/agents", json={"name": "chaos agent"}, headers=account.headers
        )
        agent.raise_for_status()
        resp = await client.post(
            "/api/v1/batch-call/create",
            json={
                "batch_name": "chaos",
                "agent_id": agent.json()["id"],
                "recipients": [{"phone_number": n} for n in numbers],
                "options": {"calls_per_second": 3, "max_concurrency": 5},
            },
            headers=account.headers,
        )
        resp.raise_for_status()
        campaign_id: str = resp.json()["campaign"]["id"]
        return campaign_id


def count_campaign(engine: Engine, campaign_id: str, recipients: int, row: Row) -> None:
    """Every recipient ends in one terminal session with at most one dial."""
    cid = uuid.UUID(campaign_id)

    def sessions() -> list[CallSession]:
        with Session(engine) as session:
            return list(session.exec(select(CallSession).where(CallSession.campaign_id == cid)))

    def done() -> bool:
        rows = sessions()
        return len(rows) >= recipients and all(r.status in TERMINAL for r in rows)

    try:
        wait_for("every campaign call terminal", done, SETTLE_SECONDS)
    except RuntimeError as exc:
        row.notes.append(str(exc))
    rows = sessions()
    terminal = sum(1 for r in rows if r.status in TERMINAL)
    row.requested += recipients
    row.terminal += terminal
    row.lost += recipients - terminal
    with Session(engine) as session:
        dials = session.exec(
            select(SimulatedCall.session_id, func.count())
            .where(col(SimulatedCall.session_id).in_([r.id for r in rows]))
            .group_by(col(SimulatedCall.session_id))
        ).all()
    row.second_dials += sum(n - 1 for _, n in dials if n > 1)
    row.notes.append(f"campaign of {recipients} recipients included: {terminal} terminal")


Fault = Callable[[Stack, Row], Awaitable[float]]


async def run_with_fault(
    name: str,
    root: Path,
    *,
    calls: int,
    rate: float,
    fault: Fault,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    wait: str = "accepted",
    campaign: int = 0,
) -> Row:
    """Start a stack, send `calls` at `rate`/s, run `fault` a third of the way in (it returns
    the moment of repair), measure recovery and count."""
    root.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{root / 'dialer.db'}"
    stack = Stack(root, url, extra_env or {})
    row = Row(name)
    stack.start()
    engine = make_engine(url)
    try:
        account = make_account(engine)
        load = Load(stack.base_url, account, row, wait=wait)
        campaign_id = await start_campaign(stack.base_url, account, campaign) if campaign else None
        traffic = asyncio.create_task(load.run(name, calls, rate))
        await asyncio.sleep(calls / rate / 3)
        repaired = await fault(stack, row)
        probe = Load(stack.base_url, account, row, wait="dialed")
        if fault is not no_fault:  # nothing to recover from when the fault never stops
            row.recover_seconds = await probe_recovery(probe, repaired)
        await traffic
        count(engine, session_ids(account, load.keys + probe.keys), row)
        if campaign_id is not None:
            count_campaign(engine, campaign_id, campaign, row)
    finally:
        engine.dispose()
        stack.stop()
    return row


# --- the faults --------------------------------------------------------------------------------


async def kill_worker(stack: Stack, _row: Row, down: float = 2.0) -> float:
    assert stack.worker is not None
    stack.worker.kill()
    await asyncio.sleep(down)
    stack.start_worker()
    return time.monotonic()


async def kill_temporal(stack: Stack, _row: Row, down: float = 3.0) -> float:
    assert stack.temporal is not None
    stack.temporal.kill()
    await asyncio.sleep(down)
    await asyncio.to_thread(stack.start_temporal)
    return time.monotonic()


def database_outage(pg: Postgres, down: float = 4.0) -> Fault:
    async def fault(stack: Stack, row: Row) -> float:
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(down / 2)
        row.notes.append(f"/ready during the outage: {await asyncio.to_thread(_ready, stack)}")
        await asyncio.sleep(down / 2)
        await asyncio.to_thread(pg.start)
        return time.monotonic()

    return fault


def _ready(stack: Stack) -> bool | None:
    try:
        resp = httpx.get(f"{stack.base_url}/ready", timeout=10)
    except httpx.HTTPError:
        return None
    return resp.status_code == 200 and resp.json().get("ready") is True


async def kill_api(stack: Stack, _row: Row, down: float = 1.0) -> float:
    assert stack.api is not None
    stack.api.kill()
    await asyncio.sleep(down)
    await asyncio.to_thread(stack.start_api)
    return time.monotonic()


async def no_fault(_stack: Stack, _row: Row) -> float:
    return time.monotonic()


# --- the scenarios -----------------------------------------------------------------------------


async def scenario_worker_kill(
    root: Path, calls: int = 60, rate: float = 10, campaign: int = 20
) -> Row:
    return await run_with_fault(
        "1 worker SIGKILL + restart",
        root,
        calls=calls,
        rate=rate,
        fault=kill_worker,
        campaign=campaign,
    )


async def scenario_temporal_kill(root: Path, calls: int = 60, rate: float = 10) -> Row:
    return await run_with_fault(
        "2 Temporal SIGKILL + restart", root, calls=calls, rate=rate, fault=kill_temporal
    )


async def scenario_database_down(root: Path, calls: int = 60, rate: float = 10) -> Row:
    pg = Postgres()
    await asyncio.to_thread(pg.init)
    await asyncio.to_thread(pg.start)
    try:
        row = await run_with_fault(
            "3 database down + back",
            root / "stack",
            calls=calls,
            rate=rate,
            fault=database_outage(pg),
            database_url=pg.url,
        )
    finally:
        await asyncio.to_thread(pg.stop, "fast")
        pg.remove()
    return row


async def scenario_provider_faults(root: Path, calls: int = 60, rate: float = 10) -> Row:
    return await run_with_fault(
        "4 provider faults (seeded)",
        root,
        calls=calls,
        rate=rate,
        fault=no_fault,
        extra_env={
            "DIALER_SIMULATED_FAULT_SEED": "20261127",
            "DIALER_SIMULATED_FAULT_RATE": "0.4",
            "DIALER_SIMULATED_FAULT_SPIKE_MS": "1500",
        },
    )


async def scenario_api_kill(root: Path, calls: int = 30, rate: float = 10) -> Row:
    return await run_with_fault(
        "5 API SIGKILL mid-request",
        root,
        calls=calls,
        rate=rate,
        fault=kill_api,
        wait="dialed",
    )


async def scenario_one_key(root: Path, calls: int = 50) -> Row:
    """`calls` concurrent create_call requests with one Idempotency-Key."""
    url = f"sqlite:///{root / 'dialer.db'}"
    root.mkdir(parents=True, exist_ok=True)
    stack = Stack(root, url)
    row = Row(f"6 {calls} concurrent, one Idempotency-Key")
    stack.start()
    engine = make_engine(url)
    try:
        account = make_account(engine)
        load = Load(stack.base_url, account, row, wait="dialed")
        async with httpx.AsyncClient(
            base_url=stack.base_url,
            timeout=httpx.Timeout(60.0),
            limits=httpx.Limits(max_connections=calls),
        ) as client:
            answers = await asyncio.gather(
                *(load.call(client, "one-key", MIX[0]) for _ in range(calls))
            )
        sessions = {a["call_session_id"] for a in answers if a}
        if len(sessions) != 1:
            row.notes.append(f"{len(sessions)} distinct sessions answered")
        count(engine, session_ids(account, load.keys), row)
        row.requested = calls  # requests sent; they all name one session
        row.lost = 0 if row.terminal == 1 else 1
        with Session(engine) as session:
            dials = session.exec(select(func.count()).select_from(SimulatedCall)).one()
        row.second_dials = max(0, dials - 1)
    finally:
        engine.dispose()
        stack.stop()
    return row
