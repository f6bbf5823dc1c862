"""SIGTERM, as an orchestrator sends it, to a real `dialer api` and a real `dialer worker`:
nothing in flight is lost, and each process exits 0 on its own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from store.models import CallSession, SimulatedCall
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import open_stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

# Signals, not storage, are under test here, and each case starts real processes (seconds of
# imports on this machine): run them on the production database only.
on_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

CREATE_CALL = "/api/call/create_call"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # typeshed: the address of any family is Any
        return port


def process_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child `dialer` process exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"DIALER_{name.upper()}"] = str(value)
    return env


@contextmanager
def dialer_process(
    command: str, settings: Settings, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer.cli", command],
            env=process_env(settings),
            cwd=settings.data_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


@on_postgres
async def test_sigterm_api_finishes_in_flight_request_then_refuses(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    # No worker polls this task queue: create_call holds the request open for its whole
    # wait budget (5 s) and then answers 200 `pending`: a slow request that is really in
    # flight inside the API, waiting on Temporal.
    port = _free_port()
    settings = settings_for(
        tmp_path,
        database_url,
        temporal_address=_target(dev_env),
        api_host="127.0.0.1",
        api_port=port,
        create_call_wait_seconds=5.0,
        shutdown_drain_seconds=1.5,
        api_graceful_shutdown_seconds=20.0,
        log_level="WARNING",
    )
    account = make_account(engine)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with dialer_process("api", settings, log) as proc:

        async def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                async with httpx.AsyncClient(base_url=base) as http:
                    return (await http.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, timeout=60)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            in_flight = asyncio.create_task(
                http.post(
                    CREATE_CALL,
                    params={"phoneNumber": "+12025550100"},
                    headers=account.headers,
                )
            )

            async def workflow_started() -> bool:
                query = f"TaskQueue = '{settings.task_queue}'"
                return (await dev_env.client.count_workflows(query)).count > 0

            await wait_until(workflow_started, timeout=20)
            proc.send_signal(signal.SIGTERM)

            # Draining: still serving, but not ready, so a load balancer stops sending.
            async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
                ready = await probe.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["shutting_down"] is True

            async def refused() -> bool:
                try:
                    async with httpx.AsyncClient(base_url=base, timeout=2) as fresh:
                        await fresh.get("/health")
                except httpx.ConnectError:
                    return True
                except httpx.RemoteProtocolError:
                    # Accepted while the listener was closing, then dropped: not refused
                    # yet, ask again (seen once in CI on PostgreSQL).
                    return False
                return False

            await wait_until(refused, timeout=10)
            # New connections are refused while the earlier request is still being served.
            assert not in_flight.done()
            resp = await in_flight
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "pending"
        assert resp.json()["call_session_id"]
        assert await _exit_code(proc, 30) == 0, log.read_text()


@asynccontextmanager
async def in_process_workers(
    settings: Settings, engine: Engine, env: WorkflowEnvironment
) -> AsyncIterator[None]:
    from worker import build_workers

    workers = build_workers(env.client, settings, engine)
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)


def _health(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", "worker-health"],
        env=process_env(settings),
        cwd=settings.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


@on_postgres
async def test_sigterm_worker_lets_the_running_dial_finish(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    grace = 15.0
    settings = settings_for(
        tmp_path,
        database_url,
        temporal_address=_target(dev_env),
        simulated_latency_ms=3000,  # the carrier takes 3 s to answer the dial
        worker_graceful_shutdown_seconds=grace,
        worker_heartbeat_file=tmp_path / "heartbeat",
        worker_heartbeat_interval_seconds=0.2,
        log_level="WARNING",
    )
    account = make_account(engine)
    log = tmp_path / "worker.log"
    with dialer_process("worker", settings, log) as proc:

        def polling() -> bool:
            assert proc.poll() is None, log.read_text()
            return settings.heartbeat_path.exists()

        await wait_until(polling, timeout=60)
        health = _health(settings)
        assert health.returncode == 0 and health.stdout == "healthy\n", health.stderr

        async with open_stack(settings, engine, dev_env.client, workers=False) as api:
            resp = await api.http.post(
                CREATE_CALL, params={"phoneNumber": "+12025550100"}, headers=account.headers
            )
        assert resp.status_code == 200 and resp.json()["status"] == "success", resp.text
        session_id = resp.json()["call_session_id"]
        handle = dev_env.client.get_workflow_handle(session_id)

        async def dialing() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(
                a.activity_type.name == "dial"
                and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for a in pending
            )

        await wait_until(dialing, timeout=20)
        assert _dial_count(engine, session_id) == 0
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        # Stopped polling: the health check fails at once, while the dial still runs.
        await wait_until(lambda: not settings.heartbeat_path.exists(), timeout=5)
        health = _health(settings)
        assert health.returncode == 1 and "no worker heartbeat" in health.stderr

        assert await _exit_code(proc, grace + 10) == 0, log.read_text()
        assert time.monotonic() - signalled < grace

    # The dial finished and its result reached Temporal before the process exited.
    assert _dial_count(engine, session_id) == 1
    completed = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    assert completed, "the dial's completion must be in the workflow history"

    # Another worker carries the call on from there, without dialing again.
    async with in_process_workers(settings, engine, dev_env):

        def recorded() -> CallSession | None:
            with Session(engine) as session:
                row = session.get(CallSession, uuid.UUID(session_id))
            return row if row is not None and row.telephony_leg_id else None

        row = await wait_until(recorded, timeout=30)
    assert row.status == "success"
    assert _dial_count(engine, session_id) == 1
    await handle.terminate("test over")


def _dial_count(engine: Engine, session_id: str) -> int:
    with Session(engine) as session:
        return len(
            session.exec(
                select(SimulatedCall.sid).where(SimulatedCall.session_id == uuid.UUID(session_id))
            ).all()
        )
