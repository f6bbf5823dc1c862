"""Phone numbers kept private: with payload encryption on, a finished call's history, read from
the server by a client without the key, holds no phone number anywhere; the key (or the codec
endpoint, with the operator token) reads it back."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from infra.codec import new_key_entry
from infra.temporal_client import connect
from store.db import make_engine
from tests.support.accounts import make_account
from tests.support.results import call_result
from tests.support.settings import settings_for
from tests.support.stack import Stack, create_call, open_stack

# The target numbers (a success, a success after two refused attempts, a permanent rejection)
# and the caller line of make_account, as digit runs that no encrypted history may contain.
NUMBERS = ("+12025550100", "+12025550104", "+12025550103")
LINE = "+12025550199"
TELLTALES = tuple(n[2:].encode() for n in (*NUMBERS, LINE))


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
async def secure_stack(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """API and workers on the dev server, through the shared connect(): payloads encrypted
    with a key made for this test, codec endpoint behind a token made for this test."""
    settings = settings_for(
        tmp_path,
        sqlite_url,
        temporal_address=dev_env.client.service_client.config.target_host,
        payload_keys=new_key_entry("test-1"),
        codec_auth_token=secrets.token_urlsafe(24),
    )
    client = await connect(settings)
    async with open_stack(settings, sqlite_engine, client) as stack:
        yield stack


def payloads_of(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere in a protobuf message (inputs, results, markers, failures,
    update arguments, user metadata...)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        assert field.message_type is not None  # a message field names its type
        if isinstance(value, Message):
            items = [value]
        elif field.message_type.GetOptions().map_entry:
            items = list(value.values())
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Message):
                yield from payloads_of(item)


async def _finished_history(client: Client, session_id: str) -> WorkflowHistory:
    handle = client.get_workflow_handle(session_id)
    # A failed call's run fails, carrying its state: that payload must be encrypted too.
    await asyncio.wait_for(call_result(handle), 60)
    return await handle.fetch_history()


async def _place_calls(stack: Stack) -> list[str]:
    account = make_account(stack.engine)
    ids = []
    for number in NUMBERS:
        resp = await create_call(stack, account.headers, number, wait="dialed")
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["call_session_id"])
    return ids


async def test_history_without_the_key_holds_no_phone_number(
    secure_stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    session_ids = await _place_calls(secure_stack)
    for session_id in session_ids:
        history = await _finished_history(secure_stack.client, session_id)
        # Read from the server by a client that has no key: the raw events, every byte.
        raw = (await dev_env.client.get_workflow_handle(session_id).fetch_history()).to_json()
        blob = raw.encode() + b"".join(p.SerializeToString() for p in _all(history))
        for telltale in TELLTALES:
            assert telltale not in blob, (session_id, telltale)
        # The same payloads, decrypted with the key, are the call's data.
        codec = secure_stack.client.data_converter.payload_codec
        assert codec is not None  # secure_stack encrypts
        decoded = await codec.decode(list(_all(history)))
        plain = b"".join(p.data for p in decoded)
        assert LINE[2:].encode() in plain


async def test_codec_endpoint_decodes_history_for_the_operator_only(
    secure_stack: Stack,
) -> None:
    [session_id, *_] = await _place_calls(secure_stack)
    history = await _finished_history(secure_stack.client, session_id)
    body = {"payloads": [_as_json(p) for p in _all(history)]}
    assert secure_stack.settings.codec_auth_token is not None  # secure_stack sets one
    token = secure_stack.settings.codec_auth_token.get_secret_value()
    http = secure_stack.http

    assert (await http.post("/codec/decode", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await http.post("/codec/decode", json=body, headers=wrong)).status_code == 403
    # A user's API key is not an operator token.
    user = make_account(secure_stack.engine)
    as_user = {"Authorization": f"Bearer {user.key}"}
    assert (await http.post("/codec/decode", json=body, headers=as_user)).status_code == 403
    assert (await http.post("/codec/encode", json=body)).status_code == 401

    resp = await http.post("/codec/decode", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    decoded = b"".join(base64.b64decode(p.get("data", "")) for p in resp.json()["payloads"])
    assert NUMBERS[0][2:].encode() in decoded

    # Round trip: what the endpoint encodes, it decodes.
    plain = {"payloads": [{"metadata": {"encoding": _b64(b"json/plain")}, "data": _b64(b'"x"')}]}
    auth = {"Authorization": f"Bearer {token}"}
    sealed = (await http.post("/codec/encode", json=plain, headers=auth)).json()
    assert sealed != plain
    back = (await http.post("/codec/decode", json=sealed, headers=auth)).json()
    assert back == plain


async def test_codec_cors_allows_the_ui_origin_only(secure_stack: Stack) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    ui = secure_stack.settings.cors_origins[0]
    ok = await secure_stack.http.options("/codec/decode", headers={**preflight, "Origin": ui})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ui
    evil = await secure_stack.http.options(
        "/codec/decode", headers={**preflight, "Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in evil.headers
    # The rest of the API gets no CORS headers for the UI.
    health = await secure_stack.http.get("/health", headers={"Origin": ui})
    assert "access-control-allow-origin" not in health.headers


async def test_codec_login_cookie_opens_the_codec(secure_stack: Stack) -> None:
    assert secure_stack.settings.codec_auth_token is not None  # secure_stack sets one
    token = secure_stack.settings.codec_auth_token.get_secret_value()
    http = secure_stack.http
    refused = await http.post("/codec/login", content=b"token=nope")
    assert refused.status_code == 403
    resp = await http.post("/codec/login", content=f"token={token}".encode())
    assert resp.status_code == 200
    assert "httponly" in resp.headers["set-cookie"].lower()
    empty: dict[str, list[Any]] = {"payloads": []}
    # httpx keeps the cookie, as the browser does for the UI's codec requests.
    assert (await http.post("/codec/decode", json=empty)).status_code == 200
    http.cookies.clear()
    assert (await http.post("/codec/decode", json=empty)).status_code == 401


async def test_without_encryption_the_same_check_finds_the_number(stack: Stack) -> None:
    """The control: the check above is able to see a number when one is there."""
    account = make_account(stack.engine)
    resp = await create_call(stack, account.headers, NUMBERS[0], wait="dialed")
    history = await _finished_history(stack.client, resp.json()["call_session_id"])
    blob = b"".join(p.SerializeToString() for p in _all(history))
    assert NUMBERS[0][2:].encode() in blob


def _all(history: WorkflowHistory) -> Iterator[Payload]:
    for event in history.events:
        yield from payloads_of(event)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _as_json(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {k: _b64(v) for k, v in payload.metadata.items()},
        "data": _b64(payload.data),
    }
