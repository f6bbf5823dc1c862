"""services.calls: the request fingerprint (Idempotency-Key conflicts) and the derived ids."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from contracts.calls import Stage
from services.calls import CallRequest, ids_for, request_fingerprint, spec_for

USER = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER_USER = uuid.UUID("00000000-0000-4000-8000-000000000002")
AGENT = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
FLOW = uuid.UUID("00000000-0000-4000-8000-0000000000f1")
LINE = uuid.UUID("00000000-0000-4000-8000-0000000000c1")


def request(**changes: Any) -> CallRequest:  # CallRequest's fields
    base = CallRequest(
        user_id=USER,
        phone_number="+12025550100",
        agent_id=AGENT,
        flow_id=None,
        phone_number_id=None,
        wait=Stage.ACCEPTED,
        idempotency_key="order-42",
    )
    return replace(base, **changes)


def fp(**changes: object) -> str:
    return request_fingerprint(spec_for(request(**changes)), "US")


@pytest.mark.parametrize(
    "number", ["+1 202-555-0100", "(202) 555-0100", "2025550100", " +12025550100 "]
)
def test_the_same_call_in_another_format_has_the_same_fingerprint(number: str) -> None:
    assert fp(phone_number=number) == fp()


def test_the_fingerprint_ignores_what_does_not_change_the_call() -> None:
    # Waiting for another stage, or retrying with the same key, is the same call.
    assert fp(wait="dialed") == fp()
    assert fp(idempotency_key="another-key") == fp()
    assert fp(idempotency_key=None) == fp()


@pytest.mark.parametrize(
    "changes",
    [
        {"phone_number": "+12025550101"},
        {"agent_id": uuid.UUID("00000000-0000-4000-8000-0000000000a2")},
        {"agent_id": None},
        {"agent_id": None, "flow_id": FLOW},
        {"flow_id": FLOW},
        {"phone_number_id": LINE},
    ],
)
def test_a_different_call_has_a_different_fingerprint(changes: dict[str, object]) -> None:
    assert fp(**changes) != fp()


def test_agent_and_flow_ids_are_not_interchangeable() -> None:
    same = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
    assert fp(agent_id=same, flow_id=None) != fp(agent_id=None, flow_id=same)


def test_an_unparseable_number_still_has_a_stable_fingerprint() -> None:
    assert fp(phone_number="not a number") == fp(phone_number=" not a number ")
    assert fp(phone_number="not a number") != fp(phone_number="not a numbe")


def test_fingerprint_is_a_sha256_hex_digest() -> None:
    value = fp()
    assert len(value) == 64 and int(value, 16) >= 0


def test_same_user_and_key_give_the_same_ids() -> None:
    first = ids_for(request())
    again = ids_for(request(phone_number="(202) 555-0100", wait="dialed"))
    assert first == again
    session_id, request_id = first
    assert session_id != request_id
    assert isinstance(session_id, uuid.UUID) and isinstance(request_id, uuid.UUID)


def test_another_user_with_the_same_key_gets_other_ids() -> None:
    mine = ids_for(request())
    theirs = ids_for(request(user_id=OTHER_USER))
    assert mine[0] != theirs[0] and mine[1] != theirs[1]
    assert not set(mine) & set(theirs)


def test_another_key_gets_other_ids() -> None:
    assert ids_for(request(idempotency_key="order-43")) != ids_for(request())


def test_no_key_gives_random_ids_every_time() -> None:
    seen = {ids_for(request(idempotency_key=None)) for _ in range(50)}
    assert len(seen) == 50
    session_ids = [s for s, _ in seen]
    assert all(s.version == 4 for s in session_ids)
