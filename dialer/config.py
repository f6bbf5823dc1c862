"""Settings: one object, env prefix DIALER_, `.env` supported."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIALER_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"

    # Where the embedded stack keeps its state (SQLite file, dev server database, demo key).
    data_dir: Path = Path(".data")
    database_url: str | None = None
    db_pool_size: int = 10

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    task_queue: str = "dialer"
    dial_task_queue: str = "dialer-dial"

    # Used to key the hash of API keys; production refuses the development value.
    secret_key: str = DEV_SECRET

    telephony_provider: Literal["simulated", "twilio"] = "simulated"
    simulated_latency_ms: int = 150
    default_region: str = "US"

    # How long create_call waits for the workflow before answering `pending`.
    create_call_wait_seconds: float = 10.0
    # Waits held open at once by one API process; past it create_call answers `pending`.
    max_inflight_waits: int = 500
    dial_max_attempts: int = Field(default=5, ge=1)
    dial_backoff_initial_seconds: float = 1.0
    dial_backoff_max_seconds: float = 30.0
    dial_timeout_seconds: float = 15.0
    # Account-wide cap on dials per second, enforced by the server on the dial task queue.
    dial_rate_per_second: float = 10.0

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.env == "production" and self.secret_key == DEV_SECRET:
            raise ValueError("DIALER_SECRET_KEY must be set to a real secret in production")
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dialer.db').as_posix()}"

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"localhost:{self.temporal_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
