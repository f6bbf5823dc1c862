"""The machine's Redis at 127.0.0.1:6379 (DIALER_TEST_REDIS_URL), for limits shared across
processes: a test skips with the reason when it does not answer, or fails under
DIALER_TEST_REQUIRE_REDIS (CI sets it after starting the server)."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_URL = os.environ.get("DIALER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available(url: str = REDIS_URL) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def require_redis() -> str:
    """The Redis URL, or skip (fail under DIALER_TEST_REQUIRE_REDIS) when none answers."""
    if not redis_available():
        if os.environ.get("DIALER_TEST_REQUIRE_REDIS"):
            pytest.fail(f"Redis is required here but not reachable at {REDIS_URL}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    return REDIS_URL
