"""The in-process Dialer (the API over ASGI and the workers), assembled here and only here."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from core.config import Settings

CREATE_CALL = "/api/call/create_call"

T = TypeVar("T")


@dataclass
class Stack:
    """An in-process Dialer: the API over ASGI and the workers, on a Temporal server."""

    settings: Settings
    engine: Engine
    client: Client
    http: httpx.AsyncClient


# The `stack_factory` fixture (tests/integration/conftest.py): settings overrides -> a stack.
StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@asynccontextmanager
async def running_workers(
    client: Client, settings: Settings, engine: Engine, *, dial: bool = True
) -> AsyncIterator[list[Worker]]:
    """The workers worker.py builds, running until the block ends. `dial=False` runs the call
    worker alone, as when every dial worker is down."""
    from worker import build_workers

    workers = build_workers(client, settings, engine)
    if not dial:
        workers = [w for w in workers if w.task_queue == settings.task_queue]
    async with AsyncExitStack() as stack_:
        for w in workers:
            await stack_.enter_async_context(w)
        yield workers


@asynccontextmanager
async def open_stack(
    settings: Settings,
    engine: Engine,
    client: Client | None,
    *,
    workers: bool = True,
) -> AsyncIterator[Stack]:
    """The API over ASGI (and, unless `workers=False`, the workers) with these settings.
    `client=None` lets the app connect by itself to `settings.temporal_target`."""
    from api.app import create_app

    async with AsyncExitStack() as stack_:
        if workers:
            assert client is not None
            await stack_.enter_async_context(running_workers(client, settings, engine))
        app = create_app(settings, engine=engine, temporal_client=client)
        await stack_.enter_async_context(app.router.lifespan_context(app))
        http = await stack_.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dialer")
        )
        # client=None is for a stack whose test never reads stack.client (test_degraded's
        # unreachable server): a Stack keeps `client: Client` for every other test.
        yield Stack(settings=settings, engine=engine, client=cast(Client, client), http=http)


async def create_call(
    stack: Stack,
    headers: dict[str, str],
    number: str,
    *,
    wait: str | None = None,
    idempotency_key: str | None = None,
    body: Any = None,  # Any: callers spread str-valued query dicts into **params
    **params: Any,
) -> httpx.Response:
    """POST create_call; `body` is its optional JSON body (the call's variables and metadata)."""
    query: dict[str, Any] = {"phoneNumber": number, **params}
    if wait is not None:
        query["wait"] = wait
    if idempotency_key is not None:
        headers = {**headers, "Idempotency-Key": idempotency_key}
    return await stack.http.post(CREATE_CALL, params=query, headers=headers, json=body)


class ThreadedStack:
    """`open_stack` on a private event loop in a thread, so that synchronous drivers such as
    hypothesis and schemathesis can send it requests. Connects its own Temporal client to
    `settings.temporal_target` (a client belongs to the event loop that made it)."""

    def __init__(self, settings: Settings, engine: Engine, *, workers: bool = True) -> None:
        self.settings = settings
        self.engine = engine
        self._workers = workers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._exit = AsyncExitStack()
        self.http: httpx.AsyncClient | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        client = await Client.connect(
            self.settings.temporal_target, namespace=self.settings.temporal_namespace
        )
        stack = await self._exit.enter_async_context(
            open_stack(self.settings, self.engine, client, workers=self._workers)
        )
        self.http = stack.http

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
