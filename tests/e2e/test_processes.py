"""The API and the worker as real processes (SQLite file and PostgreSQL), a user and key made
with the CLI, everything over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.processes import DialerProcesses
from tests.support.waiting import wait_until


async def test_calls_over_http_between_processes(dialer_processes: DialerProcesses) -> None:
    procs = dialer_processes
    async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:
        unauthenticated = await http.post(
            "/api/call/create_call", params={"phoneNumber": "+12025550100"}
        )
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["detail"]

        me = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {procs.key}"})
        assert me.status_code == 200 and me.json()["email"].startswith("e2e-")

        dialed = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550104", "wait": "dialed"},
            headers={**procs.headers, "Idempotency-Key": "e2e-1"},
        )
        assert dialed.status_code == 200, dialed.text
        body = dialed.json()
        assert body["status"] == "success", body
        assert body["telephony_leg_id"] and body["from_phone_number"] == "+12025550199"
        assert body["target_number"] == "+12025550104"

        rejected = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550103"},
            headers=procs.headers,
        )
        assert rejected.status_code == 200
        assert rejected.json()["status"] == "success"  # accepted; the carrier refuses later
        rejected_id = rejected.json()["call_session_id"]

        async def analytics(sid: str) -> dict[str, Any]:
            resp = await http.get(
                "/api/v1/call-analytics", params={"call_session_id": sid}, headers=procs.headers
            )
            assert resp.status_code == 200, resp.text
            detail: dict[str, Any] = resp.json()
            return detail

        async def failed() -> dict[str, Any] | None:
            detail = await analytics(rejected_id)
            return detail if detail["status"] == "failed" else None

        detail = await wait_until(failed, timeout=30)
        assert detail["failure_code"] == "provider_rejected"
        assert detail["provider_error_code"] == "21211"

        timeline = await analytics(body["call_session_id"])
        assert timeline["attempts"] == 3
        assert [e["type"] for e in timeline["events"]][:3] == [
            "created",
            "dial_attempt",
            "dial_attempt",
        ]

        replay = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550104", "wait": "dialed"},
            headers={**procs.headers, "Idempotency-Key": "e2e-1"},
        )
        assert replay.json()["call_session_id"] == body["call_session_id"]
        conflict = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550100"},
            headers={**procs.headers, "Idempotency-Key": "e2e-1"},
        )
        assert conflict.status_code == 409

        malformed = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550100", "agent_id": "x"},
            headers=procs.headers,
        )
        assert malformed.status_code == 422
        missing = await http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550100", "agent_id": str(uuid.uuid4())},
            headers=procs.headers,
        )
        assert missing.json()["failure_code"] == "agent_not_found"

        page = await http.get("/api/v1/call-analytics", headers=procs.headers)
        assert page.json()["total"] == 3
        ready = await http.get("/ready")
        assert ready.status_code == 200, ready.text

    # The carrier's ledger, written by the worker process: one dial for the success only.
    dials = procs.dials_by_session()
    assert dials == {uuid.UUID(body["call_session_id"]): 1}
