"""`dialer run` (what `make run` calls), as a new user meets it: it prints a demo key and a curl
line that places a call; Ctrl-C stops every process it started; a second run reuses the data
and prints the same key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dialer.net import free_port
from tests.support.run_stack import RunningStack, call_from_banner, ended_call
from tools.procs import clean_env


@pytest.mark.slow
async def test_dialer_run_prints_a_working_curl_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    ports = {
        "DIALER_API_PORT": free_port(),
        "DIALER_TEMPORAL_PORT": free_port(),
        "DIALER_TEMPORAL_UI_PORT": free_port(),
        "DIALER_WORKER_METRICS_PORT": free_port(),
    }
    env = clean_env(
        DIALER_DATA_DIR=tmp_path / "data",
        DIALER_SHUTDOWN_DRAIN_SECONDS=0,
        **ports,
    )
    stack = RunningStack(tmp_path, env, "run1")
    try:
        banner = await stack.banner()
        assert banner.headers.get("x-api-key") == banner.key
        assert banner.method == "POST"
        assert f":{ports['DIALER_API_PORT']}/api/call/create_call" in banner.url
        assert str(ports["DIALER_TEMPORAL_UI_PORT"]) in banner.ui_line

        body = await call_from_banner(banner)
        assert body["status"] == "success", body
        assert body["request_id"] and body["call_session_id"]
        assert body["from_phone_number"] and body["target_number"] == "+12025550100"
        dialed = await call_from_banner(banner, wait="dialed")
        assert dialed["status"] == "success", dialed
        assert dialed["telephony_leg_id"] and dialed["from_phone_number"]
        assert dialed["call_session_id"] != body["call_session_id"]
        # The whole path of the first curl: the call reached the demo agent the API serves,
        # which hung up before the simulated callee would have.
        ended = await ended_call(banner, body["call_session_id"])
        (end,) = [
            e["detail"]["detail"]
            for e in ended["events"]
            if e["type"] == "call_status" and e["detail"]["status"] == "completed"
        ]
        assert end.startswith("the agent hung up"), end

        await stack.stop(whole_group=False, ports=list(ports.values()))
    finally:
        stack.kill()

    # Again on the same data: the same key, the calls of the first run still there.
    again = RunningStack(tmp_path, env, "run2")
    try:
        second = await again.banner()
        assert second.key == banner.key
        async with httpx.AsyncClient(timeout=30) as http:
            known = await http.get(
                banner.url.split("/api/")[0] + "/api/v1/call-analytics",
                params={"call_session_id": dialed["call_session_id"]},
                headers=second.headers,
            )
        assert known.status_code == 200, known.text
        assert known.json()["telephony_leg_id"] == dialed["telephony_leg_id"]
        await again.stop(whole_group=True, ports=list(ports.values()))
    finally:
        again.kill()
