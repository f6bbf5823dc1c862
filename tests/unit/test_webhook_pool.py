"""One user's slow receivers must not hold the connections another user's deliveries need:
the worker's one HTTP client has no connection cap of its own (its delivery slots bound it).
With httpx's default cap of 100, the 101st delivery waited in the pool for a slow receiver's
connection and failed with PoolTimeout, though its own receiver was up."""

from __future__ import annotations

import asyncio
import time

from activities.webhooks import DeliveryConfig, delivery_client
from infra.webhook_http import post

CONFIG = DeliveryConfig(
    secret_key="unused",
    production=False,
    attempt_timeout_seconds=10.0,
    retry_initial_seconds=1.0,
    retry_max_seconds=1.0,
    disable_after_seconds=60.0,
    max_response_bytes=1024,
)
SLOW = 120  # more than httpx's default cap of 100 connections


async def test_slow_receivers_do_not_hold_the_connections_of_a_fast_one() -> None:
    connected = 0
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connected
        connected += 1
        await release.wait()  # never answers while the test looks
        writer.close()

    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    slow_server = await asyncio.start_server(slow, "127.0.0.1", 0)
    fast_server = await asyncio.start_server(fast, "127.0.0.1", 0)
    slow_port = slow_server.sockets[0].getsockname()[1]
    fast_port = fast_server.sockets[0].getsockname()[1]
    client = delivery_client(CONFIG)

    async def send(port: int, n: int) -> int:
        answer = await post(
            client,
            f"http://127.0.0.1:{port}/hook/{n}",
            b"{}",
            {},
            production=False,
            timeout_seconds=CONFIG.attempt_timeout_seconds,
            max_response_bytes=CONFIG.max_response_bytes,
        )
        return answer.status_code

    stuck = [asyncio.create_task(send(slow_port, n)) for n in range(SLOW)]
    try:
        # Well within the attempt timeout: with a cap, the ones beyond it never connect.
        deadline = time.monotonic() + 4
        while connected < SLOW and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert connected == SLOW
        started = time.monotonic()
        assert await send(fast_port, 0) == 204
        assert time.monotonic() - started < 2.0
    finally:
        release.set()
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await client.aclose()
        slow_server.close()
        fast_server.close()
