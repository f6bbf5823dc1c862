"""Real processes: `dialer api` and `dialer worker` started as a user starts them, and read back."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

import tools.procs
from contracts.calls import TERMINAL
from dialer.net import free_port
from store.db import make_engine
from store.models import CallSession, SimulatedCall
from tests.support.settings import TEST_SECRET
from tests.support.waiting import wait_until
from tools.procs import Proc, clean_env

STARTUP_TIMEOUT = 60.0
KEY_PATTERN = re.compile(r"dk_[0-9a-f]{8}_[A-Za-z0-9_-]+")


def dialer_command() -> list[str]:
    """The installed `dialer` console script of this venv (what a user runs)."""
    script = Path(sys.executable).parent / "dialer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dialer.cli"]


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def spawn(name: str, args: list[str], env: dict[str, str], cwd: Path) -> Proc:
    """A process as a user starts it from a terminal (Ctrl-C works), with a log of its own:
    a test may start several processes of one name in one directory."""
    return tools.procs.spawn(name, args, env, cwd, unique_log=True, sigint_default=True)


@dataclass
class DialerProcesses:
    """`dialer api` and `dialer worker` as processes, with their settings and a user's key."""

    env: dict[str, str]
    cwd: Path
    db_url: str
    api_port: int
    temporal_address: str
    task_queue: str
    dial_task_queue: str
    key: str = ""
    api: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    engine: Engine | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*dialer_command(), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"dialer {' '.join(args)}: {done.stderr}"
        return done

    def start_worker(self) -> Proc:
        proc = spawn("worker", [*dialer_command(), "worker"], self.env, self.cwd)
        self.workers.append(proc)
        return proc

    def start_api(self) -> Proc:
        self.api = spawn("api", [*dialer_command(), "api"], self.env, self.cwd)
        return self.api

    def logs(self) -> str:
        procs = [p for p in (self.api, *self.workers) if p is not None]
        return "\n".join(p.tail() for p in procs)

    async def wait_api(self) -> None:
        async def up() -> bool:
            assert self.api is not None and self.api.alive(), self.logs()
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{self.base_url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(up, timeout=STARTUP_TIMEOUT, interval=0.2)

    async def wait_worker(self, proc: Proc, client: Client) -> None:
        """Until this process polls both task queues (its identity is `<pid>@<host>`)."""

        async def polling() -> bool:
            assert proc.alive(), proc.tail()
            for queue, kind in (
                (self.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                (self.dial_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            ):
                resp = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace,
                        task_queue=TaskQueue(name=queue),
                        task_queue_type=kind,
                    )
                )
                if not any(p.identity.startswith(f"{proc.pid}@") for p in resp.pollers):
                    return False
            return True

        await wait_until(polling, timeout=STARTUP_TIMEOUT, interval=0.2)

    def stop(self) -> None:
        procs = [p for p in (*self.workers, self.api) if p is not None and p.alive()]
        # Signal all first, then wait: they shut down side by side.
        for proc in procs:
            proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.stop()
        if self.engine is not None:
            self.engine.dispose()

    # The database, read the way an auditor would: the carrier's ledger and the session rows.
    def dials_by_session(self) -> dict[uuid.UUID, int]:
        assert self.engine is not None
        with Session(self.engine) as session:
            rows = session.exec(
                select(SimulatedCall.session_id, func.count()).group_by(
                    col(SimulatedCall.session_id)
                )
            ).all()
        return {sid: n for sid, n in rows}

    def sessions(self, ids: list[str]) -> dict[str, CallSession]:
        assert self.engine is not None
        wanted = [uuid.UUID(i) for i in ids]
        with Session(self.engine) as session:
            rows = session.exec(select(CallSession).where(col(CallSession.id).in_(wanted))).all()
        return {str(r.id): r for r in rows}

    def all_terminal(self, ids: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            rows = self.sessions(ids)
            return len(rows) == len(ids) and all(r.status in TERMINAL for r in rows.values())

        return check


@asynccontextmanager
async def running_processes(
    tmp_path: Path,
    temporal_address: str,
    client: Client,
    *,
    postgres_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[DialerProcesses]:
    """Migrate with the CLI, start `dialer worker` and `dialer api`, create a user and a key
    with the CLI, add a caller line over HTTP; stop every process on the way out."""
    data = tmp_path / "data"
    suffix = uuid.uuid4().hex[:8]
    api_port = free_port()
    values: dict[str, Any] = {
        "DIALER_DATA_DIR": data,
        "DIALER_API_PORT": api_port,
        "DIALER_TEMPORAL_ADDRESS": temporal_address,
        "DIALER_TASK_QUEUE": f"e2e-{suffix}",
        "DIALER_DIAL_TASK_QUEUE": f"e2e-dial-{suffix}",
        "DIALER_WEBHOOK_TASK_QUEUE": f"e2e-webhooks-{suffix}",
        "DIALER_SECRET_KEY": TEST_SECRET,
        "DIALER_LOG_LEVEL": "WARNING",
        "DIALER_SIMULATED_LATENCY_MS": 50,
        "DIALER_DIAL_BACKOFF_INITIAL_SECONDS": 0.1,
        "DIALER_DIAL_BACKOFF_MAX_SECONDS": 0.5,
        "DIALER_DIAL_RATE_PER_SECOND": 1000,
        # Tests stop the processes at once: no drain period for a load balancer.
        "DIALER_SHUTDOWN_DRAIN_SECONDS": 0,
        "DIALER_API_GRACEFUL_SHUTDOWN_SECONDS": 2,
        "DIALER_WORKER_GRACEFUL_SHUTDOWN_SECONDS": 2,
    }
    if postgres_url:
        values["DIALER_DATABASE_URL"] = postgres_url
    values.update(overrides)
    db_url = postgres_url or f"sqlite:///{data / 'dialer.db'}"
    procs = DialerProcesses(
        env=clean_env(values),
        cwd=tmp_path,
        db_url=db_url,
        api_port=api_port,
        temporal_address=temporal_address,
        task_queue=values["DIALER_TASK_QUEUE"],
        dial_task_queue=values["DIALER_DIAL_TASK_QUEUE"],
    )
    try:
        procs.cli("db", "upgrade")
        # Worker and API start up while the CLI creates the user and the key.
        worker = procs.start_worker()
        procs.start_api()
        email = f"e2e-{suffix}@example.test"
        procs.cli("users", "create", "--email", email)
        out = procs.cli("keys", "create", "--user", email).stdout
        # Only the key on stdout, so `KEY=$(dialer keys create ...)` works.
        assert KEY_PATTERN.fullmatch(out.strip()) and out.count("\n") == 1, out
        procs.key = out.strip()
        procs.engine = make_engine(db_url)
        await procs.wait_api()
        await procs.wait_worker(worker, client)
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:
            line = await http.post(
                "/api/v1/phone", json={"number": "+12025550199"}, headers=procs.headers
            )
            assert line.status_code == 201, line.text
        yield procs
    finally:
        procs.stop()
