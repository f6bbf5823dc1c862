"""The demo agent over the running API (`dialer api` and `dialer worker` as processes): a call
whose agent's media stream is the API's own demo endpoint is answered with a tone and a mark,
hung up by the agent after its few seconds, and the API's log names the call's ids and its
variables' names, never their values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from api.routes.demo_agent import GREETING_MILLISECONDS, HANG_UP_AFTER_SECONDS, MEDIA_PATH
from telephony.media_stream import FRAME_MS, StreamEnd, stream_call
from tests.support.processes import running_processes
from tests.support.stack import CREATE_CALL
from tests.support.waiting import wait_until

GREETING_FRAMES = GREETING_MILLISECONDS // FRAME_MS


async def test_the_demo_agent_answers_a_call_and_hangs_up(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    async with running_processes(
        tmp_path, e2e_temporal, temporal_client, DIALER_LOG_LEVEL="INFO"
    ) as procs:
        demo = f"ws://127.0.0.1:{procs.api_port}{MEDIA_PATH}"

        # The carrier's side, straight at the endpoint: the greeting, its mark, the hang-up.
        result = await stream_call(
            demo,
            call_sid="SMe2e",
            parameters={"request_id": "e2e-request", "first_name": "Ada"},
            talk_seconds=3 * HANG_UP_AFTER_SECONDS,
        )
        assert result.end == StreamEnd.AGENT_HUNG_UP, result.detail
        assert (result.agent.media, result.agent.marks) == (GREETING_FRAMES, 1)
        assert result.agent.marks_echoed == 1
        assert (
            0.9 * HANG_UP_AFTER_SECONDS * 50
            <= result.frames_sent
            <= 1.2 * (HANG_UP_AFTER_SECONDS * 50)
        )

        # A whole call: API, workflow, dial worker, simulated carrier, demo agent.
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=30) as http:
            agent = await http.post(
                "/api/v1/agents",
                json={"name": "demo", "media_stream_url": demo},
                headers=procs.headers,
            )
            assert agent.status_code == 201, agent.text
            resp = await http.post(
                CREATE_CALL,
                params={"phoneNumber": "+12025550100", "agent_id": agent.json()["id"]},
                json={"variables": {"first_name": "Grace", "plan": "gold"}},
                headers=procs.headers,
            )
            assert resp.status_code == 200, resp.text
            sid = resp.json()["call_session_id"]

            async def completed() -> dict[str, Any] | None:
                r = await http.get(
                    "/api/v1/call-analytics",
                    params={"call_session_id": sid},
                    headers=procs.headers,
                )
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return body if body["call_status"] == "completed" else None

            call = await wait_until(completed, timeout=60, interval=0.5)
        # Whole logs: the access log of the polling above pushes the start out of a tail.
        logs = "\n".join(
            proc.log.read_text(errors="replace")
            for proc in (procs.api, *procs.workers)
            if proc is not None
        )

    # The demo agent hung up before the simulated callee's 8 s were over.
    assert call["duration_seconds"] == round(HANG_UP_AFTER_SECONDS)
    (end,) = [
        e["detail"]["detail"]
        for e in call["events"]
        if e["type"] == "call_status" and e["detail"]["status"] == "completed"
    ]
    assert end.startswith("the agent hung up")
    assert f"the agent sent {GREETING_FRAMES} media messages" in end and "1 marks" in end
    started = [line for line in logs.splitlines() if "demo agent: stream" in line]
    assert any(sid in line and "variables first_name, plan" in line for line in started), logs
    assert "Grace" not in logs and "gold" not in logs and "Ada" not in logs
