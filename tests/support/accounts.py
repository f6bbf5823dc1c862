"""Users of a test: a user with an API key and, by default, one active simulated line."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from store import crud
from store.db import session_scope
from store.models import PhoneNumber, User, utcnow
from tests.support.settings import TEST_SECRET

# A caller line belongs to one account (a number another account holds is a 409), and tests
# share their database: a test that registers a line takes a number no other test uses.
# Fictional 555-01xx numbers of area codes the hard-coded test numbers (202) do not use.
_LINE_AREAS = ("303", "415", "617", "312", "206", "512", "702", "213", "305", "404")
_LINE_NUMBERS: Iterator[str] = (
    f"+1{area}5550{n}" for area, n in itertools.product(_LINE_AREAS, range(110, 199))
)


def fresh_line_number() -> str:
    """A fictional number no other line of this test session holds."""
    return next(_LINE_NUMBERS)


@dataclass
class Account:
    user: User
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


def make_account(
    engine: Engine,
    email: str | None = None,
    *,
    with_line: bool = True,
    line_confirmed_by: str | None = "twilio",
) -> Account:
    """A user with an API key and (by default) one active simulated line. The line counts as
    confirmed by Twilio (`line_confirmed_by`), so the tests that run the twilio provider dial
    from it as from a line registered through the API; the simulated carrier checks nothing.
    `line_confirmed_by=None`: a line no carrier confirmed (one added before the check)."""
    user = crud.create_user(engine=engine, email=email or f"u{uuid.uuid4().hex[:10]}@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    if with_line:
        with session_scope(engine) as session:
            session.add(
                PhoneNumber(
                    user_id=user.id,
                    number="+12025550199",
                    label="test line",
                    confirmed_by=line_confirmed_by,
                    confirmed_at=utcnow() if line_confirmed_by else None,
                )
            )
    return Account(user=user, key=key)
