"""`dialer run`: the whole embedded stack in one command: migrations, the Temporal dev server
(SQLite file under the data dir, UI on), the worker and the API, a seeded demo account."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from api.routes.demo_agent import demo_agent_url
from contracts.search_attributes import SEARCH_ATTRIBUTES
from core.config import Settings
from dialer.binaries import dev_server_dynamic_config_args, temporal_cli
from dialer.net import port_open
from infra.codec import local_codec_token, local_keys
from store import crud
from store.db import get_engine
from store.migrate import upgrade

log = logging.getLogger("dialer.run")

# The worker's Prometheus endpoint under `dialer run` when DIALER_WORKER_METRICS_PORT is unset.
WORKER_METRICS_PORT = 9464
# After Ctrl-C, beyond the longest graceful shutdown a child was given: its interpreter still
# has to close connections and exit once its own budget is spent.
STOP_MARGIN_SECONDS = 10.0
# The dev server, stopped last: it has nothing left to finish.
SERVER_STOP_SECONDS = 15.0


def dev_server_command(settings: Settings) -> list[str]:
    cmd = [
        temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--namespace",
        settings.temporal_namespace,
        "--ui-disable-news-fetch",
        # The UI asks the API's codec endpoint to decrypt payloads for an authorised operator.
        "--ui-codec-endpoint",
        codec_endpoint(settings),
        "--log-level",
        "warn",
        *dev_server_dynamic_config_args(),
    ]
    for key in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", f"{key.name}=Keyword"]
    return cmd


def codec_endpoint(settings: Settings) -> str:
    # `localhost`, like the UI's own address: same site, so the codec login cookie is sent.
    return f"http://localhost:{settings.api_port}/codec"


def operator_env(settings: Settings) -> dict[str, str]:
    """Encryption on by default: a local key and codec token under the data dir (created once,
    reused) unless configured, and the worker's metrics endpoint on its default port."""
    return {
        "DIALER_PAYLOAD_KEYS": (
            settings.payload_keys.get_secret_value()
            if settings.payload_keys
            else local_keys(settings.data_dir)
        ),
        "DIALER_CODEC_AUTH_TOKEN": (
            settings.codec_auth_token.get_secret_value()
            if settings.codec_auth_token
            else local_codec_token(settings.data_dir)
        ),
        "DIALER_WORKER_METRICS_PORT": str(settings.worker_metrics_port or WORKER_METRICS_PORT),
        # The dev server's UI has no login, so it cannot send the operator token: the codec
        # answers this machine's browser on the UI's origin without one (api/routes/codec.py),
        # and the operator opening the printed link sees decoded payloads at once.
        "DIALER_CODEC_LOCAL_UI": "true" if local_ui_decodes(settings) else "false",
    }


def local_ui_decodes(settings: Settings) -> bool:
    """Whether the codec opens to the local UI: only for the dev server this command starts,
    with the API on a loopback address, outside production."""
    return (
        settings.temporal_address is None
        and settings.env != "production"
        and _is_loopback(settings.api_host)
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StackError(Exception):
    """Why the stack cannot start or stopped, in one line that says what to do."""


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, procs: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for proc in procs:
            if proc.poll() is not None:
                raise StackError(
                    f"{what} did not start: a process exited early (code {proc.returncode})"
                )
        time.sleep(0.2)
    raise StackError(f"{what} did not come up within {timeout:.0f}s")


def _worker_beats(settings: Settings, pid: int) -> bool:
    """Whether the worker process `pid` wrote the heartbeat file (see infra/health.py)."""
    try:
        beat: dict[str, object] = json.loads(settings.heartbeat_path.read_text())
        return beat.get("pid") == pid
    except (OSError, ValueError, AttributeError):
        return False


def demo_key(settings: Settings) -> str:
    """The demo key, kept under the data dir so a second `make run` prints the same key."""
    engine = get_engine(settings)
    demo = crud.seed_demo(
        engine=engine,
        agent_media_stream_url=demo_agent_env(settings).get("DIALER_MEDIA_STREAM_URL"),
    )
    path = settings.data_dir / "demo-api-key"
    if path.exists():
        key = path.read_text().strip()
        if crud.key_is_valid(engine=engine, key=key, secret=settings.secret_key):
            return key
    key = crud.create_key(engine=engine, user=demo.user, secret=settings.secret_key)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def demo_agent_env(settings: Settings) -> dict[str, str]:
    """In development, the demo agent the API serves (api/routes/demo_agent.py) is where the
    demo agent's calls, and any call whose agent and workflow name no media stream, connect:
    so the first curl shows the call reach an agent. A DIALER_MEDIA_STREAM_URL of your own
    (environment or .env) wins."""
    if settings.env != "development" or settings.media_stream_url:
        return {}
    return {"DIALER_MEDIA_STREAM_URL": demo_agent_url(settings.api_host, settings.api_port)}


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def handle_stop_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM both stop the stack, set explicitly: a process started
    with SIGINT ignored (a background job of a script, `nohup`) inherits that, and Python
    then installs no handler of its own, so Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def taken_ports(settings: Settings) -> list[str]:
    """The ports this stack would listen on that something else already holds, each with the
    setting that moves it."""
    wanted = [(settings.api_port, "DIALER_API_PORT", "the API")]
    if settings.temporal_address is None:
        wanted += [
            (
                settings.temporal_port,
                "DIALER_TEMPORAL_PORT (or DIALER_TEMPORAL_ADDRESS to use that server)",
                "Temporal",
            ),
            (settings.temporal_ui_port, "DIALER_TEMPORAL_UI_PORT", "the Temporal UI"),
        ]
    metrics = settings.worker_metrics_port or WORKER_METRICS_PORT
    wanted.append((metrics, "DIALER_WORKER_METRICS_PORT", "the worker's metrics"))
    return [
        f"port {port} ({what}) is taken: stop what runs there or set {setting}"
        for port, setting, what in wanted
        if port_open(port)
    ]


def stop_deadline_seconds(settings: Settings, api_drain_seconds: float) -> float:
    """How long `dialer run` waits for its children after Ctrl-C before it kills them: the
    longest shutdown a child was configured for (the worker's grace for running activities,
    the API's drain plus its grace for in-flight requests), plus a margin. Killing sooner
    would cut short the very work those settings protect."""
    api = api_drain_seconds + settings.api_graceful_shutdown_seconds
    return max(settings.worker_graceful_shutdown_seconds, api) + STOP_MARGIN_SECONDS


def stop_processes(procs: list[subprocess.Popen[Any]], timeout: float) -> None:
    """SIGTERM to all (last started first), then wait for them side by side for up to
    `timeout` seconds in total; SIGKILL whichever is still running after that."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in reversed(procs):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_stack(settings: Settings) -> int:
    """The dev server, the worker and the API. Each child runs in its own process group, so
    a terminal's Ctrl-C reaches only this process, which then stops them in order: the API
    and the worker first (the worker's running activities still report their results to
    the server), the dev server last."""
    handle_stop_signals()
    taken = taken_ports(settings)
    if taken:
        raise StackError("; ".join(taken))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    server: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "DIALER_DATA_DIR": str(settings.data_dir), **operator_env(settings)}
    # No load balancer to drain on one machine: Ctrl-C stops the API at once.
    env.setdefault("DIALER_SHUTDOWN_DRAIN_SECONDS", "0")
    env.update(demo_agent_env(settings))
    stop_timeout = stop_deadline_seconds(settings, float(env["DIALER_SHUTDOWN_DRAIN_SECONDS"]))

    try:
        if settings.temporal_address is None:
            with open(settings.data_dir / "temporal.log", "ab") as log_file:
                server = subprocess.Popen(
                    dev_server_command(settings),
                    stdout=log_file,
                    stderr=log_file,
                    process_group=0,
                )
            _wait_for(
                "Temporal dev server",
                lambda: port_open(settings.temporal_port),
                60,
                [server],
            )
        key = demo_key(settings)
        me = [sys.executable, "-m", "dialer.cli"]
        worker = subprocess.Popen([*me, "worker"], env=env, process_group=0)
        procs.append(worker)
        procs.append(subprocess.Popen([*me, "api"], env=env, process_group=0))
        everything = [*procs, *([server] if server else [])]
        base = f"http://127.0.0.1:{settings.api_port}"

        def api_up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for("API", api_up, 60, everything)
        # The printed curl must place a call, not answer `pending` because the worker is
        # still starting: wait for this worker's first heartbeat (it beats once it polls).
        _wait_for("worker", lambda: _worker_beats(settings, worker.pid), 60, everything)
        _banner(settings, key, base)
        while all(p.poll() is None for p in everything):
            time.sleep(0.5)
        log.error("a process of the stack exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_processes(procs, stop_timeout)
        if server is not None:
            stop_processes([server], SERVER_STOP_SECONDS)


def cli_path() -> str:
    """The `dialer` script of the running interpreter's venv, as a user types it from here."""
    script = Path(sys.executable).parent / "dialer"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _banner(settings: Settings, key: str, base: str) -> None:
    ui = f"http://localhost:{settings.temporal_ui_port}"
    port = settings.worker_metrics_port or WORKER_METRICS_PORT
    worker_metrics = f"http://{settings.worker_metrics_host}:{port}"
    token = (
        "DIALER_CODEC_AUTH_TOKEN"
        if settings.codec_auth_token
        else str(settings.data_dir / "codec-token")
    )
    lines = [
        "",
        "Dialer is running. Ctrl-C stops everything.",
        f"  API            {base}   (OpenAPI at {base}/docs)",
        f"  Temporal       {settings.temporal_target}",
    ]
    if settings.temporal_address is None:
        workflows = f"{ui}/namespaces/{settings.temporal_namespace}/workflows"
        lines += [
            f"  Temporal UI    {workflows}",
            f"                 one call: {workflows}/<call_session_id>",
        ]
        if local_ui_decodes(settings):
            lines.append("                 payloads show decoded in this machine's browser")
    lines += [
        f"  Database       {make_url(settings.db_url).render_as_string(hide_password=True)}",
        f"  Demo API key   {key}",
        f"  Metrics        {base}/metrics (API), {worker_metrics}/metrics (worker)",
        f"  Payloads       encrypted; the codec {codec_endpoint(settings)} takes the operator "
        f"token in {token} (temporal CLI: --codec-auth 'Bearer <token>'; another browser: "
        f"{codec_endpoint(settings)}/login)",
        f"  CLI            {cli_path()} --help   (or `source .venv/bin/activate`, then dialer)",
        "",
        "Place a call:",
        f"  curl -s -X POST -H 'x-api-key: {key}' "
        f"'{base}/api/call/create_call?phoneNumber=%2B12025550100'",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
