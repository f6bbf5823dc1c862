"""Limits with clear answers: requests per API key (429 + Retry-After), request body size and
upload size (413), recipients per campaign (422)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.limits import RateLimiter, check_recipient_count
from infra.limiter import SharedLimits, bucket_as_window
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import open_stack


def test_a_key_gets_its_burst_then_waits_for_the_window() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)  # 3 requests per 3 s, moving
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire("k")
    assert 2.5 < wait <= 3.0
    assert limiter.wait_for("k") == pytest.approx(wait, abs=0.1)
    # Another key has its own window.
    assert limiter.acquire("other") == 0


def test_a_bucket_is_a_moving_window_of_its_burst() -> None:
    assert (bucket_as_window(600, 60).amount, bucket_as_window(600, 60).get_expiry()) == (60, 6)
    assert (bucket_as_window(30, 20).amount, bucket_as_window(30, 20).get_expiry()) == (20, 40)
    # A burst below a second's worth of the rate is raised to it: windows are whole seconds.
    assert (bucket_as_window(600, 2).amount, bucket_as_window(600, 2).get_expiry()) == (10, 1)


def test_check_answers_429_with_whole_seconds_retry_after() -> None:
    limiter = RateLimiter(per_minute=1, burst=1)
    limiter.check("k")
    with pytest.raises(HTTPException) as info:
        limiter.check("k")
    assert info.value.status_code == 429
    assert info.value.headers == {"Retry-After": "60"}


def test_limiters_of_two_processes_share_one_redis_window(redis_url: str) -> None:
    """Two API processes' limiters (two storages on one Redis) count the same requests."""
    key = f"k-{uuid.uuid4()}"
    first = RateLimiter(60, 3, SharedLimits(redis_url))
    second = RateLimiter(60, 3, SharedLimits(redis_url))
    assert [first.acquire(key), second.acquire(key), first.acquire(key)] == [0, 0, 0]
    assert second.acquire(key) > 0
    assert first.acquire(key) > 0


def test_an_unreachable_redis_limits_in_the_process_instead() -> None:
    limiter = RateLimiter(60, 2, SharedLimits("redis://127.0.0.1:1/0"))
    assert [limiter.acquire("k"), limiter.acquire("k")] == [0, 0]
    assert limiter.acquire("k") > 0


def test_recipient_count_limit() -> None:
    check_recipient_count(10, 10)
    with pytest.raises(HTTPException) as info:
        check_recipient_count(11, 10)
    assert info.value.status_code == 422
    assert "at most 10" in str(info.value.detail)


async def test_rate_limit_per_key_over_http(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url, rate_limit_per_minute=60, rate_limit_burst=3)
    first, second = make_account(engine), make_account(engine)
    async with open_stack(settings, engine, dev_env.client, workers=False) as stack:
        codes = [
            (await stack.http.get("/api/v1/me", headers=first.headers)).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        limited = await stack.http.get("/api/v1/me", headers=first.headers)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        # Another key is not affected, and a bad key is not counted against anyone.
        assert (await stack.http.get("/api/v1/me", headers=second.headers)).status_code == 200
        bad = {"x-api-key": first.key[:-2] + "xx"}
        assert (await stack.http.get("/api/v1/me", headers=bad)).status_code == 401
        # Operations routes are not behind keys and not limited.
        assert (await stack.http.get("/health")).status_code == 200


async def test_body_and_upload_size_limits(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url, max_request_bytes=2048, max_upload_bytes=8192)
    account = make_account(engine)
    async with open_stack(settings, engine, dev_env.client, workers=False) as stack:
        big = {"name": "x" * 4000}
        resp = await stack.http.post("/api/v1/agents", json=big, headers=account.headers)
        assert resp.status_code == 413
        assert resp.json()["detail"] == "request body too large: at most 2048 bytes"

        # Without Content-Length (chunked), the body is counted as it arrives.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 1000

        headers = {**account.headers, "content-type": "application/json"}
        resp = await stack.http.post("/api/v1/agents", content=chunks(), headers=headers)
        assert resp.status_code == 413

        # A CSV upload has its own, larger limit.
        csv = b"phone_number\n" + b"+12025550100\n" * 400  # ~5 KB: over 2 KB, under 8 KB
        upload = {**account.headers, "content-type": "text/csv"}
        resp = await stack.http.post("/api/v1/agents", content=csv, headers=upload)
        assert resp.status_code != 413
        resp = await stack.http.post("/api/v1/agents", content=csv * 2, headers=upload)
        assert resp.status_code == 413
        assert resp.json()["detail"] == "upload too large: at most 8192 bytes"

        # Nothing was written by the refused requests.
        listed = await stack.http.get("/api/v1/agents", headers=account.headers)
        assert listed.json() == []


def test_limits_are_in_the_openapi_document(tmp_path: Path) -> None:
    from api.app import create_app

    doc = create_app(settings_for(tmp_path, "sqlite://")).openapi()
    create_call = doc["paths"]["/api/call/create_call"]["post"]["responses"]
    assert {"401", "429", "503"} <= create_call.keys()
    assert "Retry-After" in create_call["429"]["headers"]
    assert "413" in doc["paths"]["/api/v1/agents"]["post"]["responses"]
    assert "429" not in doc["paths"]["/health"]["get"]["responses"]
