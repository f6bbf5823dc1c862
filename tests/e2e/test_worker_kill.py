"""The fault that matters most: the worker process is SIGKILLed while dials are in flight. A new
worker must finish every session (none lost), and the carrier's ledger must never hold a
second dial for a session: the killed attempts time out and are reconciled before any new
attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.client import Client

from store.models import CallEvent
from tests.support.processes import running_processes
from tests.support.waiting import wait_until

# Mostly plain calls, plus the paths that retry or reconcile on their own.
NUMBERS = (
    ["+12025550100"] * 13
    + ["+12025550104"] * 2
    + ["+12025550105"] * 2
    + ["+12025550107"] * 2
    + ["+12025550103"]
)
EXPECTED = {"+12025550103": ("failed", "provider_rejected")}


@pytest.mark.slow
async def test_sigkill_worker_mid_flight_loses_nothing_and_never_dials_twice(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    async with running_processes(
        tmp_path,
        e2e_temporal,
        temporal_client,
        # Dials take a while, so the kill lands while they are in flight; a short dial
        # timeout makes the killed attempts ambiguous quickly, so they get reconciled.
        DIALER_SIMULATED_LATENCY_MS=1500,
        DIALER_DIAL_TIMEOUT_SECONDS=4,
        DIALER_CREATE_CALL_WAIT_SECONDS=30,
    ) as procs:
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=60) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/api/call/create_call",
                        params={"phoneNumber": number, "wait": "accepted"},
                        headers=procs.headers,
                    )
                    for number in NUMBERS
                )
            )
        assert [r.status_code for r in responses] == [200] * len(NUMBERS)
        bodies = [r.json() for r in responses]
        assert {b["status"] for b in bodies} == {"success"}, bodies
        ids = [b["call_session_id"] for b in bodies]
        number_of = {b["call_session_id"]: n for b, n in zip(bodies, NUMBERS, strict=True)}

        # Kill as soon as the carrier placed a call: the others are mid-dial or between attempts.
        await wait_until(lambda: sum(procs.dials_by_session().values()) >= 1, timeout=60)
        old = procs.workers[0]
        old.kill()
        finished_before_kill = sum(
            r.status in ("success", "failed") for r in procs.sessions(ids).values()
        )
        assert finished_before_kill < len(ids), "the kill came too late to prove anything"

        new = procs.start_worker()
        await procs.wait_worker(new, temporal_client)
        try:
            await wait_until(procs.all_terminal(ids), timeout=120, interval=0.25)
        except AssertionError:
            raise AssertionError("sessions left unfinished\n" + procs.logs()) from None

        rows = procs.sessions(ids)
        dials = procs.dials_by_session()
        assert len(rows) == len(ids)  # none lost
        outcomes: Counter[str] = Counter()
        for sid, row in rows.items():
            number = number_of[sid]
            status, code = EXPECTED.get(number, ("success", None))
            assert (row.status, row.failure_code) == (status, code), (number, row)
            placed = dials.get(uuid.UUID(sid), 0)
            # Exactly one dial per success, none for the rejected call, never two.
            assert placed == (1 if status == "success" else 0), (number, sid, placed)
            if status == "success":
                assert row.telephony_leg_id
            outcomes[row.status] += 1
        assert sum(dials.values()) == outcomes["success"]
        # Nothing was dialed for a session that does not exist.
        assert set(dials) <= {uuid.UUID(i) for i in ids}
        # The kill did hit dials in flight: their attempts timed out and were reconciled.
        with Session(procs.engine) as session:
            reconciled = session.exec(
                select(CallEvent.session_id).where(
                    col(CallEvent.key).like("attempt:%:reconciled_%"),
                    col(CallEvent.session_id).in_([uuid.UUID(i) for i in ids]),
                )
            ).all()
        # (+12025550105 is reconciled by design, so it does not count as evidence.)
        others = {uuid.UUID(s) for s in ids if number_of[s] != "+12025550105"}
        assert others & set(reconciled), "no killed dial was reconciled"
