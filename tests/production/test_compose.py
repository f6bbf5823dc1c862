"""docker-compose.yml, checked without a Docker engine: against the official Compose
Specification schema (tests/production/compose/SOURCE.md says where it comes from), after
Compose's own variable interpolation, for the properties the production stack relies on, and
against README's "Production" section, which must explain every image, port, volume and
variable it uses."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "compose" / "compose_spec.json"
DIALER_SERVICES = ("migrate", "api", "worker")
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
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
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
    assert temporal["image"].startswith("temporalio/")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgres"
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
