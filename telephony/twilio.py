"""Twilio, through the `twilio` package's REST client.

The SDK is synchronous (requests), so every call runs in a thread, off the event loop. Its
API base URL is a setting, so the tests run this very client against a local fake. Errors are
mapped onto telephony.base by what they say about the call: refused for good (Rejected),
provably not placed (NotPlaced: safe to dial again), or unknown (Ambiguous: reconcile first).
Their messages are neutral ("the carrier ..."), since they can reach API clients; Twilio's own
text goes in `provider_message`, without Twilio's name (the timeline is public JSON too), and
into the log as it came.

Twilio's status callbacks are read here too (`signature_matches`, `status_event`); the route in
api/routes/telephony.py keeps only the HTTP side: the URL Twilio called, the answer codes, and
the delivery to the session's workflow."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse
from urllib3.exceptions import NewConnectionError

from contracts.calls import StatusSource
from contracts.lifecycle import CallStatus, StatusEvent, normalize_status
from telephony.base import (
    Ambiguous,
    DialRequest,
    NotPlaced,
    ProviderCall,
    Rejected,
    TelephonyError,
)

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/telephony/twilio/status"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Refusals that no retry can change (invalid or unreachable To/From, not permitted, ...).
PERMANENT_CODES = frozenset({"21211", "21214", "21217", "21216", "21210", "13224", "21215"})
RATE_LIMITED_CODE = "20429"
# Clocks differ between Twilio and us: look a little before the first attempt.
LOOKUP_CLOCK_SKEW = timedelta(minutes=2)
LOOKUP_LIMIT = 50


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    api_base_url: str = "https://api.twilio.com"
    http_timeout_seconds: float = 10.0
    public_base_url: str | None = None
    ring_timeout_seconds: int | None = None
    # Deprecated (DIALER_TWILIO_MACHINE_DETECTION): services/calls.py reads it as the default
    # machine_detection of calls; the provider sends what each call asks for.
    machine_detection: str | None = None


# A call's machine_detection (contracts.calls.MachineDetection) as Twilio's MachineDetection.
# Always asynchronous (AsyncAmd): the agent's stream is connected at the answer, and the
# verdict comes to the status callback URL, where the workflow acts on it.
TWILIO_MACHINE_DETECTION = {
    "detect": "Enable",
    "detect_and_hang_up": "Enable",
    # Waits for the end of the greeting (the beep) before answering: the time to speak.
    "detect_and_leave_message": "DetectMessageEnd",
}
# Twilio's error for a call update on a call that is not in progress (ended already).
CALL_NOT_IN_PROGRESS_CODES = frozenset({"21220"})


def status_callback_url(public_base_url: str, request: DialRequest) -> str:
    """Where Twilio reports this attempt's statuses: the session and the attempt tag ride in
    the query, so a callback names its call even before the dial's answer came back."""
    query = urlencode({"call_session_id": request.call_session_id, "attempt": request.attempt_tag})
    return f"{public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}?{query}"


# Twilio refuses a call whose TwiML is longer (contracts/context.py keeps the worst case below).
MAX_TWIML_CHARS = 4000


def twiml_for(request: DialRequest) -> str:
    """Connect the answered call to its agent's media stream, the call's ids and variables as
    the stream's parameters. Refused (never dialed) without a stream URL, so nobody is called
    into silence, and beyond Twilio's TwiML size."""
    if not request.media_stream_url:
        raise Rejected("the call has no media stream to connect to", code="no_media_stream")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=request.media_stream_url)
    for name, value in request.stream_parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    twiml = str(response)
    if len(twiml) > MAX_TWIML_CHARS:
        raise Rejected(
            f"the call's media stream instructions exceed {MAX_TWIML_CHARS} characters",
            code="twiml_too_long",
        )
    return twiml


def _connect_failed(exc: requests.ConnectionError) -> bool:
    """True only when no connection was made, so the request was certainly not sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(exc.args[0], NewConnectionError)


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _provider_call(call: Any) -> ProviderCall:
    return ProviderCall(
        sid=call.sid,
        status=call.status or "queued",
        to_number=call.to,
        from_number=getattr(call, "_from", None),
        created_at=_datetime(call.date_created),
        ended_at=_datetime(call.end_time),
        duration_seconds=_int(call.duration),
        answered_by=call.answered_by,
    )


class TwilioProvider:
    name = "twilio"
    requires_media_stream = True

    def __init__(self, config: TwilioConfig) -> None:
        self._config = config
        # No retries inside the HTTP client: a blind resend could place a second call.
        http = TwilioHttpClient(timeout=config.http_timeout_seconds, max_retries=0)
        self._client = Client(
            config.account_sid, config.auth_token, http_client=http, environment={}
        )
        self._client.api.base_url = config.api_base_url.rstrip("/")

    def _create_params(self, request: DialRequest) -> dict[str, Any]:
        cfg = self._config
        params: dict[str, Any] = {
            "to": request.to_number,
            "from_": request.from_number,
            "twiml": twiml_for(request),
        }
        if cfg.public_base_url:
            params["status_callback"] = status_callback_url(cfg.public_base_url, request)
            params["status_callback_event"] = STATUS_EVENTS
            params["status_callback_method"] = "POST"
        if cfg.ring_timeout_seconds:
            params["timeout"] = cfg.ring_timeout_seconds
        if request.max_duration_seconds:
            params["time_limit"] = request.max_duration_seconds
        detection = TWILIO_MACHINE_DETECTION.get(request.machine_detection)
        if detection:
            params["machine_detection"] = detection
            params["async_amd"] = "true"
            if cfg.public_base_url:
                params["async_amd_status_callback"] = status_callback_url(
                    cfg.public_base_url, request
                )
                params["async_amd_status_callback_method"] = "POST"
        return params

    async def create_call(self, request: DialRequest) -> ProviderCall:
        params = self._create_params(request)
        try:
            call = await asyncio.to_thread(self._client.api.account.calls.create, **params)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_rest_error(exc) from exc
        except requests.ConnectionError as exc:
            if _connect_failed(exc):
                raise NotPlaced(
                    "could not connect to the carrier", code="connect", provider_message=_said(exc)
                ) from exc
            raise Ambiguous(
                "the connection to the carrier broke after the request",
                provider_message=_said(exc),
            ) from exc
        except requests.Timeout as exc:
            raise Ambiguous(
                "the carrier did not answer in time", provider_message=_said(exc)
            ) from exc
        except (requests.RequestException, TwilioException) as exc:
            raise Ambiguous(
                "unexpected answer from the carrier", provider_message=_said(exc)
            ) from exc
        return _provider_call(call)

    async def lookup_call(
        self,
        *,
        call_session_id: str,
        attempts: list[int],
        to_number: str,
        from_number: str,
        since: datetime | None = None,
    ) -> ProviderCall | None:
        """Find a call this session placed: Twilio does not return a call's callback URL, so
        the search is by To, From and start time (from just before the first attempt), plus
        the calls still queued, which have no start time yet."""
        since = (since or datetime.now(UTC) - timedelta(hours=1)) - LOOKUP_CLOCK_SKEW

        def find() -> list[Any]:
            calls = self._client.api.account.calls
            started = calls.list(
                to=to_number, from_=from_number, start_time_after=since.date(), limit=LOOKUP_LIMIT
            )
            queued = calls.list(
                to=to_number, from_=from_number, status="queued", limit=LOOKUP_LIMIT
            )
            return list({c.sid: c for c in [*started, *queued]}.values())

        try:
            calls = await asyncio.to_thread(find)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_rest_error(exc) from exc
        except (requests.RequestException, TwilioException) as exc:
            raise _read_failed(exc) from exc
        candidates = [
            _provider_call(c)
            for c in calls
            if (created := _datetime(c.date_created)) is None or created >= since
        ]
        # The oldest match is the first attempt that went through.
        candidates.sort(key=lambda c: c.created_at or since)
        return candidates[0] if candidates else None

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        try:
            call = await asyncio.to_thread(self._client.api.account.calls(sid).fetch)
        except (TwilioRestException, TwilioServiceException) as exc:
            if exc.status == 404:
                return None
            raise _map_rest_error(exc) from exc
        except (requests.RequestException, TwilioException) as exc:
            raise _read_failed(exc) from exc
        return _provider_call(call)

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        return await _hangup(self._client, sid, answered=answered, message=message)

    async def owns_number(self, number: str) -> bool:
        """Whether `number` is one of the account's IncomingPhoneNumbers or OutgoingCallerIds
        (the numbers Twilio lets a call come from). Twilio's PhoneNumber filter also matches
        partial numbers, so only an exact match counts."""

        def find() -> bool:
            account = self._client.api.account
            incoming = account.incoming_phone_numbers.list(phone_number=number, limit=LOOKUP_LIMIT)
            if any(n.phone_number == number for n in incoming):
                return True
            verified = account.outgoing_caller_ids.list(phone_number=number, limit=LOOKUP_LIMIT)
            return any(n.phone_number == number for n in verified)

        try:
            return await asyncio.to_thread(find)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_rest_error(exc) from exc
        except (requests.RequestException, TwilioException) as exc:
            log.info("a number lookup at Twilio failed: %s", type(exc).__name__)
            raise NotPlaced(
                "the carrier could not be asked about the number", provider_message=_said(exc)
            ) from exc


def hangup_twiml(message: str) -> str:
    """What the call does instead of its stream: say the message, then hang up."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


async def _hangup(client: Client, sid: str, *, answered: bool, message: str | None) -> bool:
    """Twilio's call update: `Status=canceled` for a call still queued or ringing,
    `Status=completed` for one in progress, or new TwiML that speaks the message first."""
    if message:
        params: dict[str, Any] = {"twiml": hangup_twiml(message)}
    else:
        params = {"status": "completed" if answered else "canceled"}
    try:
        await asyncio.to_thread(client.api.account.calls(sid).update, **params)
    except (TwilioRestException, TwilioServiceException) as exc:
        code = str(exc.code) if exc.code is not None else None
        if code in CALL_NOT_IN_PROGRESS_CODES or exc.status == 404:
            return False
        if not answered and not message and exc.status == 400:
            # Answered meanwhile: canceled no longer applies, completed does.
            return await _hangup(client, sid, answered=True, message=None)
        raise _map_rest_error(exc) from exc
    except (requests.RequestException, TwilioException) as exc:
        raise _read_failed(exc) from exc
    return True


def _read_failed(exc: requests.RequestException | TwilioException) -> Ambiguous:
    """A read (lookup_call, fetch_call) that got no answer: a transport error, or a page of
    the call list that could not be fetched (the SDK's plain TwilioException). Nothing is
    known about the call, so it is Ambiguous like any failed lookup: the activity is retried,
    and a lookup that never answers is never taken for "not found" (no second dial)."""
    log.info("a read at Twilio failed: %s", type(exc).__name__)
    return Ambiguous("the carrier could not be asked about the call", provider_message=_said(exc))


def _map_rest_error(exc: TwilioRestException | TwilioServiceException) -> TelephonyError:
    """Twilio's error answer (classic `{code, message}` or RFC 9457) by what it says about
    the call: only a 429 / 20429 provably did nothing, a 4xx refusal is final, the rest
    (5xx) may have placed the call. The message is ours; Twilio's text is the
    provider_message."""
    code = str(exc.code) if exc.code is not None else None
    text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    log.info("Twilio answered HTTP %s, code %s: %s", exc.status, code, text)
    said = _without_vendor(str(text)) if text else None
    if code == RATE_LIMITED_CODE or exc.status == 429:
        return NotPlaced(
            "the carrier is limiting the rate of requests",
            code=code or "429",
            retry_after=1.0,
            provider_message=said,
        )
    if code in PERMANENT_CODES or 400 <= exc.status < 500:
        return Rejected(
            "the carrier refused the request", code=code or str(exc.status), provider_message=said
        )
    return Ambiguous(
        f"the carrier answered with an error (HTTP {exc.status})",
        code=code or str(exc.status),
        provider_message=said,
    )


_LINK = re.compile(r"https?://\S+")
_VENDOR = re.compile(r"twilio", re.IGNORECASE)


def _without_vendor(text: str) -> str:
    """Twilio's text with its name and links left out ("... purchased from Twilio" reads
    "... purchased from the carrier"): it is shown in the call's public timeline."""
    return _VENDOR.sub("the carrier", _LINK.sub("", text)).strip()


def _said(exc: Exception) -> str:
    """What a transport or SDK error says, for the timeline: its own message when it has a
    plain one (the SDK's "Unable to fetch page"), else its type (ReadTimeout, ...). Never the
    full text of a transport error, which quotes the URL with the account SID."""
    if isinstance(exc, TwilioException):
        first = exc.args[0] if exc.args else None
        return _without_vendor(first) if isinstance(first, str) and first else "no message"
    return type(exc).__name__


def signature_matches(
    auth_token: str, urls: Iterable[str], params: Mapping[str, str], signature: str
) -> bool:
    """Whether `X-Twilio-Signature` signs the callback's form fields at one of the URLs Twilio
    may have called, with the account's auth token."""
    validator = RequestValidator(auth_token)
    return any(validator.validate(url, params, signature) for url in urls)


def status_event(call_session_id: str, params: Mapping[str, str]) -> StatusEvent | None:
    """A status callback's form fields as a StatusEvent of the session, or None when its
    CallStatus is not one Dialer follows."""
    status = normalize_status(params.get("CallStatus"))
    if status is None and params.get("AnsweredBy"):
        # The AsyncAmd callback: no CallStatus, the verdict on a call that was answered.
        status = CallStatus.ANSWERED
    if status is None:
        return None
    return StatusEvent(
        call_session_id=call_session_id,
        sid=params.get("CallSid", ""),
        status=status,
        occurred_at=_callback_time(params.get("Timestamp")),
        duration_seconds=_int(params.get("CallDuration")),
        source=StatusSource.CALLBACK,
        answered_by=params.get("AnsweredBy") or None,
    )


def _callback_time(value: str | None) -> datetime | None:
    """A callback's Timestamp (RFC 2822, e.g. `Mon, 16 Aug 2010 03:45:01 +0000`)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
