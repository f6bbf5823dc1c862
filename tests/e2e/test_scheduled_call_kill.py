"""A scheduled call survives the worker (issue 16): the worker is SIGKILLed while the call waits
for its scheduled_at and a new one started; the call is dialed once (the simulated carrier's
ledger), on time: the wait is a durable timer on the Temporal server, not a process's sleep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.client import Client

from store.models import SimulatedCall
from tests.support.processes import running_processes
from tests.support.waiting import wait_until

AHEAD = timedelta(seconds=20)
# The dial may start this late: the timer's workflow task, the dial's latency (50 ms).
ON_TIME = timedelta(seconds=3)


@pytest.mark.slow
async def test_a_call_scheduled_across_a_worker_kill_dials_once_on_time(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    async with running_processes(
        tmp_path,
        e2e_temporal,
        temporal_client,
        DIALER_SIMULATED_RING_SECONDS=0.2,
        DIALER_SIMULATED_ANSWER_SECONDS=0.2,
        DIALER_SIMULATED_TALK_SECONDS=0.5,
    ) as procs:
        at = (datetime.now(UTC) + AHEAD).replace(microsecond=0)
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:
            resp = await http.post(
                "/api/call/create_call",
                params={"phoneNumber": "+12025550100"},
                json={"scheduled_at": at.isoformat()},
                headers=procs.headers,
            )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "success" and body["call_status"] == "scheduled", body
        sid = body["call_session_id"]

        procs.workers[0].kill()  # SIGKILL: no graceful shutdown, its timer is the server's
        assert procs.dials_by_session() == {}
        new = procs.start_worker()
        await procs.wait_worker(new, temporal_client)
        assert datetime.now(UTC) < at, "the restart took too long to prove anything"

        try:
            await wait_until(procs.all_terminal([sid]), timeout=60, interval=0.25)
        except AssertionError:
            raise AssertionError("the scheduled call did not finish\n" + procs.logs()) from None
        assert procs.engine is not None
        with Session(procs.engine) as session:
            dials = session.exec(select(SimulatedCall)).all()
        assert [str(d.session_id) for d in dials] == [sid]  # dialed once
        placed = dials[0].created_at
        placed = placed if placed.tzinfo else placed.replace(tzinfo=UTC)
        assert at - timedelta(seconds=1) <= placed <= at + ON_TIME, (at, placed)
        row = procs.sessions([sid])[sid]
        assert row.status == "success" and row.scheduled_at is not None
