"""The codec endpoint (Temporal's remote codec protocol), so an authorised operator reads the
encrypted payloads in the Temporal UI or the `temporal` CLI. Only holders of the operator
token (DIALER_CODEC_AUTH_TOKEN) get plain payloads; API keys of users do not open it."""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from api.deps import SettingsDep
from api.limits import auth_failure_throttle
from api.schemas import Detail
from core.config import Settings
from infra.codec import EncryptionCodec, UndecryptablePayload, codec_for
from infra.temporal_client import payload_keys

PREFIX = "/codec"
COOKIE = "dialer_codec"

router = APIRouter(prefix=PREFIX, tags=["operations"])
operator_bearer = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer <DIALER_CODEC_AUTH_TOKEN>`."
)


class PayloadJSON(BaseModel):
    """A Temporal payload in protobuf JSON: metadata values and data are base64."""

    metadata: dict[str, str] = {}
    data: str = ""


class PayloadsJSON(BaseModel):
    payloads: list[PayloadJSON]


def _token_matches(settings: Settings, presented: str | None) -> bool:
    expected = settings.codec_auth_token.get_secret_value() if settings.codec_auth_token else ""
    return bool(expected and presented and hmac.compare_digest(presented, expected))


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_ui_request(settings: Settings, request: Request) -> bool:
    """The embedded stack's UI (DIALER_CODEC_LOCAL_UI, set by `dialer run` only): a browser on
    this machine, on one of the codec's CORS origins. The dev server's UI has no login, so it
    has no token to send; anyone with a shell on this machine could read the stack's data
    directory anyway, and production refuses the setting (Settings.problems)."""
    origin = request.headers.get("origin")
    client = request.client.host if request.client else None
    return settings.codec_local_ui and origin in settings.cors_origins and _loopback(client)


def require_operator(
    settings: SettingsDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)] = None,
    cookie: Annotated[str | None, Cookie(alias=COOKIE, include_in_schema=False)] = None,
) -> None:
    """The operator token, as a Bearer header (CLI, a UI with pass-access-token, a proxy) or as
    the cookie set by /codec/login (the UI with "include cross-origin credentials"); on the
    embedded stack, also the local UI without a token."""
    presented = credentials.credentials if credentials else cookie
    if not presented and local_ui_request(settings, request):
        return
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the codec needs the operator token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    _check_token(settings, request, presented)


def _check_token(settings: Settings, request: Request, presented: str) -> None:
    """403 for a wrong token; a wrong token counts as a failed authentication of the client's
    address (api.limits.AuthFailureThrottle), as a wrong API key does."""
    throttle = auth_failure_throttle(request)
    if throttle is not None:
        throttle.check(request)
    if not _token_matches(settings, presented):
        if throttle is not None:
            throttle.failed(request)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid operator token")


@lru_cache(maxsize=4)
def _codec(keys: str | None) -> EncryptionCodec | None:
    return codec_for(keys)


def get_codec(settings: SettingsDep) -> EncryptionCodec:
    codec = _codec(payload_keys(settings))
    if codec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "payload encryption is not configured")
    return codec


Operator = Annotated[None, Depends(require_operator)]
Codec = Annotated[EncryptionCodec, Depends(get_codec)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "No operator token"},
    403: {"model": Detail, "description": "Wrong operator token"},
    400: {"model": Detail, "description": "Payloads that cannot be read or decrypted"},
    404: {"model": Detail, "description": "Payload encryption is not configured"},
    429: {
        "model": Detail,
        "description": "Too many wrong tokens from this address",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
        },
    },
}


def _parse(body: PayloadsJSON) -> Payloads:
    try:
        return ParseDict(body.model_dump(), Payloads())
    except ParseError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "payloads are not valid") from exc


def _answer(payloads: list[Any]) -> JSONResponse:
    return JSONResponse(MessageToDict(Payloads(payloads=payloads)) or {"payloads": []})


@router.post("/decode", response_model=PayloadsJSON, responses=ERRORS)
async def decode(body: PayloadsJSON, _: Operator, codec: Codec) -> JSONResponse:
    """Decrypt payloads (Temporal remote codec protocol)."""
    try:
        return _answer(await codec.decode(_parse(body).payloads))
    except UndecryptablePayload as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"payloads cannot be decrypted: {exc}"
        ) from exc


@router.post("/encode", response_model=PayloadsJSON, responses=ERRORS)
async def encode(body: PayloadsJSON, _: Operator, codec: Codec) -> JSONResponse:
    """Encrypt payloads (Temporal remote codec protocol), e.g. to signal from the UI."""
    return _answer(await codec.encode(_parse(body).payloads))


LOGIN_FORM = """<!doctype html><title>Dialer codec login</title>
<form method="post"><label>Operator token <input name="token" type="password"></label>
<button>Log in</button></form>"""


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form() -> str:
    return LOGIN_FORM


@router.post("/login", include_in_schema=False)
async def login(request: Request, settings: SettingsDep) -> Response:
    """Keep the operator token in an HttpOnly cookie for the UI's codec requests."""
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = (form.get("token") or [""])[0]
    _check_token(settings, request, token)
    response = HTMLResponse("Logged in: the Temporal UI can now read payloads.")
    # SameSite=Lax: sent by the UI on the same site (localhost:<ui port>), never cross-site.
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", path=PREFIX)
    return response


class CodecCORS:
    """CORS for the Temporal UI's origin on /codec only; the rest of the API stays same-origin."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)
