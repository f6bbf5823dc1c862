"""core.security and the API key lookup behind every /api route."""

from __future__ import annotations

import inspect

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api import deps
from api.deps import CurrentUser
from core.config import Settings
from core.security import KEY_PREFIX, generate_key, hash_key, key_prefix
from store import crud
from store.models import ApiKey
from tests.support.settings import TEST_SECRET


def test_generated_key_carries_its_prefix() -> None:
    key, prefix = generate_key()
    assert key.startswith(f"{KEY_PREFIX}{prefix}_")
    assert len(prefix) == 8 and int(prefix, 16) >= 0
    assert key_prefix(key) == prefix
    # Enough randomness after the prefix to be a secret.
    assert len(key) - len(f"{KEY_PREFIX}{prefix}_") >= 40


def test_generated_keys_are_unique() -> None:
    keys = {generate_key()[0] for _ in range(200)}
    assert len(keys) == 200


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("dk_0123abcd_secretpart", "0123abcd"),
        ("dk_0123abcd_with_underscores_inside", "0123abcd"),
        ("dk_0123abcd_", "0123abcd"),
        ("dk_0123abcd", None),  # no separator after the prefix
        ("dk_0123abc_secret", None),  # prefix too short
        ("dk_0123abcde_secret", None),  # prefix too long
        ("xx_0123abcd_secret", None),  # not one of our keys
        ("0123abcd_secret", None),
        ("DK_0123abcd_secret", None),
        ("dk__secret", None),
        ("", None),
    ],
)
def test_key_prefix_parsing(key: str, prefix: str | None) -> None:
    assert key_prefix(key) == prefix


def test_hash_is_keyed_by_the_secret() -> None:
    key, _ = generate_key()
    assert hash_key(key, "secret-a") == hash_key(key, "secret-a")
    assert hash_key(key, "secret-a") != hash_key(key, "secret-b")
    # Not a plain digest of the key either.
    import hashlib

    assert hash_key(key, "secret-a") != hashlib.sha256(key.encode()).hexdigest()
    assert key not in hash_key(key, "secret-a")


def test_hash_differs_per_key() -> None:
    a, _ = generate_key()
    b, _ = generate_key()
    assert hash_key(a, TEST_SECRET) != hash_key(b, TEST_SECRET)


# --- key lookup against a real database ---------------------------------------------------


class Refused(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers


async def authenticate(
    engine: Engine,
    *,
    key: str | None = None,
    bearer: str | None = None,
    secret: str = TEST_SECRET,
) -> dict[str, str]:
    """Resolve the caller exactly as every /api route does: through the CurrentUser
    dependency, on a minimal app that holds the same state the real one does."""
    app = FastAPI()
    app.state.settings = Settings(_env_file=None, secret_key=secret)
    app.state.engine = engine

    @app.get("/whoami")
    def whoami(user: CurrentUser) -> dict[str, str]:
        return {"user_id": str(user.user_id), "email": user.email, "prefix": user.key_prefix}

    headers = {}
    if key is not None:
        headers["x-api-key"] = key
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dialer") as client:
        resp = await client.get("/whoami", headers=headers)
    if resp.status_code != 200:
        raise Refused(resp.status_code, resp.json()["detail"], dict(resp.headers))
    caller: dict[str, str] = resp.json()
    return caller


async def test_key_is_stored_only_as_its_keyed_hash(engine: Engine) -> None:
    user = crud.create_user(engine=engine, email="Owner@Example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    with Session(engine) as session:
        rows = session.exec(select(ApiKey).where(ApiKey.user_id == user.id)).all()
    assert len(rows) == 1
    assert rows[0].key_hash == hash_key(key, TEST_SECRET)
    assert rows[0].prefix == key_prefix(key)
    assert key not in rows[0].key_hash


async def test_lookup_finds_the_owner_by_header_or_bearer(engine: Engine) -> None:
    user = crud.create_user(engine=engine, email="owner@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    for principal in [await authenticate(engine, key=key), await authenticate(engine, bearer=key)]:
        assert principal == {
            "user_id": str(user.id),
            "email": "owner@example.test",
            "prefix": key_prefix(key),
        }
    assert crud.key_is_valid(engine=engine, key=key, secret=TEST_SECRET)


async def test_each_key_authenticates_its_own_user(engine: Engine) -> None:
    alice = crud.create_user(engine=engine, email="alice@example.test")
    bob = crud.create_user(engine=engine, email="bob@example.test")
    alice_key = crud.create_key(engine=engine, user=alice, secret=TEST_SECRET)
    bob_key = crud.create_key(engine=engine, user=bob, secret=TEST_SECRET)
    assert (await authenticate(engine, key=alice_key))["user_id"] == str(alice.id)
    assert (await authenticate(engine, key=bob_key))["user_id"] == str(bob.id)


async def test_a_key_checked_with_another_secret_is_refused(engine: Engine) -> None:
    user = crud.create_user(engine=engine, email="owner@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    with pytest.raises(Refused) as info:
        await authenticate(engine, key=key, secret="another-secret")
    assert info.value.status_code == 401
    assert not crud.key_is_valid(engine=engine, key=key, secret="another-secret")


async def test_a_forged_key_with_a_real_prefix_is_refused(engine: Engine) -> None:
    user = crud.create_user(engine=engine, email="owner@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    forged = f"{KEY_PREFIX}{key_prefix(key)}_{'A' * 43}"
    with pytest.raises(Refused) as info:
        await authenticate(engine, key=forged)
    assert info.value.status_code == 401
    assert info.value.detail == "invalid API key"


@pytest.mark.parametrize("bad", ["garbage", "dk_short_x", "Bearer dk_0123abcd_x"])
async def test_a_malformed_key_is_refused(engine: Engine, bad: str) -> None:
    with pytest.raises(Refused) as info:
        await authenticate(engine, key=bad)
    assert info.value.status_code == 401


async def test_a_missing_key_is_refused_with_a_hint(engine: Engine) -> None:
    with pytest.raises(Refused) as info:
        await authenticate(engine)
    assert info.value.status_code == 401
    assert "x-api-key" in info.value.detail
    assert info.value.headers["www-authenticate"] == "Bearer"


async def test_a_revoked_key_is_refused_and_others_keep_working(engine: Engine) -> None:
    user = crud.create_user(engine=engine, email="owner@example.test")
    old = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    new = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    assert crud.revoke_keys(engine=engine, user=user, prefix=key_prefix(old)) == 1
    with pytest.raises(Refused) as info:
        await authenticate(engine, key=old)
    assert info.value.status_code == 401
    assert not crud.key_is_valid(engine=engine, key=old, secret=TEST_SECRET)
    assert (await authenticate(engine, key=new))["user_id"] == str(user.id)
    # Revoking everything leaves nothing that authenticates.
    assert crud.revoke_keys(engine=engine, user=user) == 1
    with pytest.raises(Refused):
        await authenticate(engine, key=new)


async def test_a_key_check_is_one_statement_and_a_revocation_applies_at_once(
    engine: Engine,
) -> None:
    """Every request reads its key with its user in one statement (it was two: the key, then
    the user), with no cache: the very next request after a revocation is refused."""
    user = crud.create_user(engine=engine, email="owner@example.test")
    key = crud.create_key(engine=engine, user=user, secret=TEST_SECRET)
    seen: list[str] = []

    def note(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", note)
    try:
        assert (await authenticate(engine, key=key))["user_id"] == str(user.id)
        assert len(seen) == 1, seen
        assert crud.revoke_keys(engine=engine, user=user) == 1
        with pytest.raises(Refused) as info:
            await authenticate(engine, key=key)
        assert info.value.status_code == 401
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_the_app_state_getters_do_not_take_a_thread() -> None:
    """FastAPI runs a plain `def` dependency in its thread pool: the getters every request
    resolves are coroutines, and the key check takes one trip to a thread for all its work."""
    for getter in (deps.get_settings_dep, deps.get_engine_dep, deps.get_temporal):
        assert inspect.iscoroutinefunction(getter), getter.__name__
    assert inspect.iscoroutinefunction(deps.get_current_user)
