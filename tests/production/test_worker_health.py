"""`dialer worker-health`: the container health check of a worker reads its heartbeat."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings, get_settings
from dialer import cli
from infra.health import clear_heartbeat, worker_health_problem, write_heartbeat


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        worker_heartbeat_max_age_seconds=30,
    )


def test_no_heartbeat_means_not_running(tmp_path: Path) -> None:
    problem = worker_health_problem(_settings(tmp_path))
    assert problem is not None and "not running" in problem


def test_a_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_heartbeat(settings.heartbeat_path, ["dialer", "dialer-dial"])
    assert worker_health_problem(settings) is None
    assert json.loads(settings.heartbeat_path.read_text())["queues"] == ["dialer", "dialer-dial"]


def test_a_stale_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_heartbeat(settings.heartbeat_path, ["dialer"])
    problem = worker_health_problem(settings, now=time.time() + 31)
    assert problem is not None and "31s old (limit 30s)" in problem


def test_a_cleared_or_garbled_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_heartbeat(settings.heartbeat_path, ["dialer"])
    clear_heartbeat(settings.heartbeat_path)
    assert worker_health_problem(settings) is not None
    settings.heartbeat_path.write_text("{not json")
    problem = worker_health_problem(settings)
    assert problem is not None and "unreadable" in problem


@pytest.fixture
def heartbeat_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "beat"
    monkeypatch.setenv("DIALER_WORKER_HEARTBEAT_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_the_command_exit_codes(heartbeat_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["worker-health"]) == 1
    assert "unhealthy: no worker heartbeat" in capsys.readouterr().err
    write_heartbeat(heartbeat_env, ["dialer"])
    assert cli.main(["worker-health"]) == 0
    assert capsys.readouterr().out == "healthy\n"
