"""API keys: stored only as a keyed hash, revocation effective on the very next request (from
the store and from the CLI), a short prefix identifies a key in /me and in `dialer keys list`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from core.security import hash_key, key_prefix
from store import crud
from store.models import ApiKey
from tests.support.accounts import make_account
from tests.support.settings import TEST_SECRET, settings_for
from tests.support.stack import Stack, open_stack


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DIALER_DATABASE_URL": database_url,
        "DIALER_SECRET_KEY": TEST_SECRET,
        "DIALER_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_key_is_stored_only_as_a_keyed_hash(engine: Engine) -> None:
    account = make_account(engine)
    with Session(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.user_id == account.user.id)).one()
    assert row.key_hash == hash_key(account.key, TEST_SECRET)
    assert row.key_hash != hash_key(account.key, TEST_SECRET + "x"), "the hash must be keyed"
    assert account.key not in (row.key_hash, row.prefix)
    assert row.prefix == key_prefix(account.key) and len(row.prefix) == 8


async def test_me_shows_the_prefix_and_a_near_miss_is_refused(stack: Stack) -> None:
    account = make_account(stack.engine)
    me = await stack.http.get("/api/v1/me", headers=account.headers)
    assert me.status_code == 200
    assert me.json()["api_key_prefix"] == key_prefix(account.key)
    assert account.key not in me.text
    # Same prefix, one character off: refused like any wrong key.
    near = account.key[:-1] + ("A" if account.key[-1] != "A" else "B")
    resp = await stack.http.get("/api/v1/me", headers={"x-api-key": near})
    assert resp.status_code == 401
    assert resp.json() == {"detail": "invalid API key"}


async def test_revocation_is_effective_on_the_next_request(stack: Stack) -> None:
    account = make_account(stack.engine)
    bearer = {"Authorization": f"Bearer {account.key}"}
    assert (await stack.http.get("/api/v1/me", headers=bearer)).status_code == 200
    assert crud.revoke_keys(engine=stack.engine, user=account.user) == 1
    for headers in (account.headers, bearer):
        resp = await stack.http.get("/api/v1/me", headers=headers)
        assert resp.status_code == 401
    resp = await stack.http.post(
        "/api/call/create_call", params={"phoneNumber": "+12025550100"}, headers=account.headers
    )
    assert resp.status_code == 401


async def test_cli_revokes_one_key_by_prefix_and_lists_keys(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    account = make_account(engine)
    second = crud.create_key(engine=engine, user=account.user, secret=TEST_SECRET)
    settings = settings_for(tmp_path, database_url)
    async with open_stack(settings, engine, dev_env.client, workers=False) as stack:
        assert (await stack.http.get("/api/v1/me", headers=account.headers)).status_code == 200
        prefix = key_prefix(account.key)
        assert prefix is not None
        _cli(database_url, "keys", "revoke", "--user", account.user.email, "--prefix", prefix)
        assert (await stack.http.get("/api/v1/me", headers=account.headers)).status_code == 401
        ok = await stack.http.get("/api/v1/me", headers={"x-api-key": second})
        assert ok.status_code == 200

    listing = _cli(database_url, "keys", "list", "--user", account.user.email).stdout
    lines = listing.strip().splitlines()
    assert lines[0].split() == ["prefix", "created_at", "revoked_at"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    second_prefix = key_prefix(second)
    assert second_prefix is not None
    assert set(rows) == {prefix, second_prefix}
    assert rows[prefix][2] != "-"
    assert rows[second_prefix][2] == "-"
    assert account.key not in listing and second not in listing
