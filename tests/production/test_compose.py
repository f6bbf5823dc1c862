"""docker-compose.yml, checked without a Docker engine: against the official Compose
Specification schema (tests/production/compose/SOURCE.md says where it comes from), after
Compose's own variable interpolation, for the properties the production stack relies on (the
Temporal images one pinned release with Task Queue Fairness, the schema job before the server,
the fairness dynamic config mounted), with the one-shot jobs' scripts run by sh against
stand-ins of the admin-tools binaries, and against README's "Production" section, which must
explain every image, port, volume and variable it uses."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from core.config import Settings
from dialer.binaries import DEV_SERVER_DYNAMIC_CONFIG

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "compose" / "compose_spec.json"
DIALER_SERVICES = ("migrate", "api", "worker")
TEMPORAL_SETUP_JOBS = ("temporal-schema", "temporal-search-attributes")
# Task Queue Fairness (matching.enableFairness) first shipped in Server 1.29. (auto-setup, the
# image that set up the schema inside the server container, is deprecated and no longer built.)
FAIRNESS_SINCE = (1, 29)
# Where the admin-tools image keeps the PostgreSQL 12+ schemas, one directory a database.
SCHEMA_DIRS = {
    "temporal": "/etc/temporal/schema/postgresql/v12/temporal/versioned",
    "temporal_visibility": "/etc/temporal/schema/postgresql/v12/visibility/versioned",
}
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "DIALER_SECRET_KEY")
SEARCH_ATTRIBUTES = (
    "DialerUserId",
    "DialerCallStatus",
    "DialerCampaignId",
    "DialerRequestId",
    "DialerProvider",
)
# What an operator exports before `docker compose up` (test values, not secrets).
OPERATOR_ENV = {"POSTGRES_PASSWORD": "pw0123456789abcdef", "DIALER_SECRET_KEY": "k" * 40}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt},
# $NAME; `$$` is a literal dollar. Defaults here never nest another variable.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, applied to every string of the file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        # `current is None` is part of `unset`; spelled out, it narrows the type.
        if op in (":-", "-"):
            return arg if unset or current is None else current
        if op in (":?", "?"):
            if unset or current is None:
                raise MissingVariable(f"{name}: {arg}")
            return current
        if op in (":+", "+"):
            return "" if unset else arg
        return current or ""

    return _VAR.sub(substitute, value)


def referenced_variables(text: str) -> set[str]:
    return {m["braced"] or m["named"] for m in _VAR.finditer(text) if not m["escaped"]}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    interpolated: dict[str, Any] = interpolate(raw, OPERATOR_ENV)
    return interpolated


def _errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_file_and_its_interpolation_match_the_compose_schema(
    validator: Draft7Validator, raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert _errors(validator, raw) == []
    assert _errors(validator, compose) == []


def test_the_validator_rejects_what_compose_rejects(
    validator: Draft7Validator, compose: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_happy"
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service key
    broken["services"]["api"]["ports"] = "8000:8000"  # must be a list
    assert len(_errors(validator, broken)) == 3


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_required_secrets_must_be_given(raw: dict[str, Any], missing: str) -> None:
    env = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        interpolate(raw, env)


def test_no_secret_has_a_default_in_the_file() -> None:
    text = COMPOSE.read_text()
    for name in REQUIRED_SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[-?+])?", text)
        assert uses and all(op == ":?" for op in uses), f"{name} must always be ${{{name}:?...}}"
    for secret in ("DIALER_TWILIO_AUTH_TOKEN", "DIALER_CODEC_AUTH_TOKEN", "DIALER_PAYLOAD_KEYS"):
        assert f"${{{secret}" not in text, f"{secret} may only be passed through, never defaulted"


def test_dialer_services_share_one_image_and_the_production_settings(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    images = {(services[s]["image"], json.dumps(services[s]["build"])) for s in DIALER_SERVICES}
    assert len(images) == 1, "api, worker and migrate must run the one image"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["api"]["command"] == ["api"]
    assert services["worker"]["command"] == ["worker"]
    fields = Settings.model_fields
    for name in DIALER_SERVICES:
        env = services[name]["environment"]
        assert env["DIALER_ENV"] == "production"
        assert env["DIALER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["DIALER_TEMPORAL_ADDRESS"] == "temporal:7233"
        for key in env:
            if key.startswith("DIALER_"):
                assert key.removeprefix("DIALER_").lower() in fields, f"{key} is no setting"


def test_startup_order_waits_on_health_and_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            wanted = (
                "service_completed_successfully"
                if "restart" in services[target] and services[target]["restart"] == "no"
                else "service_healthy"
            )
            assert rule["condition"] == wanted, f"{name} -> {target}"
            if wanted == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no health check"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert {"migrate", "temporal-search-attributes", "temporal"} <= set(deps)
    healthy_postgres = {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == healthy_postgres
    # Schema first, then the server, then what needs a serving server.
    assert services["temporal-schema"]["depends_on"] == healthy_postgres
    assert services["temporal"]["depends_on"] == {
        "temporal-schema": {"condition": "service_completed_successfully"}
    }
    healthy_temporal = {"temporal": {"condition": "service_healthy"}}
    assert services["temporal-search-attributes"]["depends_on"] == healthy_temporal
    assert services["temporal-ui"]["depends_on"] == healthy_temporal
    for name in TEMPORAL_SETUP_JOBS:
        assert services[name]["restart"] == "no", f"{name} is a one shot"
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "dialer", "worker-health"]
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_workers_scale_and_stop_gracefully(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    grace = float(worker["environment"]["DIALER_WORKER_GRACEFUL_SHUTDOWN_SECONDS"])
    assert _seconds(worker["stop_grace_period"]) > grace
    api = compose["services"]["api"]
    assert "container_name" not in api
    drain = float(api["environment"]["DIALER_SHUTDOWN_DRAIN_SECONDS"])
    in_flight = float(api["environment"]["DIALER_API_GRACEFUL_SHUTDOWN_SECONDS"])
    assert _seconds(api["stop_grace_period"]) > drain + in_flight


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


def test_postgres_keeps_its_data_and_temporal_uses_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "postgres-data" in compose["volumes"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgres"
    assert (
        temporal["environment"]["POSTGRES_USER"]
        == services["postgres"]["environment"]["POSTGRES_USER"]
    )
    assert temporal["environment"]["POSTGRES_PWD"] == OPERATOR_ENV["POSTGRES_PASSWORD"]
    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"].endswith("/codec")


def test_the_search_attributes_are_registered(compose: dict[str, Any]) -> None:
    service = compose["services"]["temporal-search-attributes"]
    assert service["image"].startswith("temporalio/admin-tools:")
    script = "\n".join(service["command"])
    assert "temporal operator search-attribute create" in script
    assert "--type Keyword" in script
    for name in SEARCH_ATTRIBUTES:
        assert name in script
    # The server creates no namespace: this job does, if it is missing, before registering.
    describe = script.index("temporal operator namespace describe --namespace default")
    create = script.index("temporal operator namespace create --namespace default")
    assert describe < create < script.index("temporal operator search-attribute create")
    assert script.index("temporal operator cluster health") < describe


def _image_version(image: str, repository: str) -> tuple[int, ...]:
    name, _, tag = image.partition(":")
    assert name == repository, image
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", tag)
    assert match, f"{image}: pin an exact release (X.Y.Z), never latest or a moving tag"
    return tuple(int(part) for part in match.groups())


def test_temporal_images_are_pinned_to_one_release_with_fairness(raw: dict[str, Any]) -> None:
    services = raw["services"]
    images = {name: service.get("image", "") for name, service in services.items()}
    assert not [n for n, i in images.items() if "auto-setup" in i], "auto-setup is deprecated"
    server = _image_version(images["temporal"], "temporalio/server")
    tools = {
        name: _image_version(images[name], "temporalio/admin-tools") for name in TEMPORAL_SETUP_JOBS
    }
    assert set(tools.values()) == {server}, "server and admin-tools must be the same release"
    assert server[:2] >= FAIRNESS_SINCE, "Task Queue Fairness needs Server 1.29 or later"
    _image_version(images["temporal-ui"], "temporalio/ui")
    temporal_images = [i for i in images.values() if i.startswith("temporalio/")]
    assert sorted(temporal_images) == sorted(
        images[n] for n in ("temporal", "temporal-ui", *TEMPORAL_SETUP_JOBS)
    ), "no other Temporal image"


# Stand-ins for the admin-tools binaries, so the one-shot scripts run here with sh exactly as
# written: each call is logged; `temporal` keeps a namespace and its search attributes in files.
_STUB_SQL_TOOL = """#!/bin/sh
echo "temporal-sql-tool $*" >> "$STUB_LOG"
"""
_STUB_TEMPORAL = """#!/bin/sh
echo "temporal $*" >> "$STUB_LOG"
case "$1 $2 $3" in
  "operator cluster health") echo SERVING ;;
  "operator namespace describe") [ -e "$STUB_STATE/namespace" ] ;;
  "operator namespace create") touch "$STUB_STATE/namespace" ;;
  "operator search-attribute list")
    [ -e "$STUB_STATE/namespace" ] || exit 1; cat "$STUB_STATE/attributes" 2>/dev/null; true ;;
  "operator search-attribute create")
    while [ $# -gt 0 ]; do
      if [ "$1" = --name ]; then echo "$2 Keyword" >> "$STUB_STATE/attributes"; fi
      shift
    done ;;
  *) exit 64 ;;
esac
"""


def _run_one_shot(service: dict[str, Any], tmp_path: Path) -> list[str]:
    """Runs the job's script (variables of the file substituted, `$$` a `$`) with sh against
    the stand-ins; returns the commands it ran, in order."""
    sh = shutil.which("sh")
    assert sh is not None
    assert service["entrypoint"] == ["sh", "-c"]
    (script,) = service["command"]
    assert script.startswith("set -eu\n"), "a failed step must fail the job"
    bin_dir, state, log = tmp_path / "bin", tmp_path / "state", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    stubs = (
        ("temporal-sql-tool", _STUB_SQL_TOOL),
        ("temporal", _STUB_TEMPORAL),
        ("sleep", "#!/bin/sh\n"),  # a wait loop that never ends fails at once
    )
    for name, text in stubs:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log.write_text("")
    env = {
        **{k: str(v) for k, v in (service.get("environment") or {}).items()},
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        "STUB_STATE": str(state),
    }
    done = subprocess.run([sh, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()


def test_the_schema_job_creates_and_migrates_both_databases(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    job, temporal = services["temporal-schema"], services["temporal"]
    env = job["environment"]
    assert env["SQL_PLUGIN"] == temporal["environment"]["DB"] == "postgres12"
    assert env["SQL_HOST"] == temporal["environment"]["POSTGRES_SEEDS"]
    assert str(env["SQL_PORT"]) == str(temporal["environment"]["DB_PORT"]) == "5432"
    assert env["SQL_USER"] == temporal["environment"]["POSTGRES_USER"]
    assert env["SQL_PASSWORD"] == temporal["environment"]["POSTGRES_PWD"]
    expected = []
    for database, schema_dir in SCHEMA_DIRS.items():
        expected += [
            f"temporal-sql-tool --db {database} create-database",
            f"temporal-sql-tool --db {database} setup-schema -v 0.0",
            f"temporal-sql-tool --db {database} update-schema -d {schema_dir}",
        ]
    assert _run_one_shot(job, tmp_path) == expected


def test_the_namespace_job_creates_what_is_missing_and_nothing_twice(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    job = compose["services"]["temporal-search-attributes"]
    first = _run_one_shot(job, tmp_path)
    assert first[0] == "temporal operator cluster health"
    created = [c for c in first if " create " in c]
    assert created[0].startswith("temporal operator namespace create --namespace default")
    register = "temporal operator search-attribute create --namespace default"
    assert created[1:] == [f"{register} --name {name} --type Keyword" for name in SEARCH_ATTRIBUTES]
    again = _run_one_shot(job, tmp_path)  # the next `up`: everything exists
    assert [c for c in again if " create " in c] == []


def test_the_server_reads_the_fairness_dynamic_config(compose: dict[str, Any]) -> None:
    temporal = compose["services"]["temporal"]
    path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    assert path.startswith("/"), "an absolute path, whatever the image's working directory"
    mounts = {}
    for volume in temporal["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode)
    assert mounts[path] == ("./deploy/temporal-dynamic-config.yaml", ["ro"])
    dynamic = yaml.safe_load((ROOT / "deploy" / "temporal-dynamic-config.yaml").read_text())
    for key in ("matching.enableFairness", "matching.useNewMatcher", *DEV_SERVER_DYNAMIC_CONFIG):
        assert dynamic[key] == [{"value": True}], f"{key} must be on, as on the dev server"
    # The server image ships no `temporal` CLI: a check that calls it would never pass.
    check = temporal["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] != "temporal", check
    assert "7233" in check
    assert temporal["environment"]["BIND_ON_IP"] == "0.0.0.0", "the check dials 127.0.0.1"


def _production_section() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Production\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, 'README.md has no "## Production" section'
    return match[1]


def test_readme_explains_every_image_port_volume_and_variable(raw: dict[str, Any]) -> None:
    section = _production_section()
    text = COMPOSE.read_text()
    wanted: set[str] = set(referenced_variables(text))
    for service in raw["services"].values():
        image = service.get("image", "")
        wanted |= {image} if "$" not in image else set()
        wanted |= set(service.get("environment") or {})
        for port in service.get("ports", []):
            wanted.add(str(port).rsplit(":", 1)[-1])  # the container port
        for volume in service.get("volumes", []):
            wanted.add(volume.split(":", 1)[0])
    wanted |= set(raw.get("volumes") or {})
    for name in DIALER_SERVICES:
        wanted.add(name)
    for name in raw["services"]:
        wanted.add(name)
    missing = sorted(
        w for w in wanted if not re.search(r"(?<![\w-])" + re.escape(w) + r"(?![\w-])", section)
    )
    assert missing == [], f'README "Production" does not explain: {missing}'
