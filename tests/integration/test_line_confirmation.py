"""Caller lines confirmed at Twilio, on the dev server: `POST /api/v1/phone` asks the local
Twilio-compatible server (a real server on a real socket, through the `twilio` package's
client) whether the number is one of the account's incoming numbers or verified caller ids;
a line Twilio does not confirm is refused (422) or, when Twilio cannot be asked, not added
(503); a call from a line Twilio never confirmed fails `line_not_confirmed` without a dial;
`POST /api/v1/phone/{id}/confirm` confirms it later. The simulated carrier confirms every
line and dials from lines nobody confirmed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, select

from store.models import PhoneNumber
from tests.fakes.twilio_server import FakeTwilio, Fault
from tests.support.accounts import Account, fresh_line_number, make_account
from tests.support.rows import stored_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.twilio import twilio_settings

TARGET = "+12025550100"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


def number_lookups(fake: FakeTwilio) -> list[str]:
    return [p for _, p in fake.requests if "IncomingPhoneNumbers" in p or "OutgoingCallerIds" in p]


def lines_numbered(stack: Stack, number: str) -> list[PhoneNumber]:
    with Session(stack.engine) as session:
        return list(session.exec(select(PhoneNumber).where(PhoneNumber.number == number)).all())


async def register(stack: Stack, account: Account, number: str) -> Any:
    return await stack.http.post("/api/v1/phone", headers=account.headers, json={"number": number})


async def dial_from(stack: Stack, account: Account, line_id: str) -> dict[str, Any]:
    resp = await create_call(stack, account.headers, TARGET, wait="dialed", phone_number_id=line_id)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.mark.parametrize("kind", ["incoming number", "verified caller id"])
async def test_a_number_of_the_twilio_account_is_confirmed_and_dials(
    stack_factory: StackFactory, fake: FakeTwilio, kind: str
) -> None:
    number = fresh_line_number()
    (fake.incoming_numbers if kind == "incoming number" else fake.caller_ids).add(number)
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine, with_line=False)
        resp = await register(stack, account, number)
        assert resp.status_code == 201, resp.text
        line = resp.json()
        assert line["confirmed_by"] == "twilio" and line["confirmed_at"]
        assert len(number_lookups(fake)) >= 1

        body = await dial_from(stack, account, line["id"])
        assert body["status"] == "success", body
        assert body["from_phone_number"] == number
        (call,) = fake.calls.values()
        assert call.from_ == number and fake.created == 1


async def test_a_number_twilio_does_not_know_is_refused_and_nothing_is_written(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    number = fresh_line_number()
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine, with_line=False)
        resp = await register(stack, account, number)
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert "incoming number" in detail and "verified caller id" in detail
        assert "twilio" not in detail.lower()
        assert lines_numbered(stack, number) == []
        listed = await stack.http.get("/api/v1/phone", headers=account.headers)
        assert listed.json() == []


async def test_twilio_answering_an_error_is_503_and_nothing_is_written(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    number = fresh_line_number()
    fake.incoming_numbers.add(number)
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine, with_line=False)
        fake.number_faults.append(Fault("error", status=503, code=20503, message="down"))
        resp = await register(stack, account, number)
        assert resp.status_code == 503, resp.text
        assert "try again" in resp.json()["detail"]
        assert lines_numbered(stack, number) == []
        # Once Twilio answers again, the same request goes through.
        assert (await register(stack, account, number)).status_code == 201


async def test_twilio_unreachable_is_503_and_nothing_is_written(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    number = fresh_line_number()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with stack_factory(**twilio_settings(fake, twilio_api_base_url=closed)) as stack:
        account = make_account(stack.engine, with_line=False)
        resp = await register(stack, account, number)
        assert resp.status_code == 503, resp.text
        assert lines_numbered(stack, number) == []


async def test_a_number_another_account_holds_is_409_without_asking_twilio(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    number = fresh_line_number()
    fake.incoming_numbers.add(number)
    async with stack_factory(**twilio_settings(fake)) as stack:
        owner = make_account(stack.engine, with_line=False)
        other = make_account(stack.engine, with_line=False)
        assert (await register(stack, owner, number)).status_code == 201
        asked = len(number_lookups(fake))
        mine, theirs = await register(stack, owner, number), await register(stack, other, number)
        assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json())
        assert theirs.status_code == 409
        assert len(number_lookups(fake)) == asked


async def test_an_unconfirmed_line_never_dials_until_it_is_confirmed(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        # A line from before the check (or written into the database directly).
        account = make_account(stack.engine, line_confirmed_by=None)
        (line,) = (await stack.http.get("/api/v1/phone", headers=account.headers)).json()
        assert line["confirmed_by"] is None

        body = await dial_from(stack, account, line["id"])
        assert body["status"] == "failed", body
        assert body["failure_code"] == "line_not_confirmed"
        assert "/api/v1/phone/{phone_number_id}/confirm" in body["failure_reason"]
        assert body["call_session_id"] and body["request_id"]
        row = stored_row(stack.engine, body["call_session_id"])
        assert (row.status, row.failure_code, row.attempts) == ("failed", "line_not_confirmed", 0)
        assert fake.created == 0

        confirm = f"/api/v1/phone/{line['id']}/confirm"
        refused = await stack.http.post(confirm, headers=account.headers)
        assert refused.status_code == 422, refused.text
        assert lines_numbered(stack, line["number"])[0].confirmed_by is None

        fake.caller_ids.add(line["number"])
        confirmed = await stack.http.post(confirm, headers=account.headers)
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["confirmed_by"] == "twilio"
        again = await dial_from(stack, account, line["id"])
        assert again["status"] == "success", again
        assert fake.created == 1

        other = make_account(stack.engine, with_line=False)
        foreign = await stack.http.post(confirm, headers=other.headers)
        assert foreign.status_code == 404  # another account's line is a line that does not exist


async def test_a_line_the_simulated_carrier_confirmed_does_not_dial_through_twilio(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine, line_confirmed_by="simulated")
        body = await create_call(stack, account.headers, TARGET, wait="dialed")
        assert body.json()["failure_code"] == "line_not_confirmed", body.text
        assert fake.created == 0


async def test_the_simulated_carrier_confirms_every_line_and_dials_unconfirmed_ones(
    stack_factory: StackFactory,
) -> None:
    async with stack_factory() as stack:
        account = make_account(stack.engine, line_confirmed_by=None)
        body = await create_call(stack, account.headers, TARGET, wait="dialed")
        assert body.json()["status"] == "success", body.text

        number = fresh_line_number()
        resp = await register(stack, account, number)
        assert resp.status_code == 201, resp.text
        assert resp.json()["confirmed_by"] == "simulated"
