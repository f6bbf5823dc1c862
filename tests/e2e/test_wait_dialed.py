"""wait=dialed over real HTTP between real processes: a call that is not dialed when the wait
budget runs out answers `pending` (never `success` without a leg id), for the first request and
for a repeat with the same Idempotency-Key; once its retries run out, `failed`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from tests.support.processes import running_processes
from tests.support.waiting import wait_until

# Refused on every attempt: with this backoff its retries take about 7 s, the budget is 1 s.
ALWAYS_TRANSIENT = "+12025550106"


async def test_wait_dialed_answers_pending_until_the_dial_is_known(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    async with running_processes(
        tmp_path,
        e2e_temporal,
        temporal_client,
        DIALER_CREATE_CALL_WAIT_SECONDS=1,
        DIALER_DIAL_BACKOFF_INITIAL_SECONDS=1,
        DIALER_DIAL_BACKOFF_MAX_SECONDS=2,
    ) as procs:
        headers = {**procs.headers, "Idempotency-Key": "wait-dialed-1"}
        params = {"phoneNumber": ALWAYS_TRANSIENT, "wait": "dialed"}
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:

            async def ask() -> dict[str, Any]:
                resp = await http.post("/api/call/create_call", params=params, headers=headers)
                assert resp.status_code == 200, resp.text
                body: dict[str, Any] = resp.json()
                return body

            first = await ask()
            assert first["status"] == "pending", first
            assert first["telephony_leg_id"] is None and first["failure_code"] is None
            repeat = await ask()
            assert repeat["status"] == "pending", repeat
            assert repeat["call_session_id"] == first["call_session_id"]

            async def failed() -> bool:
                resp = await http.get(
                    "/api/v1/call-analytics",
                    params={"call_session_id": first["call_session_id"]},
                    headers=procs.headers,
                )
                status: str = resp.json()["status"]
                return status == "failed"

            await wait_until(failed, timeout=60, interval=0.5)
            last = await ask()
            assert (last["status"], last["failure_code"]) == ("failed", "retries_exhausted")
            assert last["call_session_id"] == first["call_session_id"]
