"""A caller line is confirmed at the carrier that dials it: Twilio's own REST client asks the
local Twilio-compatible server whether a number is one of the account's incoming numbers or
verified caller ids; the simulated carrier confirms every line; and prepare_call refuses a
call from a line the dialing carrier has not confirmed, before anything is dialed."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from activities.calls import CallActivities
from contracts.calls import CreateCallInput, FailureCode
from core.config import Settings
from services.lines import CarrierUnavailable, LineConfirmer, NumberNotOwned, carrier_names
from store import crud
from store.db import session_scope
from store.models import PhoneNumber
from store.simulated_ledger import DatabaseLedger
from telephony.base import NotPlaced, TelephonyError, confirms_lines, owns_number
from telephony.faults import FaultInjector, with_faults
from telephony.registry import ProviderRegistry
from telephony.simulated import SimulatedProvider
from telephony.twilio import TwilioConfig, TwilioProvider
from tests.fakes.twilio_server import FakeTwilio, Fault
from tests.support.rows import stored_row
from worker import build_providers

OWNED, VERIFIED, FOREIGN = "+12025550111", "+12025550112", "+12025550113"
MEDIA = "wss://media.example.test/stream"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    server.incoming_numbers.add(OWNED)
    server.caller_ids.add(VERIFIED)
    yield server
    server.stop()


def twilio_at(base_url: str, fake: FakeTwilio | None = None) -> TwilioProvider:
    return TwilioProvider(
        TwilioConfig(
            account_sid=fake.account_sid if fake else "AC" + "0" * 32,
            auth_token=fake.auth_token if fake else "0" * 32,
            api_base_url=base_url,
            http_timeout_seconds=0.5,
        )
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the Twilio provider asks the account's numbers -----------------------------------------


async def test_an_incoming_number_and_a_verified_caller_id_are_the_accounts_own(
    fake: FakeTwilio,
) -> None:
    twilio = twilio_at(fake.base_url, fake)
    assert await twilio.owns_number(OWNED)
    assert await twilio.owns_number(VERIFIED)
    assert not await twilio.owns_number(FOREIGN)
    asked = [path for method, path in fake.requests if method == "GET"]
    assert any("IncomingPhoneNumbers.json?PhoneNumber=%2B12025550111" in p for p in asked)
    assert any("OutgoingCallerIds.json?PhoneNumber=%2B12025550112" in p for p in asked)


async def test_a_number_that_only_contains_the_one_asked_for_is_not_it(fake: FakeTwilio) -> None:
    # Twilio's PhoneNumber filter on incoming numbers matches part of a number too.
    assert not await twilio_at(fake.base_url, fake).owns_number(OWNED[:-1])


async def test_a_carrier_that_cannot_answer_raises_never_says_no(fake: FakeTwilio) -> None:
    twilio = twilio_at(fake.base_url, fake)
    fake.number_faults.append(Fault("error", status=503, code=20503, message="down"))
    with pytest.raises(TelephonyError):
        await twilio.owns_number(OWNED)
    with pytest.raises(NotPlaced):
        await twilio_at(f"http://127.0.0.1:{closed_port()}").owns_number(OWNED)
    # Wrong credentials (Twilio's 401): an error, never a "not the account's".
    with pytest.raises(TelephonyError):
        await twilio_at(fake.base_url).owns_number(OWNED)


async def test_the_simulated_carrier_confirms_every_line(engine: Engine) -> None:
    simulated = SimulatedProvider(DatabaseLedger(engine), latency_ms=0)
    faulty = with_faults(simulated, FaultInjector(seed=1, rate=1.0, spike_ms=0))
    for carrier in (simulated, faulty):
        assert not confirms_lines(carrier)
        assert await owns_number(carrier, FOREIGN)
    assert confirms_lines(twilio_at("http://127.0.0.1:1"))


# --- which carrier confirms a line: the one that will dial it --------------------------------


def settings_for(fake: FakeTwilio | None, **values: Any) -> Settings:
    creds: dict[str, Any] = {}
    if fake is not None:
        creds = {
            "twilio_account_sid": fake.account_sid,
            "twilio_auth_token": fake.auth_token,
            "twilio_api_base_url": fake.base_url,
            "twilio_http_timeout_seconds": 0.5,
        }
    return Settings(**{**creds, **values})


@pytest.mark.parametrize(
    "provider, with_twilio",
    [("simulated", False), ("simulated", True), ("twilio", True)],
)
def test_lines_are_confirmed_at_the_carrier_the_worker_dials_them_with(
    engine: Engine, fake: FakeTwilio, provider: str, with_twilio: bool
) -> None:
    settings = settings_for(fake if with_twilio else None, telephony_provider=provider)
    registry = build_providers(settings, engine)
    confirmer = LineConfirmer.from_settings(settings)
    for label in ("simulated", "twilio", "legacy-carrier"):
        assert confirmer.carrier_for(label) == registry.name_for(label)
    assert set(carrier_names(settings)) == {
        n for n in ("simulated", "twilio") if registry.name_for(n) == n
    }


async def test_the_confirmer_names_the_carrier_or_says_why_not(fake: FakeTwilio) -> None:
    beside = LineConfirmer.from_settings(settings_for(fake))  # simulated default, Twilio beside
    assert await beside.confirm(FOREIGN, "simulated") == "simulated"
    assert await beside.confirm(OWNED, "twilio") == "twilio"
    with pytest.raises(NumberNotOwned):
        await beside.confirm(FOREIGN, "twilio")

    only = LineConfirmer.from_settings(settings_for(fake, telephony_provider="twilio"))
    assert await only.confirm(VERIFIED, "simulated") == "twilio"  # Twilio dials every line
    fake.number_faults.append(Fault("error", status=500, code=20500, message="boom"))
    with pytest.raises(CarrierUnavailable):
        await only.confirm(OWNED, "simulated")


# --- prepare_call: an unconfirmed line never dials through Twilio ---------------------------


def line_of(engine: Engine, *, confirmed_by: str | None) -> tuple[str, PhoneNumber]:
    user = crud.create_user(engine=engine, email=f"{uuid.uuid4().hex}@example.test")
    line = PhoneNumber(user_id=user.id, number=OWNED, confirmed_by=confirmed_by)
    with session_scope(engine) as session:
        session.add(line)
    return str(user.id), line


def call_of(user_id: str) -> CreateCallInput:
    return CreateCallInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=user_id,
        phone_number="+12025550100",
        request_hash="h" * 64,
    )


def call_activities(engine: Engine, provider: str) -> CallActivities:
    """The carriers as worker.py configures them: with Twilio, Twilio dials every line."""
    carriers: dict[str, Any] = (
        # Never asked by prepare_call: it reads what the line recorded.
        {"twilio": twilio_at(f"http://127.0.0.1:{closed_port()}")}
        if provider == "twilio"
        else {"simulated": SimulatedProvider(DatabaseLedger(engine), latency_ms=0)}
    )
    return CallActivities(engine, ProviderRegistry(carriers, provider), "US", MEDIA)


@pytest.mark.parametrize("confirmed_by", [None, "simulated"])
async def test_a_line_twilio_has_not_confirmed_is_refused_before_the_dial(
    engine: Engine, confirmed_by: str | None
) -> None:
    user_id, line = line_of(engine, confirmed_by=confirmed_by)
    call = call_of(user_id)
    prepared = await call_activities(engine, "twilio").prepare_call(call)
    assert not prepared.validation.ok
    assert prepared.validation.failure_code == FailureCode.LINE_NOT_CONFIRMED
    assert prepared.validation.provider == "twilio"
    assert "/confirm" in (prepared.validation.failure_reason or "")
    row = stored_row(engine, call.call_session_id)
    assert (row.status, row.failure_code) == ("failed", "line_not_confirmed")
    assert (row.phone_number_id, row.from_number) == (line.id, OWNED)  # ids recorded


async def test_a_line_twilio_confirmed_goes_on_to_the_dial(engine: Engine) -> None:
    user_id, _ = line_of(engine, confirmed_by="twilio")
    prepared = await call_activities(engine, "twilio").prepare_call(call_of(user_id))
    assert prepared.validation.ok, prepared.validation
    assert prepared.validation.line_confirmed_by == "twilio"


async def test_the_simulated_carrier_dials_a_line_nobody_confirmed(engine: Engine) -> None:
    user_id, _ = line_of(engine, confirmed_by=None)
    prepared = await call_activities(engine, "simulated").prepare_call(call_of(user_id))
    assert prepared.validation.ok, prepared.validation
