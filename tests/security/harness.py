"""An in-process Dialer (API over ASGI + workers) on its own event loop in a thread, so that
synchronous drivers such as hypothesis and schemathesis can send it requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from temporalio.client import Client

from core.config import Settings

T = TypeVar("T")


class ThreadedStack:
    """Connects its own Temporal client to `settings.temporal_target` (a client belongs to the
    event loop that made it), starts the workers and the app's lifespan on a private loop."""

    def __init__(self, settings: Settings, engine: Engine, *, workers: bool = True) -> None:
        self.settings = settings
        self.engine = engine
        self._workers = workers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._exit = AsyncExitStack()
        self.app: FastAPI | None = None
        self.http: httpx.AsyncClient | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        from api.app import create_app
        from worker import build_workers

        client = await Client.connect(
            self.settings.temporal_target, namespace=self.settings.temporal_namespace
        )
        if self._workers:
            for w in build_workers(client, self.settings, self.engine):
                await self._exit.enter_async_context(w)
        self.app = create_app(self.settings, engine=self.engine, temporal_client=client)
        await self._exit.enter_async_context(self.app.router.lifespan_context(self.app))
        self.http = await self._exit.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://dialer")
        )

    def __enter__(self) -> ThreadedStack:
        self._thread.start()
        try:
            self.run(self._start())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.run(self._exit.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.http is not None
        request = self.http.build_request(method, url, **kwargs)
        # Buffer the body (multipart is streamed) so a validator can read the request back.
        request.read()
        return self.run(self.http.send(request))
