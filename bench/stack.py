"""The processes of one bench run, all on free ports with a temporary data dir: the Temporal
dev server (the temporal CLI of dialer.binaries, search attributes registered), `dialer worker`,
`dialer api`, the raw floor's worker (bench.raw) and the plain FastAPI baseline
(bench.plain_api). Resident memory of each process is sampled in the background."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy.engine import Engine
from temporalio.client import Client

from bench.raw import BENCH_DIAL_RATE, own_queue
from core.config import Settings
from dialer.net import free_port, port_open
from dialer.stack import dev_server_command
from store import crud
from store.db import make_engine, session_scope
from store.migrate import upgrade
from store.models import PhoneNumber
from tools.procs import Proc, clean_env, spawn

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 90.0
RAW_TASK_QUEUE = "bench-raw"

# Dialer under load: simulated carrier with no latency whose calls end at once, no rate
# limits in the way (the bench measures the machinery, not the policy).
DIALER_BENCH_ENV = {
    "DIALER_LOG_LEVEL": "WARNING",
    "DIALER_SIMULATED_LATENCY_MS": "0",
    "DIALER_SIMULATED_RING_SECONDS": "0",
    "DIALER_SIMULATED_ANSWER_SECONDS": "0",
    "DIALER_SIMULATED_TALK_SECONDS": "0",
    "DIALER_DIAL_RATE_PER_SECOND": str(BENCH_DIAL_RATE),
    "DIALER_RATE_LIMIT_PER_MINUTE": "100000000",
    "DIALER_RATE_LIMIT_BURST": "1000000",
    "DIALER_SHUTDOWN_DRAIN_SECONDS": "0",
    "DIALER_API_GRACEFUL_SHUTDOWN_SECONDS": "2",
    "DIALER_WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
}


# The dev server's task queue matching, as `fairness` scenarios compare it: `fair` is what
# Dialer ships (dialer.binaries: matching.enableFairness=true); `nofair` the same server
# without that setting (the calls still carry their priority and fairness keys); `classic`
# also turns off the new matcher, where Temporal implements priority, so neither applies.
MATCHING_VARIANTS = ("fair", "nofair", "classic")


def bench_server_command(settings: Settings, matching: str = "fair") -> list[str]:
    """`dialer run`'s dev server command, in memory and headless: with its SQLite file the
    dev server spends most of its time syncing it, and measures the disk, not Temporal
    (4 against 18 raw workflows/s here). Both Dialer and the raw floor use this server.
    `matching`: one of MATCHING_VARIANTS."""
    if matching not in MATCHING_VARIANTS:
        raise ValueError(f"unknown matching variant {matching!r}")
    cmd = dev_server_command(settings)
    at = cmd.index("--db-filename")
    del cmd[at : at + 2]
    if matching != "fair":
        cmd = without_dynamic_config(cmd, "matching.enableFairness")
    if matching == "classic":
        cmd += ["--dynamic-config-value", "matching.useNewMatcher=false"]
    return [*cmd, "--headless"]


def without_dynamic_config(cmd: list[str], key: str) -> list[str]:
    """The command without its `--dynamic-config-value key=...` pair."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(cmd):
        if skip:
            skip = False
            continue
        following = cmd[i + 1] if i + 1 < len(cmd) else ""
        if arg == "--dynamic-config-value" and following.split("=", 1)[0] == key:
            skip = True
            continue
        out.append(arg)
    return out


class RssSampler:
    """Samples the resident set size of named processes every `interval` seconds; `peaks()`
    gives the maximum seen since the last `reset()`."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._interval = interval
        self._peak: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def now(self) -> dict[str, int]:
        found = {}
        for name, proc in self._procs.items():
            try:
                found[name] = proc.memory_info().rss
            except psutil.Error:
                continue
        return found

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) each process has used so far."""
        found = {}
        for name, proc in self._procs.items():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            found[name] = times.user + times.system
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            sample = self.now()
            with self._lock:
                for name, rss in sample.items():
                    self._peak[name] = max(self._peak.get(name, 0), rss)

    def start(self) -> None:
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._peak = self.now()

    def peaks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._peak)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Stack:
    work: Path
    settings: Settings
    temporal_address: str
    api_url: str
    plain_url: str
    key: str
    agent_id: str
    metrics_url: str | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    client: Client | None = None
    sampler: RssSampler | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}

    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def check_alive(self) -> None:
        dead = [p for p in self.procs.values() if not p.alive()]
        if dead:
            raise RuntimeError("a bench process exited:\n" + "\n".join(p.tail() for p in dead))

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        order = ["api", "plain", "worker", "raw_worker", "temporal"]
        for name in order:
            proc = self.procs.get(name)
            if proc is not None and proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for name in order:
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop()


async def _wait(
    what: str,
    check: Callable[[], Awaitable[bool]],
    stack: Stack,
    timeout: float = STARTUP_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if await check():
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{stack.logs()}")


async def _http_up(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


def _seed(settings: Settings) -> tuple[str, str]:
    """Migrations, a user with an agent mapped to an active simulated line, and a key."""
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        demo = crud.seed_demo(engine=engine)
        key = crud.create_key(engine=engine, user=demo.user, secret=settings.secret_key)
        with session_scope(engine) as session:
            assert session.get(PhoneNumber, demo.line.id) is not None
        return key, str(demo.agent.id)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    key: str
    agent_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


def seed_user(settings: Settings, email: str, line_number: str) -> BenchUser:
    """Another account like the demo user: its own active simulated line, an agent mapped to
    it, and a key (what `dialer users create`, `lines add` and `keys create` do)."""
    from store.models import Agent, LineMapping

    engine = make_engine(settings.db_url)
    try:
        user = crud.create_user(engine=engine, email=email)
        with session_scope(engine) as session:
            line = PhoneNumber(
                user_id=user.id, number=line_number, owner_number=line_number, label="bench"
            )
            agent = Agent(user_id=user.id, name=f"bench agent of {email}")
            session.add(line)
            session.add(agent)
            session.flush()
            session.add(LineMapping(user_id=user.id, phone_number_id=line.id, agent_id=agent.id))
            agent_id = str(agent.id)
        key = crud.create_key(engine=engine, user=user, secret=settings.secret_key)
        return BenchUser(user_id=str(user.id), key=key, agent_id=agent_id)
    finally:
        engine.dispose()


def demo_user(stack: Stack) -> BenchUser:
    """The stack's seeded user (the one every other scenario calls as)."""
    from store.models import Agent

    with session_scope(stack.engine()) as session:
        agent = session.get(Agent, uuid.UUID(stack.agent_id))
        assert agent is not None
        user_id = str(agent.user_id)
    return BenchUser(user_id=user_id, key=stack.key, agent_id=stack.agent_id)


async def start_stack(
    work: Path,
    extra_env: dict[str, str] | None = None,
    *,
    matching: str = "fair",
    baselines: bool = True,
    database_url: str | None = None,
) -> Stack:
    """Everything on free ports under `work`; stopped by Stack.stop(). `matching`: the dev
    server's (MATCHING_VARIANTS); `baselines=False` leaves out the raw floor's worker and
    the plain API (scenarios that measure Dialer alone); `database_url`: Dialer's database
    (default a SQLite file under `work`). The worker serves its Prometheus metrics
    (`stack.metrics_url`)."""
    work.mkdir(parents=True, exist_ok=True)
    temporal_port, api_port, plain_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    values: dict[str, Any] = {
        **DIALER_BENCH_ENV,
        "DIALER_DATA_DIR": work / "dialer",
        "DIALER_API_PORT": api_port,
        "DIALER_TEMPORAL_PORT": temporal_port,
        "DIALER_TEMPORAL_UI_PORT": free_port(),
        "DIALER_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "DIALER_TASK_QUEUE": "bench-dialer",
        "DIALER_DIAL_TASK_QUEUE": "bench-dialer-dial",
        "DIALER_WORKER_METRICS_PORT": metrics_port,
        **({"DIALER_DATABASE_URL": database_url} if database_url else {}),
        **(extra_env or {}),
    }
    env = clean_env(values, PYTHONPATH=ROOT)
    settings = Settings(_env_file=None, **{k[7:].lower(): v for k, v in values.items()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    plain_values = {**values, "DIALER_DATA_DIR": work / "plain", "DIALER_API_PORT": plain_port}
    plain_settings = Settings(_env_file=None, data_dir=work / "plain")
    plain_settings.data_dir.mkdir(parents=True, exist_ok=True)

    stack = Stack(
        work=work,
        settings=settings,
        temporal_address=f"127.0.0.1:{temporal_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        plain_url=f"http://127.0.0.1:{plain_port}",
        key="",
        agent_id="",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        dev = Settings(
            _env_file=None,
            data_dir=work,
            temporal_port=temporal_port,
            temporal_ui_port=values["DIALER_TEMPORAL_UI_PORT"],
        )
        stack.procs["temporal"] = spawn("temporal", bench_server_command(dev, matching), env, work)
        stack.key, stack.agent_id = _seed(settings)
        if baselines:
            # The plain baseline's key is the same user's, in its own database.
            _seed_same_key(plain_settings, stack.key)

        async def temporal_up() -> bool:
            return port_open(temporal_port)

        await _wait("Temporal dev server", temporal_up, stack)
        dialer = [str(Path(sys.executable).parent / "dialer")]
        stack.procs["worker"] = spawn("worker", [*dialer, "worker"], env, work)
        stack.procs["api"] = spawn("api", [*dialer, "api"], env, work)
        if baselines:
            stack.procs["raw_worker"] = spawn(
                "raw_worker",
                [sys.executable, "-m", "bench.raw", stack.temporal_address, RAW_TASK_QUEUE],
                env,
                work,
            )
            stack.procs["plain"] = spawn(
                "plain",
                [sys.executable, "-m", "bench.plain_api"],
                clean_env(plain_values, PYTHONPATH=ROOT),
                work,
            )
        stack.client = await Client.connect(stack.temporal_address)
        await _wait("Dialer API", lambda: _http_up(stack.api_url), stack)
        if baselines:
            await _wait("plain API", lambda: _http_up(stack.plain_url), stack)
        await _wait("workers", lambda: _workers_polling(stack, baselines), stack)
        stack.sampler = RssSampler(
            {**{n: p.pid for n, p in stack.procs.items()}, "bench": os.getpid()}
        )
        stack.sampler.start()
        return stack
    except BaseException:
        stack.stop()
        raise


def _seed_same_key(settings: Settings, key: str) -> None:
    """The plain baseline authenticates with the same key, stored in its own database."""
    from core.security import hash_key, key_prefix
    from store.models import ApiKey

    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        demo = crud.seed_demo(engine=engine)
        prefix = key_prefix(key)
        assert prefix is not None
        with session_scope(engine) as session:
            session.add(
                ApiKey(
                    id=uuid.uuid4(),
                    user_id=demo.user.id,
                    prefix=prefix,
                    key_hash=hash_key(key, settings.secret_key),
                )
            )
    finally:
        engine.dispose()


async def _workers_polling(stack: Stack, baselines: bool = True) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    assert stack.client is not None
    queues = [
        (stack.settings.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (stack.settings.dial_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    if baselines:
        queues += [
            (RAW_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
            (own_queue(RAW_TASK_QUEUE), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        ]
    for queue, kind in queues:
        resp = await stack.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=stack.client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=kind,
            )
        )
        if not resp.pollers:
            return False
    return True
