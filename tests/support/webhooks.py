"""Webhook receivers as real processes (tests/support/webhook_receiver.py) and what they got,
verified with the Standard Webhooks reference library (never Dialer's own signer)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from dialer.net import free_port, port_open
from tools.procs import Proc, clean_env, spawn

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    proc: Proc
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{uuid.uuid4().hex[:6]}"

    def attempts(self) -> list[dict[str, Any]]:
        from tests.support.webhook_receiver import read_log

        return read_log(self.log)

    def restart(self) -> None:
        self.proc.start()
        wait_port(self.port)


def wait_port(port: int, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"receiver not listening on {port}")
        time.sleep(0.05)


def start_receiver(
    workdir: Path,
    *,
    fail_first: int = 0,
    delay: float = 0.0,
    status: int = 204,
    port: int | None = None,
) -> Receiver:
    port = port or free_port()
    name = f"receiver-{port}"
    log = workdir / f"{name}.jsonl"
    args = [sys.executable, "-m", "tests.support.webhook_receiver", "--port", str(port)]
    args += ["--log", str(log), "--fail-first", str(fail_first), "--delay", str(delay)]
    args += ["--status", str(status)]
    proc = spawn(name, args, clean_env(PYTHONPATH=ROOT), workdir)
    wait_port(port)
    return Receiver(proc=proc, port=port, log=log)


@contextmanager
def receiver(workdir: Path, **options: Any) -> Iterator[Receiver]:
    r = start_receiver(workdir, **options)
    try:
        yield r
    finally:
        r.proc.stop()


def verified(attempt: dict[str, Any], *secrets: str) -> dict[str, Any]:
    """The attempt's event, after every given secret verified its signature on its own."""
    payload: dict[str, Any] = {}
    for secret in secrets:
        payload = Webhook(secret).verify(attempt["body"], attempt["headers"])
    return payload


def delivered(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts answered 2xx, each once per webhook-id (first success), in arrival order."""
    seen: set[str] = set()
    found = []
    for a in attempts:
        msg_id = a["headers"]["webhook-id"]
        if 200 <= a["status"] < 300 and msg_id not in seen:
            seen.add(msg_id)
            found.append(a)
    return found


def events_of(attempts: list[dict[str, Any]], key: str, value: str) -> list[str]:
    """The types of the delivered events whose data[key] is value, in arrival order."""
    types = []
    for a in delivered(attempts):
        body = json.loads(a["body"])
        if body["data"].get(key) == value:
            types.append(body["type"])
    return types
