"""Who am I, liveness and readiness."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.deps import AUTH_ERRORS, CurrentUser, EngineDep, SessionDep, TemporalDep
from api.schemas import AccountLimitsPublic, AccountUsagePublic, MePublic
from store import accounts
from store.models import User

router = APIRouter()


@router.get("/api/v1/me", response_model=MePublic, responses=AUTH_ERRORS, tags=["account"])
def me(user: CurrentUser, session: SessionDep) -> MePublic:
    """The user behind the credentials, the account's limits and what it uses now."""
    row = session.get(User, user.user_id)
    limits = accounts.limits_of(row) if row is not None else accounts.AccountLimits()
    return MePublic(
        user_id=user.user_id,
        email=user.email,
        api_key_prefix=user.key_prefix,
        limits=AccountLimitsPublic(**asdict(limits)),
        usage=AccountUsagePublic(calls_in_flight=accounts.calls_in_flight(session, user.user_id)),
    )


@router.get("/health", tags=["operations"])
def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _database_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/ready", tags=["operations"], responses={503: {"description": "Not ready"}})
async def ready(request: Request, engine: EngineDep, temporal: TemporalDep) -> JSONResponse:
    """Ready when the database and Temporal both answer, and the process is not shutting
    down (after SIGTERM it answers 503 while it drains, so load balancers stop sending)."""
    if getattr(request.app.state, "shutting_down", False):
        return JSONResponse({"ready": False, "shutting_down": True}, status_code=503)
    database = await run_in_threadpool(_database_answers, engine)
    orchestrator = await temporal.ping()
    ok = database and orchestrator
    return JSONResponse(
        {"ready": ok, "database": database, "temporal": orchestrator},
        status_code=200 if ok else 503,
    )
