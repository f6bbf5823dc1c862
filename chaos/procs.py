"""The processes a scenario owns: the Temporal dev server, the worker, the API and (for the
database scenario) a PostgreSQL instance, each on free loopback ports with a temporary data
directory. Every process is started and stopped by its pid, never by name."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from contracts.search_attributes import SEARCH_ATTRIBUTES
from dialer.binaries import dev_server_dynamic_config_args, temporal_cli
from dialer.net import free_port, port_open
from tools.procs import Proc, clean_env

SECRET = "chaos-secret-key-for-a-throwaway-stack-0123456789"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> float:
    """Poll `check` until true, within a bound; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - start


@dataclass
class Postgres:
    """A PostgreSQL instance the scenario owns: initdb into a temporary directory, pg_ctl on a
    free port. Run as the `postgres` system user when we are root (initdb refuses root)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dialer-chaos-pg-")))
    port: int = field(default_factory=free_port)

    @staticmethod
    def available() -> bool:
        return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or bool(shutil.which("initdb"))

    def _bin(self, name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        return found[-1] if found else name

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        # Its own directory under /tmp: the `postgres` user cannot enter the scenario's 0700
        # temporary directory.
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            self._bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
            str(self.root / "pg.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self._bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Stack:
    """Dev server + worker + API as subprocesses, sharing one data dir and database."""

    root: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    temporal_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    temporal: Proc | None = None
    worker: Proc | None = None
    api: Proc | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        return clean_env(
            {
                "DIALER_DATA_DIR": str(self.root),
                "DIALER_DATABASE_URL": self.database_url,
                "DIALER_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
                "DIALER_API_HOST": "127.0.0.1",
                "DIALER_API_PORT": str(self.api_port),
                "DIALER_SECRET_KEY": SECRET,
                "DIALER_LOG_LEVEL": "WARNING",
                "DIALER_SIMULATED_LATENCY_MS": "50",
                "DIALER_DIAL_TIMEOUT_SECONDS": "5",
                "DIALER_DIAL_BACKOFF_INITIAL_SECONDS": "0.2",
                "DIALER_DIAL_BACKOFF_MAX_SECONDS": "1",
                "DIALER_DIAL_RATE_PER_SECOND": "1000",
                "DIALER_CREATE_CALL_WAIT_SECONDS": "5",
                "DIALER_RATE_LIMIT_PER_MINUTE": "1000000",
                "DIALER_RATE_LIMIT_BURST": "100000",
                # Short simulated calls, so the lifecycle of every call ends within the run.
                "DIALER_SIMULATED_RING_SECONDS": "0.2",
                "DIALER_SIMULATED_ANSWER_SECONDS": "0.3",
                "DIALER_SIMULATED_TALK_SECONDS": "0.5",
            },
            **self.extra_env,
        )

    def _dialer(self, name: str, *args: str) -> Proc:
        return Proc(
            name, [sys.executable, "-m", "dialer.cli", *args], self.env(), self.root / f"{name}.log"
        )

    def migrate(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "dialer.cli", "db", "upgrade"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dialer db upgrade failed: {done.stderr[-2000:]}")

    def start_temporal(self) -> None:
        cmd = [
            temporal_cli(), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(self.temporal_port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--db-filename", str(self.root / "temporal.db"), "--log-level", "error",
            *dev_server_dynamic_config_args(),
        ]  # fmt: skip
        for key in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        self.temporal = Proc("temporal", cmd, self.env(), self.root / "temporal.log")
        self.temporal.start()
        wait_for("Temporal dev server", lambda: port_open(self.temporal_port), 60)

    def start_worker(self) -> None:
        self.worker = self._dialer("worker", "worker")
        self.worker.start()

    def start_api(self) -> None:
        self.api = self._dialer("api", "api")
        self.api.start()
        # Generous: on a busy machine a Python process takes a while to import and bind.
        wait_for("API", self.api_up, 180)

    def api_up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.migrate()
        self.start_temporal()
        self.start_worker()
        self.start_api()

    def stop(self) -> None:
        for proc in (self.api, self.worker, self.temporal):
            if proc is not None:
                proc.stop()
