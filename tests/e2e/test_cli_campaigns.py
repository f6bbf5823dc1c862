"""`dialer campaigns create --csv` and `dialer campaigns watch` against a running API and
worker, as an operator without a browser uses them."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from dialer.net import free_port
from tests.support.processes import DialerProcesses, dialer_command


def run(procs: DialerProcesses, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dialer_command(), *args],
        env=procs.env,
        cwd=procs.cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
async def test_create_from_csv_then_watch_until_it_ends(
    dialer_processes: DialerProcesses, tmp_path: Path
) -> None:
    procs = dialer_processes
    async with httpx.AsyncClient(base_url=procs.base_url, headers=procs.headers) as http:
        agent = (await http.post("/api/v1/agents", json={"name": "campaign agent"})).json()
    csv = tmp_path / "recipients.csv"
    csv.write_text(
        "phone_number,first_name\n"
        "+12025550100,Ada\n"
        "+12025550101,Grace\n"
        "+12025550100,Ada again\n"  # a duplicate: stored as skipped
        "not a number,Nobody\n"  # line 5: rejected
        "+12025550102,Edsger\n"
    )
    api = ["--api", procs.base_url, "--key", procs.key]
    created = run(
        procs,
        "campaigns",
        "create",
        "--csv",
        str(csv),
        "--name",
        "CLI campaign",
        "--agent-id",
        agent["id"],
        "--options",
        '{"calls_per_second": 5}',
        *api,
    )
    assert created.returncode == 0, created.stderr
    assert "3 accepted, 1 skipped, 1 rejected" in created.stdout, created.stdout
    assert re.search(r"rejected line 5: .+", created.stdout), created.stdout
    found = re.search(r"campaign ([0-9a-f-]{36}) created", created.stdout)
    assert found, created.stdout
    campaign_id = found.group(1)
    assert f"dialer campaigns watch {campaign_id}" in created.stdout

    watched = run(procs, "campaigns", "watch", campaign_id, "--interval", "0.3", *api)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.strip().splitlines()
    assert lines[-1].startswith(f"campaign {campaign_id} completed at "), lines
    last = lines[-2]
    assert last.startswith("[" + "#" * 30 + "] 4/4 completed"), last
    for state in ("completed 1", "busy 1", "no_answer 1", "skipped 1"):
        assert state in last, last
    assert all("calls/s" in line for line in lines[:-1]), lines
    assert any(re.search(r"calling \d", line) for line in lines), lines  # it was live


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
async def test_campaign_commands_fail_in_one_line(
    dialer_processes: DialerProcesses, tmp_path: Path
) -> None:
    procs = dialer_processes
    api = ["--api", procs.base_url, "--key", procs.key]
    unknown = run(procs, "campaigns", "watch", str(uuid.uuid4()), *api)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr, unknown.stderr
    nobody = ["--api", f"http://127.0.0.1:{free_port()}", "--key", procs.key]
    down = run(procs, "campaigns", "watch", str(uuid.uuid4()), *nobody)
    assert down.returncode == 1 and "cannot reach the API" in down.stderr, down.stderr
    missing = run(
        procs,
        "campaigns",
        "create",
        "--csv",
        str(tmp_path / "none.csv"),
        "--name",
        "x",
        "--agent-id",
        str(uuid.uuid4()),
        *api,
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr, missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("phone_number\nnot a number\n")
    rejected = run(
        procs,
        "campaigns",
        "create",
        "--csv",
        str(bad),
        "--name",
        "x",
        "--agent-id",
        str(uuid.uuid4()),
        *api,
    )
    assert rejected.returncode == 1, rejected.stdout
    for done in (unknown, down, missing, rejected):
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
