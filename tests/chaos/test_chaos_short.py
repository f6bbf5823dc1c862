"""The short subset of `make chaos` inside `make test`: real processes on loopback (dev server,
worker, API), a fault under load, and the promise checked from the database and the carrier's
ledger: no session lost, nobody dialed twice, no 5xx. The full run is `make chaos`."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.scenarios import Row, scenario_api_kill, scenario_one_key, scenario_worker_kill

pytestmark = pytest.mark.slow


def assert_promise(row: Row) -> None:
    assert row.requested > 0
    assert row.lost == 0, row
    assert row.terminal == (1 if row.scenario.startswith("6") else row.requested), row
    assert row.second_dials == 0, row
    assert row.http_5xx == 0, row
    assert not [n for n in row.notes if "unexpected" in n or "never" in n], row.notes


async def test_one_idempotency_key_fifty_concurrent_requests(tmp_path: Path) -> None:
    row = await scenario_one_key(tmp_path, calls=50)
    assert row.requested == 50
    # Every answer named the same session (a slow machine may record it as
    # orchestrator_unavailable: still one session and no dial beyond one).
    assert not [n for n in row.notes if "distinct sessions" in n], row.notes
    assert_promise(row)


async def test_api_killed_mid_request_client_retries_with_the_same_key(tmp_path: Path) -> None:
    row = await scenario_api_kill(tmp_path, calls=6, rate=4)
    assert_promise(row)
    assert row.recover_seconds is not None


async def test_worker_killed_mid_load_and_restarted(tmp_path: Path) -> None:
    row = await scenario_worker_kill(tmp_path, calls=8, rate=4, campaign=3)
    assert_promise(row)
    assert row.recover_seconds is not None
