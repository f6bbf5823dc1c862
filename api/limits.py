"""Limits of the HTTP edge, each with a clear answer: requests per API key (429 with
Retry-After), request body size (413), CSV upload size (413) and recipients per campaign (422).

The rate limit is a token bucket per API key held in the memory of each API process. Behind N
replicas a key may therefore reach N times the configured rate; a global limit needs a shared
counter (e.g. a gateway or a Redis/PostgreSQL bucket) in front of the replicas."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import Detail

# Buckets kept at once; the least recently used one is dropped past this (only valid keys
# reach the limiter, so this bounds memory, not fairness).
MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets: `burst` requests at once, refilled at `per_minute` per minute."""

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Sync routes run in a thread pool: the check must be atomic.
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for `key`. Returns 0 when allowed, else the seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        """Raise 429 with Retry-After (whole seconds, at least 1) when `key` is over its rate."""
        wait = self.acquire(key)
        if wait > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="rate limit exceeded for this API key; retry after the Retry-After delay",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


def check_recipient_count(count: int, limit: int) -> None:
    """Refuse a campaign with more recipients than allowed, before anything is written."""
    if count > limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"too many recipients: {count} given, at most {limit} per campaign "
            "(DIALER_MAX_CAMPAIGN_RECIPIENTS)",
        )


def _is_upload(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind in (b"multipart/form-data", b"text/csv")
    return False


class BodySizeLimit:
    """ASGI middleware: a body over the limit gets 413 before the route reads any of it.
    Uploads (multipart, text/csv) have their own, larger limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = _is_upload(scope)
        limit = self.max_upload_bytes if upload else self.max_bytes
        what = "upload" if upload else "request body"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, what, limit)
                return

        # Without a (truthful) Content-Length, count what arrives and stop at the limit: answer
        # 413 ourselves, tell the app the client left, and drop whatever it still sends.
        received = 0
        started = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        answered = True
                        await _too_large(send, what, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _too_large(send: Send, what: str, limit: int) -> None:
    body = Detail(detail=f"{what} too large: at most {limit} bytes").model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Answers any route may give besides its own, added to the OpenAPI document so it stays
# truthful for clients and fuzzers.
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
_DETAIL_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}}
AUTHENTICATED_ANSWERS: dict[str, dict[str, Any]] = {
    "429": {
        "description": "Rate limit of this API key exceeded",
        "headers": _RETRY_AFTER,
        "content": _DETAIL_REF,
    },
    "503": {
        "description": "The database is unavailable; retry after the Retry-After delay",
        "headers": _RETRY_AFTER,
        "content": _DETAIL_REF,
    },
}
BODY_TOO_LARGE = {"description": "Request body too large", "content": _DETAIL_REF}
BODY_UNREADABLE = {
    "description": "The body could not be decoded (e.g. not UTF-8)",
    "content": _DETAIL_REF,
}
# Routes answer 422 both for unreadable parameters (FastAPI's list of errors) and for values
# they refuse themselves with one message (e.g. an unparseable phone number).
_UNPROCESSABLE_SCHEMA = {
    "anyOf": [
        {"$ref": "#/components/schemas/HTTPValidationError"},
        {"$ref": "#/components/schemas/Detail"},
    ]
}
_METHODS = ("get", "put", "post", "patch", "delete")


def document_common_answers(schema: dict[str, Any], authenticated_prefixes: Iterable[str]) -> None:
    """Add 429/503 to authenticated operations, 400/413/422 to operations that take a body,
    and the single-message form to every 422."""
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Detail", Detail.model_json_schema()
    )
    prefixes = tuple(authenticated_prefixes)
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if path.startswith(prefixes):
                for code, answer in AUTHENTICATED_ANSWERS.items():
                    responses.setdefault(code, answer)
            if "requestBody" in operation:
                responses.setdefault("400", BODY_UNREADABLE)
                responses.setdefault("413", BODY_TOO_LARGE)
                # A body can always be refused (routes that parse it themselves, e.g. CSV).
                responses.setdefault(
                    "422",
                    {
                        "description": "Validation Error",
                        "content": {"application/json": {"schema": _UNPROCESSABLE_SCHEMA}},
                    },
                )
            unprocessable = responses.get("422", {}).get("content", {}).get("application/json")
            if unprocessable is not None:
                unprocessable["schema"] = _UNPROCESSABLE_SCHEMA
