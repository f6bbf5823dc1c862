"""Many processes (issue 17): two `dialer api` and two `dialer worker` processes on one dev
server, their limits in one Redis (DIALER_LIMITS_STORAGE_URL) and one PostgreSQL database:
a key's request limit holds for both APIs together, an account at max_concurrent_calls or
max_calls_per_second is refused on both, and a paced campaign keeps its worst one-second
window across both workers while one of them is stopped (SIGSTOP) for 5 s."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.client import Client

from dialer.net import free_port
from store import accounts
from store.models import SimulatedCall
from tests.support.db import pg_database
from tests.support.processes import DialerProcesses, dialer_command, running_processes, spawn
from tests.support.redis import require_redis
from tests.support.waiting import wait_until
from tools.procs import Proc

# 0101..0109 are the simulated carrier's magic numbers (busy, failures, retries): not here.
NUMBER = "+12025550110"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    # Four processes on one database: PostgreSQL, as a deployment of replicas runs.
    yield from pg_database()


@asynccontextmanager
async def two_of_each(
    tmp_path: Path, temporal: str, client: Client, postgres_url: str, **overrides: Any
) -> AsyncIterator[tuple[DialerProcesses, str]]:
    """running_processes (one API, one worker, a user, a key, a line) plus a second worker and
    a second API on its own port, all with Redis as the shared limits storage. Yields the
    processes and the second API's base URL."""
    redis_url = require_redis()
    async with running_processes(
        tmp_path,
        temporal,
        client,
        postgres_url=postgres_url,
        DIALER_LIMITS_STORAGE_URL=redis_url,
        **overrides,
    ) as procs:
        second_worker = procs.start_worker()
        port = free_port()
        second_api: Proc = spawn(
            "api", [*dialer_command(), "api"], {**procs.env, "DIALER_API_PORT": str(port)}, tmp_path
        )
        try:
            url = f"http://127.0.0.1:{port}"

            async def up() -> bool:
                assert second_api.alive(), second_api.tail()
                try:
                    async with httpx.AsyncClient(timeout=2) as http:
                        return (await http.get(f"{url}/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(up, timeout=60, interval=0.2)
            await procs.wait_worker(second_worker, client)
            yield procs, url
        finally:
            second_api.stop()


def worst_window(moments: list[float], seconds: float = 1.0) -> int:
    """The most moments in any window [t, t + seconds)."""
    moments = sorted(moments)
    return max((sum(1 for m in moments if t <= m < t + seconds) for t in moments), default=0)


@pytest.mark.slow
@pytest.mark.postgres
async def test_limits_hold_across_two_apis_and_two_workers(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client, postgres_url: str
) -> None:
    async with two_of_each(
        tmp_path,
        e2e_temporal,
        temporal_client,
        postgres_url,
        # 10 requests per 10 s per key (bucket_as_window), the same in every process.
        DIALER_RATE_LIMIT_PER_MINUTE=60,
        DIALER_RATE_LIMIT_BURST=10,
        # Calls stay in progress, so the first holds the account's one slot.
        DIALER_SIMULATED_TALK_SECONDS=30,
    ) as (procs, second):
        apis = [procs.base_url, second]
        async with (
            httpx.AsyncClient(base_url=apis[0], timeout=30) as one,
            httpx.AsyncClient(base_url=apis[1], timeout=30) as two,
        ):
            me = (await one.get("/api/v1/me", headers=procs.headers)).json()
            user_id = uuid.UUID(me["user_id"])

            # (a) A fresh key's 24 requests, alternating between the APIs: 10 pass in all
            # (each process alone would let 10 through, 20 together).
            key = procs.cli("keys", "create", "--user", me["email"]).stdout.strip()
            answers = await asyncio.gather(
                *(
                    (one, two)[i % 2].get("/api/v1/me", headers={"x-api-key": key})
                    for i in range(24)
                )
            )
            passed = [r for r in answers if r.status_code == 200]
            assert len(passed) == 10, [r.status_code for r in answers]
            assert {r.status_code for r in answers} == {200, 429}
            assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)

            # (b) At max_concurrent_calls, a call is refused on both APIs.
            assert procs.engine is not None
            accounts.set_limits(procs.engine, user_id, max_concurrent_calls=1)
            params = {"phoneNumber": NUMBER, "wait": "dialed"}
            first = (
                await one.post("/api/call/create_call", params=params, headers=procs.headers)
            ).json()
            assert first["status"] == "success", first
            for http in (one, two):
                refused = (
                    await http.post("/api/call/create_call", params=params, headers=procs.headers)
                ).json()
                assert refused["status"] == "failed", refused
                assert refused["failure_code"] == "concurrency_limit"
                assert refused["call_session_id"] and refused["request_id"]

            # max_calls_per_second: one call per 10 s for the account, whichever API and
            # worker takes each call.
            accounts.set_limits(
                procs.engine, user_id, max_concurrent_calls=None, max_calls_per_second=0.1
            )
            rated = [
                (
                    await http.post(
                        "/api/call/create_call",
                        params={"phoneNumber": NUMBER, "wait": "accepted"},
                        headers=procs.headers,
                    )
                ).json()
                for http in (one, two, one, two)
            ]
            codes = [r.get("failure_code") for r in rated]
            assert codes[0] is None, rated
            assert codes[1:] == ["calls_per_second_limit"] * 3, rated


def ledger(procs: DialerProcesses) -> list[float]:
    """When the carrier placed each call (its ledger), Unix seconds."""
    assert procs.engine is not None
    with Session(procs.engine) as session:
        return sorted(c.timestamp() for c in session.exec(select(SimulatedCall.created_at)))


def first_attempts(procs: DialerProcesses) -> list[float]:
    """When the carrier placed each call's first attempt."""
    assert procs.engine is not None
    with Session(procs.engine) as session:
        rows = session.exec(select(SimulatedCall))
        return sorted(r.created_at.timestamp() for r in rows if r.attempt_tag.endswith(".1"))


def crowded(procs: DialerProcesses) -> str:
    """The dials of the worst one-second window, with their attempts: what went too close."""
    assert procs.engine is not None
    with Session(procs.engine) as session:
        rows = sorted(session.exec(select(SimulatedCall)), key=lambda c: c.created_at)
    moments = [r.created_at.timestamp() for r in rows]
    start = max(moments, key=lambda t: sum(1 for m in moments if t <= m < t + 1.0))
    inside = [r for r in rows if start <= r.created_at.timestamp() < start + 1.0]
    return f"{len(inside)} dials in [{start - moments[0]:.2f} s, +1 s): " + ", ".join(
        f"{r.created_at.timestamp() - moments[0]:.3f} {r.attempt_tag}" for r in inside
    )


@pytest.mark.slow
@pytest.mark.postgres
async def test_a_paced_campaign_keeps_its_window_across_workers_one_stopped(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client, postgres_url: str
) -> None:
    async with two_of_each(
        tmp_path,
        e2e_temporal,
        temporal_client,
        postgres_url,
        DIALER_SIMULATED_TALK_SECONDS=0.2,
        # The stopped worker's dials time out soon, so the campaign ends soon after.
        DIALER_DIAL_TIMEOUT_SECONDS=4,
    ) as (procs, second):
        async with httpx.AsyncClient(base_url=second, timeout=30) as http:
            agent = await http.post("/api/v1/agents", headers=procs.headers, json={"name": "e2e"})
            body = {
                "batch_name": "two-workers",
                "agent_id": agent.json()["id"],
                "recipients": [{"phone_number": f"+1202555{110 + i:04d}"} for i in range(90)],
                "options": {"calls_per_second": 20, "max_concurrency": 100},
            }
            created = await http.post("/api/v1/batch-call/create", headers=procs.headers, json=body)
            assert created.status_code == 201, created.text
            campaign_id = created.json()["campaign"]["id"]
            await wait_until(lambda: len(ledger(procs)) >= 10, timeout=60)
            stopped = procs.workers[1]
            os.killpg(stopped.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(5)
            finally:
                os.killpg(stopped.pid, signal.SIGCONT)
            stopped_at = time.time()

            async def finished() -> bool:
                answer = await http.get(
                    f"/api/v1/batch-call/{campaign_id}/status", headers=procs.headers
                )
                return answer.json().get("finished_at") is not None

            await wait_until(finished, timeout=120, interval=0.5)
        dials = ledger(procs)
        firsts = first_attempts(procs)
        twice = {s: n for s, n in procs.dials_by_session().items() if n > 1}
        # Every recipient reached once: a dial the stopped worker held past its attempt's
        # deadline is not sent after it was resumed (activities/dialing.py), nor placed by the
        # carrier if it was on its way (telephony/simulated.py), while its retry went out
        # from the other worker.
        assert not twice, f"dialed twice: {twice}"
        assert len(dials) == 90, len(dials)
        assert dials[-1] > stopped_at - 5  # the campaign was still dialing when it stopped
        # Every dial is paced across both workers, the stopped one's and the retries of its
        # timed-out attempts included (a retry reserves its moment in the campaign's pace).
        assert worst_window(firsts) <= 20, crowded(procs)
        assert worst_window(dials) <= 20, crowded(procs)
