"""One webhook request, safely: the host resolved and every address checked (production
refuses loopback, private, link-local and metadata addresses), the connection pinned to the
address that was checked (so DNS cannot answer differently a moment later), no redirects,
a time limit on the whole exchange and only the first bytes of the answer read."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.webhooks import address_problem, url_problem

USER_AGENT = "Dialer-Webhooks/1"


class AddressRefused(Exception):
    """The URL, or an address its host resolves to, is not allowed (the message says why)."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes  # at most the cap


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


async def checked_address(url: str, *, production: bool) -> str | None:
    """The address to connect to (production), after checking the URL and every address its
    host resolves to: one refused address refuses the URL, since DNS may hand out any of
    them. None in development, where the URL is used as it is. Raises AddressRefused."""
    problem = url_problem(url, production=production)
    if problem:
        raise AddressRefused(problem)
    if not production:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise AddressRefused(f"the URL's host does not resolve ({exc.strerror or exc})") from exc
    if not addresses:
        raise AddressRefused("the URL's host does not resolve")
    for address in addresses:
        problem = address_problem(address, production=True)
        if problem:
            raise AddressRefused(problem)
    return addresses[0]


def _pinned(url: str, address: str) -> tuple[str, str, str]:
    """(the URL with the address as its host, the Host header, the TLS server name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc)), host_header, host


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    production: bool,
    timeout_seconds: float,
    max_response_bytes: int,
) -> Answer:
    """POST the body once. Raises AddressRefused, httpx.HTTPError or TimeoutError."""
    address = await checked_address(url, production=production)
    send_headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **headers,
    }
    extensions: dict[str, str] = {}
    target = url
    if address is not None:
        target, send_headers["host"], extensions["sni_hostname"] = _pinned(url, address)
    request = client.build_request(
        "POST", target, content=body, headers=send_headers, extensions=extensions
    )
    async with asyncio.timeout(timeout_seconds):
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            read = bytearray()
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= max_response_bytes:
                    break
        finally:
            await response.aclose()
    return Answer(status_code=response.status_code, body=bytes(read[:max_response_bytes]))
