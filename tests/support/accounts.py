"""Users of a test: a user with an API key and, by default, one active simulated line."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from store import crud
from store.db import session_scope
from store.models import PhoneNumber, User
from tests.support.settings import TEST_SECRET


@dataclass
class Account:
    user: User
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


def make_account(engine: Engine, email: str | None = None, *, with_line: bool = True) -> Account:
    """A user with an API key and (by default) one active simulated line."""
    user = crud.create_user(engine=engine, email=email or f"u{uuid.uuid4().hex[:10]}@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    if with_line:
        with session_scope(engine) as session:
            session.add(PhoneNumber(user_id=user.id, number="+12025550199", label="test line"))
    return Account(user=user, key=key)
