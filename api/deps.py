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
from sqlmodel import Session, select

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


def get_settings_dep(request: Request) -> Settings:
    # app.state is Starlette's State, whose attributes are Any: the getters name what lifespan
    # put there.
    settings: Settings = request.app.state.settings
    return settings


def get_engine_dep(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_db(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_temporal(request: Request) -> TemporalGateway:
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


def get_current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Principal:
    key = x_api_key or (credentials.credentials if credentials else None)
    throttle = auth_failure_throttle(request)
    if throttle is None:
        return _authenticate(request, session, settings, key)
    throttle.check(request)  # an address that failed too often is not even looked up
    try:
        return _authenticate(request, session, settings, key)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            throttle.failed(request)
        raise


def _authenticate(
    request: Request, session: Session, settings: Settings, key: str | None
) -> Principal:
    if not key:
        raise _unauthorized("missing API key: send x-api-key or Authorization: Bearer")
    prefix = key_prefix(key)
    if prefix is None:
        raise _unauthorized("invalid API key")
    digest = hash_key(key, settings.secret_key)
    candidates = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).all()
    match = None
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            match = candidate
    if match is None or match.revoked_at is not None:
        raise _unauthorized("invalid API key")
    user = session.get(User, match.user_id)
    if user is None:
        raise _unauthorized("invalid API key")
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        # Only a valid key spends tokens, so nobody can exhaust another user's budget.
        limiter.check(str(match.id))
    principal = Principal(user_id=user.id, email=user.email, key_prefix=prefix)
    # Hand the pooled connection back now: create_call keeps its request open for the whole
    # wait budget, and a connection held per waiting request would exhaust the pool (and
    # starve the in-process workers). The session stays usable; it reconnects on next use.
    session.close()
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]
