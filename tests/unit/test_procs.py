"""tools/procs.py: the process helpers of the e2e tests, chaos and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import wait_until
from tools.procs import Proc, clean_env, process_alive, spawn

# Ignores SIGTERM, starts a child in its process group, prints the child's pid, then waits.
STUBBORN = (
    "import signal, subprocess, sys, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(child.pid, flush=True); time.sleep(60)"
)


def test_clean_env_drops_dialer_settings_and_adds_values_as_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIALER_API_PORT", "1")
    monkeypatch.setenv("DIALER_SECRET_KEY", "from-the-parent")
    monkeypatch.setenv("UNRELATED", "kept")

    env = clean_env({"DIALER_API_PORT": 8123, "DIALER_DATA_DIR": Path("/tmp/x")}, PYTHONPATH="/r")

    assert env["DIALER_API_PORT"] == "8123"
    assert env["DIALER_DATA_DIR"] == "/tmp/x"
    assert "DIALER_SECRET_KEY" not in env
    assert env["UNRELATED"] == "kept"
    assert env["PYTHONPATH"] == "/r"
    assert not [k for k in clean_env() if k.startswith("DIALER_")]


async def test_stop_kills_the_group_of_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    proc = spawn("stubborn", [sys.executable, "-c", STUBBORN], clean_env(), tmp_path)
    try:
        text = await wait_until(lambda: proc.log.read_text().strip(), timeout=30)
        child = int(text.split()[0])
        assert process_alive(child)

        assert proc.stop(timeout=0.5) == -signal.SIGKILL
        assert not proc.alive()
        await wait_until(lambda: not process_alive(child), timeout=10)
    finally:
        proc.kill()


async def test_a_restart_appends_to_the_same_log_and_unique_logs_do_not_collide(
    tmp_path: Path,
) -> None:
    say = [sys.executable, "-c", "print('hello', flush=True)"]
    proc = Proc("say", say, clean_env(), tmp_path / "say.log", cwd=tmp_path)
    for _ in range(2):
        assert proc.start().popen.wait(30) == 0
    assert proc.log.read_text().split() == ["hello", "hello"]
    assert proc.stop() == 0

    first = spawn("say", say, clean_env(), tmp_path, unique_log=True)
    second = spawn("say", say, clean_env(), tmp_path, unique_log=True)
    assert first.log != second.log
    for p in (first, second):
        assert p.popen.wait(30) == 0
        assert p.log.read_text().split() == ["hello"]


def test_process_alive_counts_a_zombie_as_gone() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Wait for the exit without reaping it: the child is a zombie now.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not process_alive(child.pid)
    assert child.wait() == 0


def test_a_proc_never_started_has_nothing_to_stop(tmp_path: Path) -> None:
    proc = Proc("never", [sys.executable, "-c", "pass"], clean_env(), tmp_path / "never.log")
    assert not proc.alive()
    assert proc.stop() is None
    proc.kill()
