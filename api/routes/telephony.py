"""Provider webhooks: Twilio's status callbacks.

A callback is trusted only when its `X-Twilio-Signature` matches the exact public URL Twilio
called (DIALER_PUBLIC_BASE_URL, or the URL a proxy describes with X-Forwarded-Proto/Host),
signed with the account's auth token. Anything else gets 403 and changes nothing. A valid
callback becomes a `call_status` signal to the session's workflow; duplicates (the same
I-Twilio-Idempotency-Token, or a status the session already has) are absorbed."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session, select
from temporalio.service import RPCError

from api.deps import EngineDep, SettingsDep, TemporalDep
from api.schemas import Detail
from core.config import Settings
from services.call_status import CallStatusSink
from services.temporal import TemporalUnavailable
from services.webhooks import WebhookDispatcher
from store.models import CallEvent
from telephony.twilio import STATUS_CALLBACK_PATH, signature_matches, status_event

log = logging.getLogger(__name__)

router = APIRouter(tags=["telephony"])

# Idempotency tokens of callbacks already delivered, per API process (a repeat that reaches
# another replica is still absorbed by the status check and by the workflow itself).
_TOKENS_KEPT = 10_000


class _SeenTokens:
    def __init__(self, size: int = _TOKENS_KEPT) -> None:
        self._size = size
        self._tokens: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, token: str) -> bool:
        return token in self._tokens

    def add(self, token: str) -> None:
        self._tokens[token] = None
        while len(self._tokens) > self._size:
            self._tokens.popitem(last=False)


def _seen_tokens(request: Request) -> _SeenTokens:
    state = request.app.state
    if not hasattr(state, "twilio_seen_tokens"):
        state.twilio_seen_tokens = _SeenTokens()
    seen: _SeenTokens = state.twilio_seen_tokens  # app.state is untyped (Starlette's State)
    return seen


def signed_urls(settings: Settings, request: Request) -> list[str]:
    """The URLs Twilio may have signed: the configured public one, and the one described by
    a reverse proxy's X-Forwarded-Proto/Host; the URL as received only when neither exists."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    urls = []
    if settings.public_base_url:
        urls.append(settings.public_base_url.rstrip("/") + path)
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    if proto or host:
        scheme = (proto or request.url.scheme).split(",")[0].strip()
        netloc = (host or request.headers.get("host") or request.url.netloc).split(",")[0].strip()
        urls.append(f"{scheme}://{netloc}{path}")
    if not urls:
        urls.append(str(request.url))
    return urls


def _already_recorded(engine: EngineDep, session_id: uuid.UUID, status: str) -> bool:
    with Session(engine) as session:
        return (
            session.exec(
                select(CallEvent.id).where(
                    CallEvent.session_id == session_id, CallEvent.key == f"call:{status}"
                )
            ).first()
            is not None
        )


@router.post(
    STATUS_CALLBACK_PATH,
    status_code=204,
    responses={
        400: {"model": Detail, "description": "Signed, but names no call session"},
        403: {"model": Detail, "description": "Missing or invalid X-Twilio-Signature"},
        503: {"model": Detail, "description": "Temporal unreachable; Twilio may retry"},
    },
)
async def twilio_status(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    temporal: TemporalDep,
    call_session_id: Annotated[str | None, Query(max_length=64)] = None,
    attempt: Annotated[str | None, Query(max_length=80)] = None,
) -> Response:
    """Twilio's status callback for a call Dialer placed (form-encoded, signed by Twilio)."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    signature = request.headers.get("x-twilio-signature")
    body = (await request.body()).decode("utf-8", errors="replace")
    params = dict(parse_qsl(body, keep_blank_values=True))
    if not token or not signature:
        raise HTTPException(403, "missing or invalid X-Twilio-Signature")
    if not signature_matches(token, signed_urls(settings, request), params, signature):
        log.warning("Twilio callback with an invalid signature rejected")
        raise HTTPException(403, "missing or invalid X-Twilio-Signature")

    try:
        session_id = uuid.UUID(call_session_id or "")
    except ValueError as exc:
        raise HTTPException(400, "the callback URL names no call_session_id") from exc
    event = status_event(str(session_id), params)
    if event is None:
        return Response(status_code=204)  # a status Dialer does not follow (e.g. none)
    seen = _seen_tokens(request)
    idempotency = request.headers.get("i-twilio-idempotency-token")
    if idempotency and idempotency in seen:
        return Response(status_code=204)
    # A status recorded already is a repeat, except AsyncAmd's verdict: it comes as a second
    # `answered` with AnsweredBy, and the workflow acts on it (answering-machine modes).
    repeat = event.answered_by is None
    if repeat and await run_in_threadpool(_already_recorded, engine, session_id, event.status):
        return Response(status_code=204)

    sink = CallStatusSink(
        temporal.client, engine, WebhookDispatcher(temporal.client, engine, settings)
    )
    try:
        await sink([event])
    except (TemporalUnavailable, RPCError) as exc:
        # Not delivered: 503 lets Twilio retry; the workflow's polling recovers it anyway.
        raise HTTPException(503, "the call orchestrator is unreachable; retry") from exc
    if idempotency:
        seen.add(idempotency)
    return Response(status_code=204)
