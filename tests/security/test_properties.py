"""Properties checked by hypothesis: number normalization, and call statuses that never move
backwards (the provider-reported call status, and the session status with its terminal rule)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contracts.calls import (
    TERMINAL,
    CallStatusUpdate,
    CreateCallInput,
    FailureCode,
    PersistSessionInput,
    RecordCallStatusInput,
    RecordOutcomeInput,
    SessionStatus,
    ValidationResult,
)
from contracts.lifecycle import FINAL, advances, is_final, normalize_status, rank
from core.phone import InvalidNumber, normalize
from store import calls as store_calls
from store.db import make_engine
from store.lifecycle import record_call_status, record_outcome_and_statuses
from store.migrate import upgrade
from store.models import CallSession
from tests.support.accounts import make_account

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
REGIONS = st.sampled_from(["US", "GB", "FR", "DE", "IN", "BR", "JP", "ZZ"])

# Number-like text: digits, separators, an optional plus and extension; plus fully random text.
number_like = st.from_regex(r"\A\+?[0-9 ()\-.]{0,24}(ext\.? ?[0-9]{1,5})?\Z", fullmatch=True)
fictional = (
    st.integers(0, 99)
    .map(lambda n: f"202555{n:04d}"[:10])
    .flatmap(
        lambda digits: st.sampled_from(
            [
                f"+1{digits}",
                f"1{digits}",
                digits,
                f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                f"+1 {digits[:3]}.{digits[3:6]}.{digits[6:]}",
                f"  +1-{digits[:3]}-{digits[3:6]}-{digits[6:]}  ",
            ]
        )
    )
)


# Valid numbers of many countries, written in their national and international formats.
def _example_of(region: str) -> list[str]:
    example = phonenumbers.example_number(region)
    if not example:
        return ["+"]
    return [phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)]


any_country = st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).flatmap(
    lambda region: st.sampled_from(_example_of(region))
)
anything = st.one_of(st.text(max_size=50), number_like, fictional, any_country)


@settings(max_examples=400, deadline=None)
@given(raw=anything, region=REGIONS)
@example(raw="+1 202-555-0100", region="US")
@example(raw="\x00", region="US")
@example(raw="+" + "9" * 60, region="US")
@example(raw="+4930000000000000", region="US")  # 16 digits: valid to the metadata, not E.164
def test_normalize_is_e164_idempotent_and_raises_only_invalid_number(raw: str, region: str) -> None:
    try:
        out = normalize(raw, region)
    except InvalidNumber as exc:
        assert str(exc), "the reason must be something a user can act on"
        return
    assert E164.match(out), out
    # Idempotent, whatever the default region: E.164 carries its country.
    assert normalize(out, region) == out
    assert normalize(out, "US") == out


@given(digits=st.integers(0, 99))
def test_fictional_range_normalizes_to_one_number(digits: int) -> None:
    national = f"202555{digits:04d}"
    forms = [f"+1{national}", f"1{national}", national, f"(202) 555-{digits:04d}"]
    assert {normalize(f, "US") for f in forms} == {f"+1{national}"}


PROVIDER_STATUSES = [
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "answered",
    "completed",
    "busy",
    "no-answer",
    "canceled",
    "failed",
    "RINGING",
    "bogus",
    "",
]


@given(reports=st.lists(st.sampled_from(PROVIDER_STATUSES), max_size=30))
def test_call_status_never_moves_backwards(reports: list[str]) -> None:
    """Fold reports in any order (late, duplicated, replayed) the way the lifecycle does."""
    current: str | None = None
    for raw in reports:
        new = normalize_status(raw)
        before = current
        if new is not None and advances(current, new):
            current = new
        assert rank(current) >= rank(before)
        if is_final(before):
            assert current == before, "a final status is final"
    if any(normalize_status(r) in FINAL for r in reports):
        assert is_final(current)


# --- the session status on a real database: accepted -> success | failed, terminal is final ---

OUTCOMES = st.lists(
    st.tuples(st.sampled_from([SessionStatus.SUCCESS, SessionStatus.FAILED]), st.integers(1, 5)),
    min_size=1,
    max_size=6,
)


Db = tuple[Engine, uuid.UUID]  # the `db` fixture: a migrated database and a user in it


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    path: Path = tmp_path_factory.mktemp("props") / "dialer.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    yield engine, make_account(engine).user.id
    engine.dispose()


def _status(engine: Engine, sid: uuid.UUID) -> str:
    with Session(engine) as session:
        row = session.get(CallSession, sid)
        assert row is not None
        return row.status


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(outcomes=OUTCOMES, replay_persist=st.booleans(), ok=st.booleans())
def test_session_status_terminal_is_final(
    db: Db, outcomes: list[tuple[SessionStatus, int]], replay_persist: bool, ok: bool
) -> None:
    engine, user_id = db
    sid = uuid.uuid4()
    call = CreateCallInput(
        call_session_id=str(sid),
        request_id=str(uuid.uuid4()),
        user_id=str(user_id),
        phone_number="+12025550100",
        request_hash="h",
    )
    validation = ValidationResult(
        ok=ok, target_number="+12025550100", failure_code=None if ok else FailureCode.INVALID_NUMBER
    )
    first = store_calls.persist_session(
        engine, PersistSessionInput(call=call, validation=validation)
    )
    assert first.status == (SessionStatus.ACCEPTED if ok else SessionStatus.FAILED)
    seen = [_status(engine, sid)]
    for status, attempts in outcomes:
        record_outcome_and_statuses(
            engine,
            RecordOutcomeInput(
                call_session_id=str(sid),
                status=status,
                attempts=attempts,
                failure_code=(
                    None if status == SessionStatus.SUCCESS else FailureCode.RETRIES_EXHAUSTED
                ),
            ),
        )
        if replay_persist:
            # A replayed persist (activity retry, a second run) never resets the row.
            again = store_calls.persist_session(
                engine, PersistSessionInput(call=call, validation=validation)
            )
            assert again.already_terminal
        seen.append(_status(engine, sid))
    # accepted may move to a terminal status once; a terminal status never changes.
    terminal_from = next(i for i, s in enumerate(seen) if s in TERMINAL)
    assert all(s == SessionStatus.ACCEPTED for s in seen[:terminal_from])
    assert len(set(seen[terminal_from:])) == 1
    expected = seen[0] if seen[0] in TERMINAL else outcomes[0][0]
    assert seen[-1] == expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.sampled_from(PROVIDER_STATUSES), max_size=4), max_size=8))
def test_stored_call_status_never_moves_backwards(db: Db, batches: list[list[str]]) -> None:
    """The same rule on the database, through the one writer of call statuses (workflow
    activity and webhook alike), with reports arriving in batches in any order."""
    engine, user_id = db
    sid = uuid.uuid4()
    call = CreateCallInput(
        call_session_id=str(sid),
        request_id=str(uuid.uuid4()),
        user_id=str(user_id),
        phone_number="+12025550100",
        request_hash="h",
    )
    validation = ValidationResult(ok=True, target_number="+12025550100")
    store_calls.persist_session(engine, PersistSessionInput(call=call, validation=validation))
    previous: str | None = None
    for batch in batches:
        current = record_call_status(
            engine,
            RecordCallStatusInput(
                call_session_id=str(sid),
                updates=[CallStatusUpdate(status=s, telephony_leg_id="SM1") for s in batch],
            ),
        )
        assert rank(current) >= rank(previous)
        if is_final(previous):
            assert current == previous
        previous = current
