"""telephony.twilio: the real `twilio` REST client against the local Twilio-compatible server.
Every error Twilio can answer lands in the right class of telephony.base, and the server's
own count of created calls shows that nothing is ever placed twice."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from temporalio.testing import ActivityEnvironment
from twilio.base.exceptions import TwilioException, TwilioRestException

from activities.dialing import DialActivities
from contracts.calls import ReconcileInput
from telephony.base import Ambiguous, DialRequest, NotPlaced, Rejected, TelephonyError
from telephony.registry import ProviderRegistry
from telephony.twilio import PERMANENT_CODES, TwilioConfig, TwilioProvider
from tests.fakes.twilio_server import FakeTwilio, Fault

SESSION = "8a6f0c2e-7b1d-4c3a-9e5f-0123456789ab"
TO, FROM = "+12025550100", "+12025550199"
PUBLIC = "https://dialer.example.test"
MEDIA = "wss://media.example.test/stream"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


def provider_for(fake: FakeTwilio, **overrides: Any) -> TwilioProvider:
    values: dict[str, Any] = {  # TwilioConfig's fields, any of them overridden
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "api_base_url": fake.base_url,
        "http_timeout_seconds": 0.5,
        "public_base_url": PUBLIC,
    }
    values.update(overrides)
    return TwilioProvider(TwilioConfig(**values))


PARAMETERS = {
    "request_id": "0b9d2a4e-1111-4222-8333-444455556666",
    "call_session_id": SESSION,
    "user_id": "5d1f6a2e-2222-4333-8444-555566667777",
    "first_name": "Ada",
    "vip": "true",
    "note": 'says "hi" & <bye>',
}


def request(
    attempt: int = 1, to: str = TO, media: str | None = MEDIA, **parameters: str
) -> DialRequest:
    return DialRequest(
        call_session_id=SESSION,
        request_id="0b9d2a4e-1111-4222-8333-444455556666",
        attempt=attempt,
        to_number=to,
        from_number=FROM,
        media_stream_url=media,
        stream_parameters={**PARAMETERS, **parameters},
    )


async def test_success_posts_the_call_with_twiml_and_status_callback(fake: FakeTwilio) -> None:
    call = await provider_for(fake).create_call(request())

    assert fake.created == 1
    placed = fake.calls[call.sid]
    assert call.sid.startswith("CA") and call.status == "queued"
    params = {k: v if len(v) > 1 else v[0] for k, v in placed.params.items()}
    assert params["To"] == TO and params["From"] == FROM
    assert params["StatusCallback"] == (
        f"{PUBLIC}/telephony/twilio/status?call_session_id={SESSION}&attempt={SESSION}.1"
    )
    assert params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert params["StatusCallbackMethod"] == "POST"
    assert "Timeout" not in params and "MachineDetection" not in params
    twiml = params["Twiml"]
    assert isinstance(twiml, str)  # one value
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == MEDIA
    stream_params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    # The call's ids and variables, escaped by the TwiML builder and read back intact.
    assert stream_params == PARAMETERS


async def test_a_call_without_a_stream_url_is_refused_before_any_request(
    fake: FakeTwilio,
) -> None:
    with pytest.raises(Rejected) as err:
        await provider_for(fake).create_call(request(media=None))
    assert err.value.code == "no_media_stream"
    assert fake.created == 0  # nobody is called into silence


async def test_twiml_beyond_twilios_limit_is_refused_before_any_request(
    fake: FakeTwilio,
) -> None:
    with pytest.raises(Rejected) as err:
        await provider_for(fake).create_call(request(huge="&" * 900))
    assert err.value.code == "twiml_too_long"
    assert fake.created == 0


async def test_ring_timeout_and_machine_detection_are_sent_when_set(fake: FakeTwilio) -> None:
    provider = provider_for(fake, ring_timeout_seconds=25)
    asked = dataclasses.replace(request(), machine_detection="detect", max_duration_seconds=90)
    call = await provider.create_call(asked)
    params = fake.calls[call.sid].params
    assert params["Timeout"] == ["25"]
    assert params["MachineDetection"] == ["Enable"]
    assert params["AsyncAmd"] == ["true"]
    assert params["TimeLimit"] == ["90"]


@pytest.mark.parametrize(
    ("mode", "twilio"),
    [("detect_and_hang_up", "Enable"), ("detect_and_leave_message", "DetectMessageEnd")],
)
async def test_each_detection_mode_is_asynchronous_with_its_callback(
    fake: FakeTwilio, mode: str, twilio: str
) -> None:
    provider = provider_for(fake, public_base_url="https://dialer.example.com")
    call = await provider.create_call(dataclasses.replace(request(), machine_detection=mode))
    params = fake.calls[call.sid].params
    assert params["MachineDetection"] == [twilio]
    assert params["AsyncAmd"] == ["true"]
    assert params["AsyncAmdStatusCallback"] == params["StatusCallback"]


async def test_no_detection_no_limit_sends_neither(fake: FakeTwilio) -> None:
    # The deprecated global setting no longer reaches Twilio by itself (services/calls.py
    # turns it into the calls' default machine_detection).
    call = await provider_for(fake, machine_detection="Enable").create_call(request())
    params = fake.calls[call.sid].params
    assert "MachineDetection" not in params and "TimeLimit" not in params


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES))
async def test_permanent_codes_are_rejected_for_good(fake: FakeTwilio, code: str) -> None:
    fake.inject(Fault("error", status=400, code=int(code), message=f"refused {code}"))
    with pytest.raises(Rejected) as err:
        await provider_for(fake).create_call(request())
    assert err.value.code == code
    # Our words for the client; Twilio's for the timeline and operators.
    assert err.value.message == "the carrier refused the request"
    assert (err.value.provider_message or "").endswith(f"refused {code}")
    assert fake.created == 0


async def test_other_parameter_errors_are_rejected(fake: FakeTwilio) -> None:
    fake.inject(Fault("error", status=400, code=21201, message="No 'To' number is specified"))
    with pytest.raises(Rejected) as err:
        await provider_for(fake).create_call(request())
    assert err.value.code == "21201"


async def test_wrong_credentials_are_rejected_not_retried(fake: FakeTwilio) -> None:
    with pytest.raises(Rejected) as err:
        await provider_for(fake, auth_token="not-the-token").create_call(request())
    assert err.value.code == "20003"
    assert fake.created == 0


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (429, None)])
async def test_rate_limits_are_not_placed_then_success(
    fake: FakeTwilio, status: int, code: int | None
) -> None:
    fake.inject(Fault("error", status=status, code=code, message="Too Many Requests"))
    provider = provider_for(fake)
    with pytest.raises(NotPlaced) as err:
        await provider.create_call(request(1))
    assert err.value.code == (str(code) if code else "429")
    assert fake.created == 0
    call = await provider.create_call(request(2))
    assert fake.created == 1 and call.sid in fake.calls


def provider_on_a_closed_port() -> TwilioProvider:
    """A provider whose API address refuses every connection (a port bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return TwilioProvider(
        TwilioConfig(
            account_sid="AC" + "0" * 32,
            auth_token="t" * 32,
            api_base_url=f"http://127.0.0.1:{port}",
            http_timeout_seconds=0.5,
        )
    )


async def test_connection_refused_is_not_placed() -> None:
    provider = provider_on_a_closed_port()
    with pytest.raises(NotPlaced) as err:
        await provider.create_call(request())
    assert err.value.code == "connect"
    assert err.value.message == "could not connect to the carrier"
    assert err.value.provider_message == "ConnectionError"


# Twilio's own words for 21210, its name and its link included.
UNVERIFIED = (
    "The source phone number provided, +12025550199, is not yet verified for your account. "
    "You may only make calls from phone numbers that you've verified or purchased from "
    "Twilio. See https://www.twilio.com/docs/errors/21210"
)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("error", status=400, code=21210, message=UNVERIFIED),
        Fault("error", status=429, code=20429, message="Twilio: Too Many Requests"),
        Fault("error_after_create", status=500, code=20500, message="Twilio had an error"),
        Fault("timeout_after_create", delay=1.5),
        Fault("drop_after_create"),
    ],
    ids=["rejected", "rate-limited", "5xx", "timeout", "dropped"],
)
async def test_no_message_names_the_vendor(fake: FakeTwilio, fault: Fault) -> None:
    fake.inject(fault)
    with pytest.raises(TelephonyError) as err:
        await provider_for(fake).create_call(request())
    said = f"{err.value.message} {err.value.provider_message}"
    assert "twilio" not in said.lower() and "http" not in (err.value.provider_message or "")
    assert "the carrier" in err.value.message
    if fault.kind == "error" and fault.code == 21210:
        assert err.value.code == "21210"
        # The SDK puts "Unable to create record: " before Twilio's message.
        assert (err.value.provider_message or "").endswith(
            UNVERIFIED.replace(
                "Twilio. See https://www.twilio.com/docs/errors/21210", "the carrier. See"
            )
        )


@pytest.mark.parametrize(
    "fault",
    [
        Fault("error_after_create", status=500, code=20500, message="Internal Server Error"),
        Fault("error_after_create", status=503, code=None, message="Service Unavailable"),
        Fault("timeout_after_create", delay=1.5),
        Fault("drop_after_create"),
    ],
    ids=["500", "503", "timeout", "dropped"],
)
async def test_an_answer_lost_after_the_call_was_created_is_ambiguous_and_found_again(
    fake: FakeTwilio, fault: Fault
) -> None:
    provider = provider_for(fake)
    since = datetime.now(UTC)
    fake.inject(fault)
    with pytest.raises(Ambiguous):
        await provider.create_call(request())
    assert fake.created == 1

    found = await provider.lookup_call(
        call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM, since=since
    )
    assert found is not None
    assert [found.sid] == [c.sid for c in fake.calls_for(SESSION)]
    assert fake.created == 1  # looking up never places a call


async def test_lookup_finds_nothing_when_no_call_went_through(fake: FakeTwilio) -> None:
    provider = provider_for(fake)
    # Another session's call to another number, and an older call to this one.
    await provider.create_call(request(to="+12025550123"))
    await provider.create_call(request())
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert (
        await provider.lookup_call(
            call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM, since=later
        )
        is None
    )
    found = await provider.lookup_call(
        call_session_id=SESSION,
        attempts=[1],
        to_number="+12025550124",
        from_number=FROM,
        since=datetime.now(UTC) - timedelta(minutes=1),
    )
    assert found is None
    assert any(m == "GET" and "StartTime%3E" in p for m, p in fake.requests)


async def test_fetch_call_reports_status_and_duration(fake: FakeTwilio) -> None:
    provider = provider_for(fake)
    call = await provider.create_call(request())
    fetched = await provider.fetch_call(call.sid)
    assert fetched is not None and fetched.status == "queued" and fetched.ended_at is None

    fake.set_status(call.sid, "completed", duration=43)
    fetched = await provider.fetch_call(call.sid)
    assert fetched is not None
    assert fetched.status == "completed"
    assert fetched.duration_seconds == 43
    assert fetched.ended_at is not None

    assert await provider.fetch_call("CA" + "f" * 32) is None


@pytest.mark.parametrize("status", ["queued", "ringing", "completed"])
async def test_lookup_finds_the_call_whether_queued_or_started(
    fake: FakeTwilio, status: str
) -> None:
    # Twilio gives a queued call no start time, so the StartTime filter alone would miss it.
    provider = provider_for(fake)
    since = datetime.now(UTC)
    fake.inject(Fault("drop_after_create"))
    with pytest.raises(Ambiguous):
        await provider.create_call(request())
    (placed,) = fake.calls_for(SESSION)
    if status != "queued":
        fake.set_status(placed.sid, status)
    found = await provider.lookup_call(
        call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM, since=since
    )
    assert found is not None and found.sid == placed.sid and found.status == status


async def test_a_page_of_the_call_list_that_fails_is_a_failed_lookup(fake: FakeTwilio) -> None:
    # The first page names a next one whose fetch fails: the SDK raises a plain
    # TwilioException (not a TwilioRestException) from the middle of calls.list().
    provider = provider_for(fake)
    since = datetime.now(UTC)
    fake.inject(Fault("drop_after_create"))
    with pytest.raises(Ambiguous):
        await provider.create_call(request())
    fake.failing_pages = 1
    with pytest.raises(Ambiguous) as err:
        await provider.lookup_call(
            call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM, since=since
        )
    assert isinstance(err.value.__cause__, TwilioException)
    assert not isinstance(err.value.__cause__, TwilioRestException)
    assert err.value.message == "the carrier could not be asked about the call"
    assert err.value.provider_message == "Unable to fetch page"
    # Asked again (the reconcile activity retries), the same lookup finds the one call.
    found = await provider.lookup_call(
        call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM, since=since
    )
    assert found is not None and [found.sid] == [c.sid for c in fake.calls_for(SESSION)]
    assert fake.created == 1


async def test_reads_without_an_answer_are_failed_lookups_not_misses() -> None:
    provider = provider_on_a_closed_port()
    with pytest.raises(Ambiguous) as lookup:
        await provider.lookup_call(
            call_session_id=SESSION, attempts=[1], to_number=TO, from_number=FROM
        )
    assert lookup.value.provider_message == "ConnectionError"
    with pytest.raises(Ambiguous):
        await provider.fetch_call("CA" + "0" * 32)


async def test_the_reconcile_activity_fails_on_a_failed_page_so_temporal_retries_it(
    fake: FakeTwilio,
) -> None:
    # A failed lookup must never come back as "not found" (ReconcileResult without a leg),
    # which would let the workflow dial again: the activity raises, and its retry policy
    # (workflows/create_call.py RECONCILE_RETRY) asks again.
    provider = provider_for(fake)
    fake.inject(Fault("drop_after_create"))
    with pytest.raises(Ambiguous):
        await provider.create_call(request())
    activities = DialActivities(ProviderRegistry({"twilio": provider}, default="twilio"))
    reconcile = ReconcileInput(
        call_session_id=SESSION,
        to_number=TO,
        from_number=FROM,
        provider="twilio",
        attempts=[1],
        since=(datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    )
    fake.failing_pages = 1
    with pytest.raises(Ambiguous):
        await ActivityEnvironment().run(activities.reconcile_dial, reconcile)
    found = await ActivityEnvironment().run(activities.reconcile_dial, reconcile)
    assert found.telephony_leg_id == fake.calls_for(SESSION)[0].sid
    assert fake.created == 1
