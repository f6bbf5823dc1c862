"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from temporalio.client import Client

from api.routes import calls, campaigns, codec, lines, observability, ops, suppressions
from api.routes.codec import CodecCORS
from api.temporal import TemporalGateway, TemporalUnavailable
from dialer.config import Settings, get_settings
from dialer.metrics import HTTPObservability
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

    app = FastAPI(title="Dialer", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)

    @app.exception_handler(OperationalError)
    async def database_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for module in (calls, lines, suppressions, campaigns, ops):
        app.include_router(module.router)
    install_observability(app, settings)
    return app


def install_observability(app: FastAPI, settings: Settings) -> None:
    """/metrics, the codec endpoint with CORS for the Temporal UI, request metrics and spans
    (added last, so outermost: even requests refused by the limits are counted)."""
    app.include_router(observability.router)
    app.include_router(codec.router)
    app.add_middleware(CodecCORS, origins=settings.cors_origins)
    app.add_middleware(HTTPObservability)
