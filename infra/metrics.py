"""Prometheus metrics of the API process (served at GET /metrics). The dial counter lives in the
worker process, which serves it with the Temporal SDK metrics (see activities/dialing.py)."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import call_context
from infra.tracing import tracing_enabled

HTTP_REQUESTS = Counter(
    "dialer_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "dialer_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CREATE_CALLS = Counter(
    "dialer_create_call",
    "create_call answers, by status and failure_code ('' when none)",
    ["status", "failure_code"],
)
# Name of the dial counter the worker records through the Temporal runtime's metric meter.
DIALS_METRIC = "dialer_dials"
# The worker's counter of webhook delivery attempts, by `outcome` (contracts.webhooks
# DeliveryOutcome: a fixed set, never a URL or an endpoint id).
WEBHOOK_DELIVERIES_METRIC = "dialer_webhook_deliveries"

# Paths that matched no route share one label, so scanners cannot blow up the label set.
UNMATCHED = "unmatched"
# Likewise for methods: HTTP lets a client send any token as its method, so every label value
# comes from a fixed set (OpenTelemetry's semantic conventions name the rest `_OTHER`). The
# route template and the status code are chosen by the app, never by the client.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "_OTHER"

access_log = logging.getLogger("dialer.access")


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_template(scope: Scope) -> str:
    """The template of the route that answered. FastAPI's own routes put themselves in the
    scope; plain Starlette routes (the OpenAPI document, the docs pages) only leave their
    endpoint, which is looked up among the app's routes."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is not None and app is not None:
        for candidate in getattr(app, "routes", ()):
            if getattr(candidate, "endpoint", None) is endpoint:
                return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class HTTPObservability:
    """Counts and times every request by route template (never the raw path, which holds ids
    and phone numbers), writes its access log line (the same: method, route template, status,
    never the path or the query string) and opens the server span of a trace when tracing is
    on."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = method_label(scope["method"])
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with ExitStack() as scoped:
            span = _server_span(scope) if tracing_enabled() else None
            if span is not None:
                scoped.enter_context(trace.use_span(span, end_on_exit=True))
            route = UNMATCHED
            try:
                # Ids bound by the request (create_call) end with it: they tag its lines only,
                # the access line included.
                with call_context(request_id=None, call_session_id=None):
                    try:
                        await self._app(scope, receive, send_status)
                    finally:
                        route = route_template(scope)
                        access_log.info(
                            '%s - "%s %s" %d %.1fms',
                            _client(scope),
                            method,
                            route,
                            status,
                            (time.perf_counter() - started) * 1000,
                        )
            finally:
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)


def _server_span(scope: Scope) -> trace.Span:
    """The request's server span, continuing the caller's trace (traceparent). Its attributes
    are chosen here: never the URL or query string, where phone numbers travel."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    return trace.get_tracer("dialer.api").start_span(
        method_label(scope["method"]),
        context=propagate.extract(headers),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method_label(scope["method"])},
    )
