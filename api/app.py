"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, OperationalError
from temporalio.client import Client

from api.headers import SecurityHeaders
from api.limits import (
    AuthFailureThrottle,
    BodySizeLimit,
    JSONBodyLimits,
    RateLimiter,
    document_common_answers,
)
from api.routes import (
    calls,
    campaigns,
    codec,
    demo_agent,
    docs,
    lines,
    observability,
    ops,
    suppressions,
    telephony,
    webhooks,
)
from api.routes.codec import CodecCORS
from core.config import Settings, get_settings
from infra.limiter import SharedLimits
from infra.metrics import HTTPObservability
from infra.tracing import fastapi_telemetry_off
from services.temporal import TemporalGateway, TemporalUnavailable
from store.db import get_engine

log = logging.getLogger("dialer.api")

DESCRIPTION = """Durable outbound call initiation. `POST /api/call/create_call` hands back
`request_id` and `call_session_id` at once; a Temporal workflow validates, persists, dials
with safe retries and records the outcome. Authenticate every `/api/...` route with
`x-api-key: <key>` or `Authorization: Bearer <key>`."""


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    temporal_client: Client | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = engine or get_engine(settings)
        app.state.temporal = TemporalGateway(settings, temporal_client)
        with suppress(TemporalUnavailable):
            # Connect now when possible; requests retry the connection when it is not.
            await app.state.temporal.client()
        yield

    app = FastAPI(
        title="Dialer",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The CDN pages FastAPI would serve are replaced by offline ones (api/routes/docs.py).
        docs_url=None,
        redoc_url=None,
        # No redirect from `/path/` to `/path`: Starlette builds it from the Host header, so
        # a forged Host made the API send clients elsewhere. A trailing slash is a 404.
        redirect_slashes=False,
        **fastapi_telemetry_off(),
    )
    docs.install_docs(app)

    @app.exception_handler(OperationalError)
    async def database_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for module in (calls, lines, suppressions, campaigns, webhooks, ops):
        app.include_router(module.router)
    if settings.env == "development":
        # The demo agent's media stream (no authentication, like any agent's): never in
        # production.
        app.include_router(demo_agent.router)
    install_limits(app, settings)
    install_observability(app, settings)
    return app


def install_observability(app: FastAPI, settings: Settings) -> None:
    """/metrics, the codec endpoint with CORS for the Temporal UI, request metrics and spans
    (added last, so outermost: even requests refused by the limits are counted)."""
    app.include_router(observability.router)
    app.include_router(codec.router)
    app.include_router(telephony.router)
    app.add_middleware(CodecCORS, origins=settings.cors_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HTTPObservability)


async def unstorable_value(_request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (e.g. a NUL character in PostgreSQL text): the client's
    input, so 422; the transaction was rolled back, nothing is half-written."""
    return JSONResponse(
        {"detail": "a value cannot be stored as given (e.g. a NUL character in a text field)"},
        status_code=422,
    )


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Per-key rate limit, auth-failure throttle per address, body size and JSON content
    limits, and the answers they add to the OpenAPI document."""
    # One storage for both, shared with every other API process when it is Redis.
    shared = SharedLimits(settings.limits_storage_url)
    app.state.rate_limiter = RateLimiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst, shared
    )
    app.state.auth_failures = AuthFailureThrottle(
        settings.auth_failures_per_minute, settings.auth_failure_burst, shared
    )
    app.add_exception_handler(DataError, unstorable_value)
    # Inside BodySizeLimit (added after it, so outer): it only reads bodies within the limit.
    app.add_middleware(JSONBodyLimits)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = plain_openapi()  # also kept as app.openapi_schema
            document_common_answers(schema, authenticated_prefixes=["/api/"])
        return schema

    # Replacing app.openapi is FastAPI's documented way to extend the document; mypy forbids
    # assigning to a method.
    app.openapi = openapi  # type: ignore[method-assign]
