"""`dialer run` after Ctrl-C: it waits for its children as long as their configured graceful
shutdown, and kills only what outlives that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from dialer.stack import STOP_MARGIN_SECONDS, stop_deadline_seconds, stop_processes


def settings(tmp_path: Path, **values: Any) -> Settings:  # seconds
    return Settings(_env_file=None, data_dir=tmp_path, **values)


def test_the_default_deadline_outlasts_the_worker_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("DIALER_")]:
        monkeypatch.delenv(name)
    defaults = settings(tmp_path)
    assert defaults.worker_graceful_shutdown_seconds == 30
    assert stop_deadline_seconds(defaults, 0) == 30 + STOP_MARGIN_SECONDS


def test_the_deadline_follows_the_longest_configured_shutdown(tmp_path: Path) -> None:
    slow_worker = settings(tmp_path, worker_graceful_shutdown_seconds=120)
    assert stop_deadline_seconds(slow_worker, 0) == 120 + STOP_MARGIN_SECONDS
    # The API's drain and its grace for in-flight requests, when they add up to more.
    slow_api = settings(
        tmp_path, worker_graceful_shutdown_seconds=2, api_graceful_shutdown_seconds=40
    )
    assert stop_deadline_seconds(slow_api, 5) == 45 + STOP_MARGIN_SECONDS


# Exits 3 a moment after SIGTERM, like a child that finishes its work first.
GRACEFUL = (
    "import signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(3))); "
    "print('ready', flush=True); time.sleep(60)"
)
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def started(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_stop_lets_children_finish_and_kills_only_those_past_the_deadline() -> None:
    graceful, stubborn = started(GRACEFUL), started(STUBBORN)
    try:
        began = time.monotonic()
        stop_processes([graceful, stubborn], timeout=2)
        took = time.monotonic() - began
    finally:
        for proc in (graceful, stubborn):
            proc.kill()
            proc.wait(10)
    assert graceful.returncode == 3
    assert stubborn.returncode == -signal.SIGKILL
    assert 2 <= took < 10
