"""Dependencies: database session, the authenticated user, the Temporal gateway."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.limits import auth_failure_throttle
from api.schemas import Detail
from core.config import Settings
from core.security import hash_key, key_prefix
from services.lines import LineConfirmer
from services.temporal import TemporalGateway
from store.models import ApiKey, User

api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="Your API key.")
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`.")

# FastAPI's type for the `responses=` of a route or router: extra answers by status code.
Responses = dict[int | str, dict[str, Any]]

# The answer every authenticated route may give (routers pass it as `responses=`).
AUTH_ERRORS: Responses = {401: {"model": Detail, "description": "Missing or invalid API key"}}


# The getters of app.state are `async def`: FastAPI runs a plain `def` dependency in its
# thread pool, a hand-off to a thread and back per dependency and request, for an attribute.
async def get_settings_dep(request: Request) -> Settings:
    # app.state is Starlette's State, whose attributes are Any: the getters name what lifespan
    # put there.
    settings: Settings = request.app.state.settings
    return settings


async def get_engine_dep(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_db(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def get_temporal(request: Request) -> TemporalGateway:
    temporal: TemporalGateway = request.app.state.temporal
    return temporal


def get_line_confirmer(request: Request) -> LineConfirmer:
    """The carriers a line is confirmed at, built on first use (no request reaches a carrier
    before a line is registered or confirmed)."""
    state = request.app.state
    if getattr(state, "line_confirmer", None) is None:
        try:
            state.line_confirmer = LineConfirmer.from_settings(state.settings)
        except ValueError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    confirmer: LineConfirmer = state.line_confirmer
    return confirmer


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]
SessionDep = Annotated[Session, Depends(get_db)]
TemporalDep = Annotated[TemporalGateway, Depends(get_temporal)]
LineConfirmerDep = Annotated[LineConfirmer, Depends(get_line_confirmer)]


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    key_prefix: str


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def get_current_user(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Principal:
    key = x_api_key or (credentials.credentials if credentials else None)
    # The checks block (the database; the limits' storage, Redis when shared): one trip to
    # the thread pool for all of them.
    return await run_in_threadpool(_check, request, engine, settings, key)


def _check(request: Request, engine: Engine, settings: Settings, key: str | None) -> Principal:
    throttle = auth_failure_throttle(request)
    if throttle is None:
        return _authenticate(request, engine, settings, key)
    throttle.check(request)  # an address that failed too often is not even looked up
    try:
        return _authenticate(request, engine, settings, key)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            throttle.failed(request)
        raise


def _authenticate(
    request: Request, engine: Engine, settings: Settings, key: str | None
) -> Principal:
    if not key:
        raise _unauthorized("missing API key: send x-api-key or Authorization: Bearer")
    prefix = key_prefix(key)
    if prefix is None:
        raise _unauthorized("invalid API key")
    digest = hash_key(key, settings.secret_key)
    # Every request reads its key (no cache: a revoked key fails on the next request), with
    # its user, in one statement; the connection goes back to the pool at once (create_call
    # keeps its request open for the whole wait budget, and a connection held per waiting
    # request would exhaust the pool and starve the in-process workers).
    with Session(engine) as session:
        candidates = session.exec(
            select(ApiKey, User)
            .join(User, col(User.id) == col(ApiKey.user_id))
            .where(ApiKey.prefix == prefix)
        ).all()
    match = None
    for candidate, owner in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            match = candidate, owner
    if match is None or match[0].revoked_at is not None:
        raise _unauthorized("invalid API key")
    api_key, user = match
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        # Only a valid key spends tokens, so nobody can exhaust another user's budget.
        limiter.check(str(api_key.id))
    return Principal(user_id=user.id, email=user.email, key_prefix=prefix)


CurrentUser = Annotated[Principal, Depends(get_current_user)]
