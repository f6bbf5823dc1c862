"""An agent's media stream endpoint for tests: a real WebSocket server on 127.0.0.1 that
records every message the carrier sends, and can answer, hang up or drop on cue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dialer.net import free_port


@dataclass
class AgentCall:
    """One connection to the agent, as the agent saw it."""

    path: str
    # Each message with the agent's loop time when it arrived.
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    def events(self) -> list[str]:
        return [m["event"] for _, m in self.messages]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["event"] == event]

    @property
    def start(self) -> dict[str, Any]:
        (start,) = self.of("start")
        return dict(start["start"])


# What the agent does once the stream has started: gets the socket and the start message.
OnStart = Callable[[ServerConnection, dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass
class Agent:
    server: Server
    port: int
    calls: list[AgentCall]
    connected: asyncio.Event

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    async def call(self, timeout: float = 10.0) -> AgentCall:
        """The first connection, once it closed."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        await asyncio.wait_for(self.calls[0].closed.wait(), timeout)
        return self.calls[0]


@asynccontextmanager
async def media_agent(
    on_start: OnStart | None = None, *, refuse_with: HTTPStatus | None = None
) -> AsyncIterator[Agent]:
    """An agent listening on a free port. `on_start` runs beside the reading of messages
    once `start` arrived; `refuse_with` answers every handshake with that HTTP status."""
    calls: list[AgentCall] = []
    connected = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if refuse_with is None:
            return None
        return connection.respond(refuse_with, "no agent here\n")

    async def handle(ws: ServerConnection) -> None:
        call = AgentCall(path=ws.request.path if ws.request else "")
        calls.append(call)
        connected.set()
        loop = asyncio.get_running_loop()
        try:
            async for raw in ws:
                message = json.loads(raw)
                call.messages.append((loop.time(), message))
                if message["event"] == "start":
                    call.started.set()
                    if on_start is not None:
                        task = loop.create_task(on_start(ws, message))
                        tasks.add(task)
        except ConnectionClosed:
            pass
        finally:
            call.close_code = ws.close_code
            call.closed.set()

    async with serve(handle, "127.0.0.1", 0, process_request=process_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Agent(server, port, calls, connected)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def unused_url() -> str:
    """A ws:// URL where nothing listens (connection refused)."""
    return f"ws://127.0.0.1:{free_port()}/media"
