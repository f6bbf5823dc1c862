"""The worker's liveness, as a container health check can see it.

While it polls, the worker rewrites a small heartbeat file every
DIALER_WORKER_HEARTBEAT_INTERVAL_SECONDS, but only after Temporal answered a health check and
while every poller task is still running; it removes the file when it stops polling.
`dialer worker-health` (run in the worker's container) reads the file's age: fresh means the
process is alive, its event loop turns, and Temporal is reachable from it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from temporalio.client import Client

from core.config import Settings

log = logging.getLogger("infra.health")

# A health RPC slower than this counts as Temporal unreachable for this beat.
_PING_TIMEOUT = 5.0


def write_heartbeat(path: Path, task_queues: Sequence[str]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "queues": list(task_queues)}))
    tmp.replace(path)


def clear_heartbeat(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


async def heartbeat_loop(
    client: Client,
    settings: Settings,
    pollers: Sequence[asyncio.Task[None]],
) -> None:
    """Beat while every poller runs and Temporal answers; stop beating otherwise, so the
    file ages and the health check fails."""
    path = settings.heartbeat_path
    queues = [settings.task_queue, settings.dial_task_queue]
    while True:
        if all(not task.done() for task in pollers):
            try:
                healthy = await asyncio.wait_for(
                    client.service_client.check_health(), _PING_TIMEOUT
                )
            except Exception:
                healthy = False
            if healthy:
                # Synchronous on purpose (a few bytes): a write in a thread could land after
                # the shutdown removed the file, and the worker would look healthy again.
                write_heartbeat(path, queues)
            else:
                log.warning("Temporal did not answer the health check; heartbeat skipped")
        await asyncio.sleep(settings.worker_heartbeat_interval_seconds)


def worker_health_problem(settings: Settings, now: float | None = None) -> str | None:
    """None when the worker beat recently; otherwise what is wrong, in one line."""
    path = settings.heartbeat_path
    try:
        beat = json.loads(path.read_text())
        at = float(beat["at"])
    except FileNotFoundError:
        return f"no worker heartbeat at {path}: the worker is not running or not polling yet"
    except (ValueError, KeyError, TypeError):
        return f"unreadable worker heartbeat at {path}"
    age = (now if now is not None else time.time()) - at
    limit = settings.worker_heartbeat_max_age_seconds
    if age > limit:
        return (
            f"the worker heartbeat is {age:.0f}s old (limit {limit:.0f}s): the worker is stuck "
            "or cannot reach Temporal"
        )
    return None
