"""The `dialer` command where nothing can be done: one line on stderr saying what to do, a
non-zero exit, no traceback, and nothing created; and `dialer run` stopped by SIGINT even when
it was started with SIGINT ignored (a background job of a script)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tools.procs
from dialer.net import free_port
from tests.support.processes import dialer_command
from tests.support.run_stack import RunningStack, call_from_banner
from tools.procs import clean_env

# What a shell does to a background job of a non-interactive script: SIGINT ignored, which
# survives exec; then the command runs.
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def dialer(cwd: Path, *args: str, **env: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dialer_command(), *args],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_command_without_the_stacks_data_dir_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    done = dialer(tmp_path, "keys", "list", "--user", "me@example.com", DIALER_DATA_DIR=data)
    one_line_error(done, "no database at", "dialer db upgrade", "DIALER_DATA_DIR")
    assert not (data / "dialer.db").exists()


def test_a_database_without_tables_says_to_migrate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dialer.db").touch()
    done = dialer(tmp_path, "users", "create", "--email", "me@example.com", DIALER_DATA_DIR=data)
    one_line_error(done, "has no tables", "dialer db upgrade")


def test_revoking_no_key_fails_and_names_the_prefix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert dialer(tmp_path, "db", "upgrade", DIALER_DATA_DIR=data).returncode == 0
    made = dialer(tmp_path, "users", "create", "--email", "me@example.com", DIALER_DATA_DIR=data)
    assert made.returncode == 0, made.stderr
    done = dialer(
        tmp_path,
        "keys",
        "revoke",
        "--user",
        "me@example.com",
        "--prefix",
        "deadbeef",
        DIALER_DATA_DIR=data,
    )
    one_line_error(done, "no active key with prefix deadbeef", "nothing revoked", "keys list")
    key = dialer(tmp_path, "keys", "create", "--user", "me@example.com", DIALER_DATA_DIR=data)
    assert key.returncode == 0, key.stderr
    revoked = dialer(tmp_path, "keys", "revoke", "--user", "me@example.com", DIALER_DATA_DIR=data)
    assert revoked.returncode == 0 and "revoked 1 key(s)" in revoked.stderr, revoked.stderr


def test_a_taken_api_port_is_one_line_before_anything_starts(
    tmp_path: Path, listening: int
) -> None:
    data = tmp_path / "data"
    ports = {
        "DIALER_TEMPORAL_PORT": free_port(),
        "DIALER_TEMPORAL_UI_PORT": free_port(),
        "DIALER_WORKER_METRICS_PORT": free_port(),
    }
    done = dialer(tmp_path, "run", DIALER_DATA_DIR=data, DIALER_API_PORT=listening, **ports)
    one_line_error(done, f"port {listening} (the API) is taken", "DIALER_API_PORT")
    assert not data.exists()  # nothing started, nothing written
    alone = dialer(tmp_path, "api", DIALER_DATA_DIR=data, DIALER_API_PORT=listening)
    one_line_error(alone, f"port {listening} is taken", "DIALER_API_PORT")


class StackIgnoringSigint(RunningStack):
    """`dialer run` started the way a script's background job is: SIGINT ignored."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str) -> None:
        args = [sys.executable, "-c", IGNORING_SIGINT, *dialer_command(), "run"]
        self.proc = tools.procs.spawn(name, args, env, tmp_path, unique_log=True)


@pytest.mark.slow
async def test_sigint_stops_a_stack_started_with_sigint_ignored(tmp_path: Path) -> None:
    ports = {
        "DIALER_API_PORT": free_port(),
        "DIALER_TEMPORAL_PORT": free_port(),
        "DIALER_TEMPORAL_UI_PORT": free_port(),
        "DIALER_WORKER_METRICS_PORT": free_port(),
    }
    env = clean_env(DIALER_DATA_DIR=tmp_path / "data", DIALER_SHUTDOWN_DRAIN_SECONDS=0, **ports)
    stack = StackIgnoringSigint(tmp_path, env, "run")
    try:
        banner = await stack.banner()
        assert (await call_from_banner(banner))["status"] == "success"
        await stack.stop(whole_group=False, ports=list(ports.values()))
    finally:
        stack.kill()
