"""`dialer lines confirm`, the real command in its own process against the local
Twilio-compatible server: lines added before Twilio's confirmation existed (or under the
simulated carrier) are confirmed once Twilio knows their number; one line each on stdout, a
non-zero exit while any is not the account's, and nothing written for a line Twilio refused
or could not be asked about."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from store.db import make_engine
from store.models import PhoneNumber
from tests.fakes.twilio_server import FakeTwilio, Fault
from tests.support.accounts import make_account
from tests.support.processes import dialer_command
from tools.procs import clean_env

LINE = "+12025550199"  # make_account's line


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


def confirmations(data: Path) -> dict[str, str | None]:
    engine = make_engine(f"sqlite:///{data / 'dialer.db'}")
    try:
        with Session(engine) as session:
            rows = session.exec(select(PhoneNumber)).all()
            return {str(r.user_id): r.confirmed_by for r in rows}
    finally:
        engine.dispose()


def test_lines_confirm_asks_twilio_about_every_unconfirmed_line(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    data = tmp_path / "data"

    def dialer(*args: str) -> subprocess.CompletedProcess[str]:
        env = clean_env(
            DIALER_DATA_DIR=data,
            DIALER_TELEPHONY_PROVIDER="twilio",
            DIALER_TWILIO_ACCOUNT_SID=fake.account_sid,
            DIALER_TWILIO_AUTH_TOKEN=fake.auth_token,
            DIALER_TWILIO_API_BASE_URL=fake.base_url,
            DIALER_TWILIO_HTTP_TIMEOUT_SECONDS=2,
        )
        return subprocess.run(
            [*dialer_command(), *args], env=env, capture_output=True, text=True, timeout=120
        )

    assert dialer("db", "upgrade").returncode == 0
    engine = make_engine(f"sqlite:///{data / 'dialer.db'}")
    try:
        # Two accounts' lines from before the check (make_account's lines share a number).
        first = make_account(engine, "first@example.test", line_confirmed_by=None)
        second = make_account(engine, "second@example.test", line_confirmed_by="simulated")
    finally:
        engine.dispose()
    ids = str(first.user.id), str(second.user.id)

    fake.number_faults.append(Fault("error", status=503, code=20503, message="down"))
    down = dialer("lines", "confirm")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "could not be asked" in down.stderr and len(down.stderr.strip().splitlines()) == 1
    assert confirmations(data) == {ids[0]: None, ids[1]: "simulated"}

    refused = dialer("lines", "confirm")
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout.count("not confirmed") == 2, refused.stdout
    assert "2 line(s) not confirmed" in refused.stderr
    assert confirmations(data) == {ids[0]: None, ids[1]: "simulated"}

    fake.caller_ids.add(LINE)
    one = dialer("lines", "confirm", "--user", "first@example.test")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"{LINE}  first@example.test  confirmed by twilio"
    assert confirmations(data) == {ids[0]: "twilio", ids[1]: "simulated"}

    rest = dialer("lines", "confirm")
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.strip() == f"{LINE}  second@example.test  confirmed by twilio"
    assert confirmations(data) == {ids[0]: "twilio", ids[1]: "twilio"}
    assert dialer("lines", "confirm").stdout == ""  # nothing left to ask

    unknown = dialer("lines", "confirm", "--user", "nobody@example.test")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
