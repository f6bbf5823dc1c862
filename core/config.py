"""Settings: one object, env prefix DIALER_, `.env` supported."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-secret-change-me"
# Values that mark a secret as not really set (compared case-insensitively, and as substrings
# of the value: "changeme", "<your token>", ...).
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "example", "xxxx", "<")
MIN_SECRET_LENGTH = 32


def _placeholder(
    value: str | SecretStr | None, name: str, min_length: int = MIN_SECRET_LENGTH
) -> str:
    """A problem message when `value` is missing, a placeholder or too short; else ''."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    raw = raw.strip()
    if not raw:
        return f"{name} is not set"
    if raw == DEV_SECRET or any(m in raw.lower() for m in PLACEHOLDER_MARKERS):
        return f"{name} is a placeholder value: set a real secret"
    if len(raw) < min_length:
        return f"{name} is too short: use at least {min_length} random characters"
    return ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIALER_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"

    # Where the embedded stack keeps its state (SQLite file, dev server database, demo key).
    data_dir: Path = Path(".data")
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1)
    # Connections opened past the pool under bursts, and how long a request waits for one.
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)

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
    # Seeded fault injection around the simulated carrier (telephony/faults.py); off unless a
    # seed is set. Used by `make chaos`.
    simulated_fault_seed: int | None = None
    simulated_fault_rate: float = Field(default=0.3, ge=0, le=1)
    simulated_fault_spike_ms: int = Field(default=1500, ge=0)
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
    # Run workflows in the Temporal SDK's sandbox. Off by default: the sandbox re-imports the
    # workflow module for every run and wraps every step, about a fifth of the worker's CPU
    # per call (bench/results). Its checks (no I/O, no clock, no randomness in workflow
    # code) still guard every change: the workflow tests (tests/workflow) always run sandboxed.
    workflow_sandbox: bool = False

    # Twilio (DIALER_TELEPHONY_PROVIDER=twilio). The auth token has no default: it signs
    # every request to Twilio and checks the signature of every status callback.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    # One HTTP request to Twilio; stays below DIALER_DIAL_TIMEOUT_SECONDS so a slow answer
    # is reported as ambiguous (and reconciled) rather than killed mid-flight.
    twilio_http_timeout_seconds: float = Field(default=10.0, gt=0)
    # Seconds Twilio lets the phone ring (Twilio's `Timeout`), and answering-machine
    # detection (`Enable` or `DetectMessageEnd`); unset means Twilio's defaults.
    twilio_ring_timeout_seconds: int | None = Field(default=None, ge=5, le=600)
    # Deprecated: use DIALER_MACHINE_DETECTION (or each call's machine_detection). When set
    # and DIALER_MACHINE_DETECTION is not, calls default to machine_detection `detect`.
    twilio_machine_detection: Literal["Enable", "DetectMessageEnd"] | None = None
    # Where Twilio reaches this API (status callbacks), e.g. https://dialer.example.com.
    public_base_url: str | None = None
    # The media stream an answered call is connected to when neither its agent nor its
    # workflow has a media_stream_url (ws:// or wss://; {call_session_id} and {request_id}
    # are filled per call). Checked by the worker at start (contracts/context.py).
    media_stream_url: str | None = None

    # Following a call after the dial: before the answer, without a status for this long ask
    # the provider, the wait doubling up to the max while nothing changes; an answered call
    # (a quiet talk is normal) is asked every max, the bound within which the end of a call
    # whose callbacks are lost is found. A call is followed at most `call_max_age_seconds`
    # after its dial.
    call_status_poll_seconds: float = Field(default=30.0, gt=0)
    call_status_poll_max_seconds: float = Field(default=600.0, gt=0)
    call_max_age_seconds: float = Field(default=7200.0, gt=0)
    # Provider look-ups (the polls above) per second per provider account, across every
    # worker (the shared storage below): far below what a carrier answers with 429 (Twilio
    # limits an account's concurrent REST requests). A look-up past it is not sent: the
    # workflow asks again a little later.
    provider_lookups_per_second: float = Field(default=20.0, gt=0, le=1000)

    # Call control (README, "Call control"). A call's max_duration_seconds when it gives none
    # (None: no limit but call_max_age_seconds); its machine_detection when it gives none
    # (off, detect, detect_and_hang_up, detect_and_leave_message; unset: off, or `detect`
    # when the deprecated DIALER_TWILIO_MACHINE_DETECTION is set). scheduled_at may lie this
    # far in the past (clock skew: dialed at once) and at most this far ahead.
    max_duration_seconds: int | None = Field(default=None, ge=1, le=14400)
    machine_detection: (
        Literal["off", "detect", "detect_and_hang_up", "detect_and_leave_message"] | None
    ) = None
    schedule_skew_seconds: float = Field(default=60.0, ge=0)
    schedule_horizon_days: float = Field(default=30.0, gt=0)

    # The simulated carrier's call: seconds from dial to ringing, from ringing to the answer
    # (or busy / no-answer), and of conversation; whether it sends status callbacks at all.
    simulated_ring_seconds: float = Field(default=1.0, ge=0)
    simulated_answer_seconds: float = Field(default=3.0, ge=0)
    simulated_talk_seconds: float = Field(default=8.0, ge=0)
    simulated_callbacks: bool = True

    # Where limits that must hold across processes are kept (infra/limiter.py): the per-key
    # rate limit and auth-failure throttle of every API process, a campaign's dial pace and
    # an account's calls per second in every worker. `memory://`: this process only (the
    # embedded stack, one API and one worker); `redis://host:6379/0` for several replicas.
    limits_storage_url: str = "memory://"
    # Limits of the HTTP edge (api/limits.py). The rate limit is per API key, `burst` at once
    # and `per_minute` in the long run, for the whole deployment (shared storage above).
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=60, ge=1)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_upload_bytes: int = Field(default=20_971_520, ge=1024)
    max_campaign_recipients: int = Field(default=100_000, ge=1)
    # Failed authentication (a missing or wrong API key, a wrong operator token) per client
    # address: `auth_failure_burst` at once, refilled at `auth_failures_per_minute`; past it
    # the address gets 429 on authenticated routes, before any key is looked up. In the
    # shared storage, like the rate limit.
    auth_failures_per_minute: int = Field(default=30, ge=1)
    auth_failure_burst: int = Field(default=20, ge=1)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the API believes (uvicorn's
    # forwarded_allow_ips: comma-separated addresses or networks, e.g. 10.0.0.0/8). Unset:
    # none, the peer address is the client (the auth-failure throttle counts per client).
    trusted_proxies: str | None = None

    log_level: str = "INFO"
    # `json`: one JSON object per line (for a log pipeline); `text`: for people.
    log_format: Literal["text", "json"] = "text"

    # Payload encryption: `id:<base64 key>,...` or a JSON object; the first key encrypts, all
    # decrypt (rotation = put a new key first). Unset: payloads are stored in plain text.
    payload_keys: SecretStr | None = None
    # Bearer token operators present to the codec endpoint (/codec/decode, /codec/encode).
    # Unset: the endpoint refuses every request.
    codec_auth_token: SecretStr | None = None
    # Origins allowed to call the codec endpoint from a browser (the Temporal UI), comma
    # separated. Unset: the local dev server UI (localhost/127.0.0.1 on the UI port).
    codec_cors_origins: str | None = None
    # The embedded stack's convenience (`dialer run` sets it when it starts the dev server and
    # the API listens on loopback): the codec also answers, without the operator token, a
    # browser on this machine whose Origin is one of the codec's CORS origins, so the dev
    # server's UI (which has no login to pass a token) shows decoded payloads at once.
    # Refused in production, where the codec keeps its token (see the operator's guide).
    codec_local_ui: bool = False

    # Runs of the calls worker kept in memory between their workflow tasks (the SDK's sticky
    # cache, least recently used first out). A run out of the cache replays its whole history
    # on its next callback or timer, so it is sized for the calls live at once: one cached
    # CreateCallWorkflow costs about 120 KB of worker memory (measured, README "Worker memory
    # and the sticky cache"), so 10,000 live calls hold about 1.2 GB; memory is only taken by
    # runs that are open. 0: no cache (every task replays from the start).
    worker_max_cached_workflows: int = Field(default=10_000, ge=0)

    # Where the worker serves the Temporal SDK's Prometheus metrics (and the dial counter).
    # Unset port: no metrics endpoint.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = None

    # OTLP/HTTP endpoint for traces (e.g. http://localhost:4318/v1/traces). Unset: no export.
    otel_exporter_otlp_endpoint: str | None = None

    # Graceful shutdown. On SIGTERM the API reports not-ready for `shutdown_drain_seconds`
    # (so a load balancer stops sending new requests), then stops accepting and gives
    # in-flight requests `api_graceful_shutdown_seconds` to finish.
    shutdown_drain_seconds: float = Field(default=5.0, ge=0)
    api_graceful_shutdown_seconds: float = Field(default=20.0, ge=0)
    # The worker stops polling at once and gives running activities this long to finish.
    worker_graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    # The worker touches this file while it polls; `dialer worker-health` reads its age.
    # Default: <data dir>/worker-heartbeat.
    worker_heartbeat_file: Path | None = None
    worker_heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    worker_heartbeat_max_age_seconds: float = Field(default=30.0, gt=0)

    # The customer's webhooks (README "Webhooks"). Deliveries run on their own task queue and
    # worker. An attempt has `webhook_attempt_timeout_seconds` for a 2xx; retries back off
    # exponentially from `webhook_retry_initial_seconds` up to `webhook_retry_max_seconds`
    # between attempts, with jitter, and give up `webhook_give_up_seconds` after the first.
    webhook_task_queue: str = "dialer-webhooks"
    webhook_attempt_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_initial_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_give_up_seconds: float = Field(default=86400.0, gt=0)
    # An endpoint whose deliveries have all failed for this long is disabled, with the reason.
    webhook_disable_after_seconds: float = Field(default=86400.0, gt=0)
    # After a rotation the previous secret signs beside the new one for this long.
    webhook_rotation_grace_seconds: float = Field(default=86400.0, ge=0)
    # Only this much of a receiver's answer is read (kept, cut, in the delivery log).
    webhook_max_response_bytes: int = Field(default=4096, ge=0, le=65536)
    # Pending deliveries nobody has touched for this long are handed to their workflow again
    # (an event recorded while Temporal was unreachable), checked by the worker this often.
    webhook_sweep_seconds: float = Field(default=30.0, gt=0)
    # Concurrent deliveries per worker process (each waits at most the attempt timeout).
    webhook_max_concurrent_deliveries: int = Field(default=200, ge=1)

    def problems(self) -> list[str]:
        """Why this configuration must not run in production: one line per problem, all at
        once, so an operator fixes everything in one go. Empty outside production."""
        if self.env != "production":
            return []
        found: list[str] = []
        secret = _placeholder(self.secret_key, "DIALER_SECRET_KEY")
        if secret:
            found.append(secret)
        url = (self.database_url or "").strip()
        if not url:
            found.append(
                "DIALER_DATABASE_URL is not set: production needs PostgreSQL "
                "(postgresql+psycopg://user:password@host:5432/dialer)"
            )
        elif url.startswith("sqlite") or ":memory:" in url:
            found.append(
                "DIALER_DATABASE_URL points at SQLite: production needs PostgreSQL, which "
                "several API replicas and workers can share"
            )
        if self.codec_local_ui:
            found.append(
                "DIALER_CODEC_LOCAL_UI is on: production's codec answers only to the operator "
                "token (DIALER_CODEC_AUTH_TOKEN); unset it"
            )
        if self.telephony_provider == "simulated":
            found.append(
                "DIALER_TELEPHONY_PROVIDER is 'simulated': production places real calls; "
                "set it to 'twilio'"
            )
        elif self.telephony_provider == "twilio":
            for value, name in (
                (self.twilio_account_sid, "DIALER_TWILIO_ACCOUNT_SID"),
                (self.twilio_auth_token, "DIALER_TWILIO_AUTH_TOKEN"),
            ):
                problem = _placeholder(value, name, min_length=0)
                if problem:
                    found.append(problem)
            if not self.public_base_url:
                found.append(
                    "DIALER_PUBLIC_BASE_URL is not set: Twilio needs it to deliver call "
                    "status callbacks to the API"
                )
        return found

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dialer.db').as_posix()}"

    @property
    def heartbeat_path(self) -> Path:
        return self.worker_heartbeat_file or self.data_dir / "worker-heartbeat"

    @property
    def cors_origins(self) -> list[str]:
        if self.codec_cors_origins:
            return [o.strip() for o in self.codec_cors_origins.split(",") if o.strip()]
        port = self.temporal_ui_port
        return [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"localhost:{self.temporal_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
