"""Prometheus metrics of the API process (served at GET /metrics). The dial counter lives in the
worker process, which serves it with the Temporal SDK metrics (see activities/dialing.py)."""

from __future__ import annotations

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

# Paths that matched no route share one label, so scanners cannot blow up the label set.
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class HTTPObservability:
    """Counts and times every request by route template (never the raw path, which holds ids
    and phone numbers), and opens the server span of a trace when tracing is on."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"]
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
            try:
                # Ids bound by the request (create_call) end with it: they tag its lines only.
                with call_context(request_id=None, call_session_id=None):
                    await self._app(scope, receive, send_status)
            finally:
                route = route_template(scope)
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
        scope["method"],
        context=propagate.extract(headers),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": scope["method"]},
    )
