"""Limits of the HTTP edge, each with a clear answer: requests per API key (429 with
Retry-After), failed authentication per client address (429 with Retry-After), request body
size (413), CSV upload size (413), what a JSON body may hold (422: no NaN or Infinity, bounded
depth and number sizes) and recipients per campaign (422).

The rate limit and the auth-failure throttle are moving windows of the `limits` library in the
storage every API process shares (infra/limiter.py, DIALER_LIMITS_STORAGE_URL): Redis behind
several replicas, so a key (or an address) gets its rate once for the whole deployment, not
once per process; memory for the embedded stack's single API."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import Detail
from infra.limiter import SharedLimits, bucket_as_window


class RateLimiter:
    """`burst` requests at once and `per_minute` in the long run, per key: a moving window of
    `burst` requests per `burst / rate` seconds (infra/limiter.py `bucket_as_window`), held in
    the shared storage, so every API process counts the same requests."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        limits: SharedLimits | None = None,
        namespace: str = "api-key",
    ) -> None:
        self._item = bucket_as_window(per_minute, burst)
        self._limits = limits or SharedLimits()
        self._namespace = namespace

    def acquire(self, key: str) -> float:
        """Spend one request of `key`. Returns 0 when allowed, else the seconds to wait."""
        return self._limits.hit(self._item, self._namespace, key).wait

    def wait_for(self, key: str) -> float:
        """The seconds until `key` may go again (0 when it may), spending nothing."""
        return self._limits.test(self._item, self._namespace, key).wait

    def check(self, key: str) -> None:
        """Raise 429 with Retry-After (whole seconds, at least 1) when `key` is over its rate."""
        wait = self.acquire(key)
        if wait > 0:
            raise _too_many(
                "rate limit exceeded for this API key; retry after the Retry-After delay", wait
            )


def _too_many(detail: str, wait: float) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=detail,
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


class AuthFailureThrottle:
    """Failed authentication per client address: each failure spends a token of the
    address's bucket; an address with none left is refused (429) before its credentials are
    looked at, so guessing keys costs the guesser, not the database. The address is the
    peer's, or the one a trusted proxy names (DIALER_TRUSTED_PROXIES, read by uvicorn)."""

    def __init__(self, per_minute: int, burst: int, limits: SharedLimits | None = None) -> None:
        self._buckets = RateLimiter(per_minute, burst, limits, namespace="auth-failures")

    @staticmethod
    def address(request: Request) -> str:
        return request.client.host if request.client else "-"

    def check(self, request: Request) -> None:
        """Raise 429 when this address has failed too often."""
        wait = self._buckets.wait_for(self.address(request))
        if wait > 0:
            raise _too_many(
                "too many failed authentication attempts from this address; retry after the "
                "Retry-After delay",
                wait,
            )

    def failed(self, request: Request) -> None:
        self._buckets.acquire(self.address(request))


def auth_failure_throttle(request: Request) -> AuthFailureThrottle | None:
    """The app's throttle (install_limits puts it on app.state), if any."""
    throttle = getattr(request.app.state, "auth_failures", None)
    return throttle if isinstance(throttle, AuthFailureThrottle) else None


# What a JSON body may hold. Python's json module reads NaN, Infinity and 1e400 (as inf),
# which are not JSON (RFC 8259) and cannot be written back in an error message; it recurses
# once per nesting level, and refuses integers past 4,300 digits with a ValueError. Dialer's
# bodies are shallow and their numbers small, so these bounds refuse nothing real.
MAX_JSON_DEPTH = 32
MAX_JSON_NUMBER_CHARS = 100


class UnacceptableJSON(ValueError):
    """Valid JSON syntax, or Python's extensions of it, that Dialer refuses to read."""


def _no_constant(name: str) -> Any:
    raise UnacceptableJSON(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise UnacceptableJSON(f"a number has more than {MAX_JSON_NUMBER_CHARS} characters")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise UnacceptableJSON(f"a number has more than {MAX_JSON_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise UnacceptableJSON(f"the number {text} is too large")
    return value


def _depth(value: Any) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            todo.extend(
                (child, level + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def loads_json(raw: str | bytes) -> Any:
    """`json.loads` for bodies from clients. Raises json.JSONDecodeError (or
    UnicodeDecodeError) for text that is not JSON at all, UnacceptableJSON for NaN, Infinity,
    numbers beyond MAX_JSON_NUMBER_CHARS or out of float range, and nesting deeper than
    MAX_JSON_DEPTH."""
    try:
        value = json.loads(
            raw, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float
        )
    except RecursionError as exc:
        raise UnacceptableJSON(f"nested deeper than {MAX_JSON_DEPTH} levels") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise UnacceptableJSON(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _is_json(scope: Scope) -> bool:
    """Whether the app would read this body as JSON: FastAPI does for application/json,
    any `+json` type, and a body without a content type."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            kind: bytes = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True


class JSONBodyLimits:
    """ASGI middleware: a JSON body that loads_json refuses gets 422 with the reason before
    any route reads it, so every JSON route, present and future, is covered. Text that is not
    JSON at all goes on to the route, which answers it as it always has. Runs inside
    BodySizeLimit, so what it holds in memory is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        problem = None
        if body.strip():
            try:
                loads_json(body)
            except UnacceptableJSON as exc:
                problem = str(exc)
            except (ValueError, UnicodeDecodeError):
                pass  # not JSON at all: the route's own answer
        if problem is not None:
            await _answer(send, 422, f"the JSON body cannot be accepted: {problem}")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


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
    await _answer(send, 413, f"{what} too large: at most {limit} bytes")


async def _answer(send: Send, code: int, detail: str) -> None:
    body = Detail(detail=detail).model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
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
