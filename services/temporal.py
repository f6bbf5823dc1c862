"""One Temporal client per API process, connected lazily so the API serves (and records
`orchestrator_unavailable`) while Temporal is down."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client

from core.config import Settings
from infra.temporal_client import connect

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


class TemporalUnavailable(Exception):
    pass


class TemporalGateway:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        # Bounds the create_call requests holding a wait open at once (each is a long poll).
        self.waits = asyncio.Semaphore(settings.max_inflight_waits)

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect(self._settings),
                        CONNECT_TIMEOUT,
                    )
                except Exception as exc:
                    log.warning("Temporal is unreachable at %s", self._settings.temporal_target)
                    raise TemporalUnavailable(str(exc)) from exc
        return self._client

    async def ping(self) -> bool:
        try:
            client = await self.client()
            return await asyncio.wait_for(client.service_client.check_health(), 3.0)
        except Exception:
            return False
