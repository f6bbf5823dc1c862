"""Settings for a test: its own task queues, a known secret, a fast simulated carrier."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from core.config import Settings

TEST_SECRET = "test-secret-not-for-production"


def settings_for(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for a test: its own task queues, no simulated latency, fast backoff."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {  # fields of every type; Settings validates them
        "data_dir": tmp_path,
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "task_queue": f"dialer-{suffix}",
        "dial_task_queue": f"dialer-dial-{suffix}",
        "webhook_task_queue": f"dialer-webhooks-{suffix}",
        "simulated_latency_ms": 0,
        "dial_backoff_initial_seconds": 0.05,
        "dial_backoff_max_seconds": 0.2,
        "dial_timeout_seconds": 5.0,
        "dial_rate_per_second": 1000.0,
        "create_call_wait_seconds": 15.0,
        # A short simulated call, so workflows that follow it to its end close quickly.
        "simulated_ring_seconds": 0.05,
        "simulated_answer_seconds": 0.05,
        "simulated_talk_seconds": 0.1,
        "call_status_poll_seconds": 1.0,
        "call_status_poll_max_seconds": 2.0,
        "call_max_age_seconds": 60.0,
        # Tests send many bad keys from one address (the ASGI client's); the throttle of
        # failed authentication has its own test (tests/security/test_hostile_input.py).
        "auth_failure_burst": 100_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)
