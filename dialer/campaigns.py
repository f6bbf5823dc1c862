"""`dialer campaigns create --csv` and `dialer campaigns watch`: campaigns for operators without
a browser, through the HTTP API like any client (an API key; the embedded stack's demo key by
default)."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from core.config import Settings

# States a recipient leaves once its call was started (or it was skipped or canceled).
NOT_YET = ("not_started",)
IN_FLIGHT = ("queued", "calling")
STATE_ORDER = (
    "not_started",
    "queued",
    "calling",
    "completed",
    "failed",
    "busy",
    "no_answer",
    "skipped",
    "canceled",
)
# The dial rate shown is measured over this many seconds.
RATE_WINDOW_SECONDS = 10.0
BAR_WIDTH = 30


class ApiProblem(Exception):
    """The API could not be used: one line saying why and what to do."""


@dataclass
class Api:
    base_url: str
    key: str

    @classmethod
    def from_args(cls, settings: Settings, api: str | None, key: str | None) -> Api:
        base = (api or f"http://127.0.0.1:{settings.api_port}").rstrip("/")
        if not key:
            demo = settings.data_dir / "demo-api-key"
            key = demo.read_text().strip() if demo.exists() else None
        if not key:
            raise ApiProblem(
                "an API key is needed: --key KEY or DIALER_API_KEY (`dialer keys create`)"
            )
        return cls(base, key)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(
                method,
                self.base_url + path,
                headers={"x-api-key": self.key},
                timeout=60,
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise ApiProblem(
                f"cannot reach the API at {self.base_url} ({type(exc).__name__}): start it "
                "(`make run`) or point --api at it"
            ) from None


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # a 422 from validation: the first problem is enough
        first = detail[0] if detail else {}
        loc = ".".join(str(part) for part in first.get("loc", []))
        return f"{loc}: {first.get('msg', '')}".strip(": ")
    return str(detail or resp.text[:200])


def create_from_csv(
    api: Api,
    *,
    csv_path: Path,
    name: str,
    agent_id: str | None,
    workflow_id: str | None,
    phone_number_id: str | None,
    options: str | None,
    out: TextIO,
) -> int:
    """Upload the CSV file; report the accepted, skipped and rejected rows (each rejected row
    with its line and reason). Exit 0 when the campaign was created, 1 when it was not."""
    if not csv_path.is_file():
        raise ApiProblem(f"no such file: {csv_path}")
    if options is not None:
        try:
            json.loads(options)
        except ValueError:
            raise ApiProblem("--options must be JSON, e.g. '{\"calls_per_second\": 5}'") from None
    fields = {"batch_name": name}
    for key, value in (
        ("agent_id", agent_id),
        ("workflow_id", workflow_id),
        ("phone_number_id", phone_number_id),
        ("options", options),
    ):
        if value is not None:
            fields[key] = value
    with csv_path.open("rb") as data:
        resp = api.request(
            "POST",
            "/api/v1/batch-call/create",
            data=fields,
            files={"file": (csv_path.name, data, "text/csv")},
        )
    if resp.status_code == 201:
        body: dict[str, Any] = resp.json()
        campaign = body["campaign"]
        rejected = body["rejected"]
        out.write(
            f"campaign {campaign['id']} created ({campaign['state']}): "
            f"{body['accepted']} accepted, {body['skipped']} skipped, {len(rejected)} rejected\n"
        )
        for row in rejected:
            out.write(f"  rejected line {row['row']}: {row['reason']}\n")
        out.write(f"watch it: dialer campaigns watch {campaign['id']}\n")
        return 0
    # 422 with no usable row names the rows and their reasons in its detail.
    raise ApiProblem(f"no campaign created: HTTP {resp.status_code}: {_detail(resp)}")


@dataclass
class Snapshot:
    at: float
    started: int


class Watcher:
    """Renders a campaign's status answers: a progress bar of recipients done, the count per
    state, the dial rate over the last RATE_WINDOW_SECONDS, and why it waits."""

    def __init__(self) -> None:
        self._seen: deque[Snapshot] = deque()

    def line(self, status: dict[str, Any], now: float) -> str:
        counts: dict[str, int] = status["counts"]
        total = max(int(status["total_recipients"]), 1)
        left = sum(counts.get(s, 0) for s in (*NOT_YET, *IN_FLIGHT))
        done = total - left
        started = total - counts.get("not_started", 0) - counts.get("skipped", 0)
        started -= counts.get("canceled", 0)
        self._seen.append(Snapshot(now, started))
        while len(self._seen) > 2 and now - self._seen[0].at > RATE_WINDOW_SECONDS:
            self._seen.popleft()
        first = self._seen[0]
        rate = (started - first.started) / (now - first.at) if now > first.at else 0.0
        filled = round(BAR_WIDTH * done / total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        states = " ".join(f"{s} {counts[s]}" for s in STATE_ORDER if counts.get(s))
        text = (
            f"[{bar}] {done}/{status['total_recipients']} {status['state']} | {states} | "
            f"{rate:.1f} calls/s"
        )
        if status.get("waiting_for") and status["waiting_for"] != "pacing":
            text += f" | waiting for {status['waiting_for']}"
            if status.get("next_start_at"):
                text += f" until {status['next_start_at']}"
        return text


def watch(api: Api, campaign_id: str, *, interval: float, out: TextIO) -> int:
    """Follow the campaign until it is over (its finished_at is set); exit 0 then."""
    watcher = Watcher()
    live = out.isatty()
    last = ""
    while True:
        resp = api.request("GET", f"/api/v1/batch-call/{campaign_id}/status")
        if resp.status_code != 200:
            raise ApiProblem(f"campaign {campaign_id}: HTTP {resp.status_code}: {_detail(resp)}")
        status: dict[str, Any] = resp.json()
        text = watcher.line(status, time.monotonic())
        if live:
            out.write("\r\x1b[2K" + text)
        elif text != last:
            out.write(text + "\n")
        out.flush()
        last = text
        if status.get("finished_at"):
            if live:
                out.write("\n")
            out.write(f"campaign {campaign_id} {status['state']} at {status['finished_at']}\n")
            out.flush()
            return 0
        time.sleep(interval)
