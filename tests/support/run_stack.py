"""`dialer run` as a user starts it: the process, its printed banner (key, curl line, UI link)
read the way a user copies them, and the calls placed with it. Shared by the e2e tests of the
run command, the CLI's errors and the browser."""

from __future__ import annotations

import os
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dialer.net import port_open
from tests.support.processes import KEY_PATTERN, STARTUP_TIMEOUT, children_of, dialer_command, spawn
from tests.support.waiting import wait_until
from tools.procs import Proc, process_alive


@dataclass
class Banner:
    key: str
    method: str
    url: str
    headers: dict[str, str]
    ui_line: str


def parse_banner(text: str) -> Banner:
    """The printed key and curl line, read the way a user copies them."""
    key_line = next(line for line in text.splitlines() if "API key" in line)
    key = KEY_PATTERN.search(key_line)
    assert key, key_line
    curl = next(line for line in text.splitlines() if line.strip().startswith("curl "))
    args = shlex.split(curl)
    method = args[args.index("-X") + 1] if "-X" in args else "GET"
    headers = {}
    for i, arg in enumerate(args):
        if arg in ("-H", "--header"):
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
    url = next(a for a in args if a.startswith("http"))
    ui_line = next((line for line in text.splitlines() if "Temporal UI" in line), "")
    return Banner(key=key.group(0), method=method, url=url, headers=headers, ui_line=ui_line)


class RunningStack:
    def __init__(self, tmp_path: Path, env: dict[str, str], name: str) -> None:
        self.proc: Proc = spawn(name, [*dialer_command(), "run"], env, tmp_path)

    async def banner(self) -> Banner:
        def printed() -> str | None:
            assert self.proc.alive(), self.proc.tail()
            text = self.proc.log.read_text(errors="replace")
            return text if re.search(r"^\s*curl ", text, re.MULTILINE) else None

        return parse_banner(await wait_until(printed, timeout=2 * STARTUP_TIMEOUT, interval=0.2))

    async def stop(self, *, whole_group: bool, ports: list[int]) -> None:
        """Ctrl-C: to `dialer run` alone, or to its process group as a terminal does."""
        children = children_of(self.proc.pid)
        assert len(children) >= 3, (children, self.proc.tail())  # dev server, worker, API
        if whole_group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.popen.send_signal(signal.SIGINT)
        try:
            await wait_until(lambda: not self.proc.alive(), timeout=60, interval=0.2)
        except AssertionError:
            alive = [pid for pid in children if process_alive(pid)]
            raise AssertionError(
                f"still running; children alive: {alive}\n{self.proc.tail()}"
            ) from None
        assert self.proc.popen.returncode == 0, self.proc.tail()
        assert not [pid for pid in children if process_alive(pid)], self.proc.tail()
        assert not [port for port in ports if port_open(port)]

    def kill(self) -> None:
        if self.proc.alive():
            self.proc.kill()


async def call_from_banner(banner: Banner, **extra: str) -> dict[str, Any]:
    url = httpx.URL(banner.url)
    url = url.copy_merge_params(extra) if extra else url
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.request(banner.method, url, headers=banner.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def ended_call(banner: Banner, call_session_id: str) -> dict[str, Any]:
    """call-analytics of a call once it completed."""
    analytics = banner.url.split("/api/")[0] + "/api/v1/call-analytics"

    async def completed() -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(
                analytics, params={"call_session_id": call_session_id}, headers=banner.headers
            )
        body: dict[str, Any] = resp.json()
        return body if body["call_status"] == "completed" else None

    return await wait_until(completed, timeout=60, interval=0.5)
