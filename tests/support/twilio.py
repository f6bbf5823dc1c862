"""Talking to the Twilio-compatible server of tests/fakes as the worker and Twilio would: the
settings that point Dialer at it, and the signed status callbacks Twilio posts to the API."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from twilio.request_validator import RequestValidator

from tests.fakes.twilio_server import FakeTwilio
from tests.support.stack import Stack

PUBLIC = "https://dialer.example.test"


def twilio_settings(fake: FakeTwilio, **overrides: Any) -> dict[str, Any]:
    return {
        "telephony_provider": "twilio",
        "twilio_account_sid": fake.account_sid,
        "twilio_auth_token": fake.auth_token,
        "twilio_api_base_url": fake.base_url,
        "twilio_http_timeout_seconds": 0.5,
        "public_base_url": PUBLIC,
        "media_stream_url": "wss://media.example.test/stream",
        # Callbacks drive these tests; polling only when a test asks for it.
        "call_status_poll_seconds": 30.0,
        "call_status_poll_max_seconds": 30.0,
        **overrides,
    }


def callback_url(fake: FakeTwilio, session_id: str) -> str:
    (call,) = fake.calls_for(session_id)
    return call.params["StatusCallback"][0]


async def post_callback(
    stack: Stack,
    fake: FakeTwilio,
    url: str,
    params: dict[str, str],
    *,
    token: str | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a status callback as Twilio would: form-encoded, signed over the public URL."""
    if signature is None:
        signature = RequestValidator(token or fake.auth_token).compute_signature(url, params)
    parts = urlsplit(url)
    return await stack.http.post(
        f"{parts.path}?{parts.query}",
        data=params,
        headers={"X-Twilio-Signature": signature, **(headers or {})},
    )


def status_params(sid: str, status: str, **extra: str) -> dict[str, str]:
    """A callback's form fields; Timestamp is now, as Twilio sends it (RFC 2822, in seconds)."""
    return {
        "CallSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "CallStatus": status,
        "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
        "SequenceNumber": "0",
        **extra,
    }
