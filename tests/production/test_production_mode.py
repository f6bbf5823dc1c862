"""Production mode (DIALER_ENV=production) refuses to start on an unsafe configuration, with
one clear line per problem, all at once, and no traceback; development is unaffected."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import DEV_SECRET, Settings, get_settings
from dialer import cli

GOOD_SECRET = "k3Jx9QpL2vT8wZr5Nc7Hb4Md6Fs1Ga0Ye"  # not a real secret: a 34-character test value
PG = "postgresql+psycopg://dialer:pw@db:5432/dialer"
DIALER_VARS = [k for k in os.environ if k.startswith("DIALER_")]


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {  # fields of every type; Settings validates them
        "env": "production",
        "secret_key": GOOD_SECRET,
        "database_url": PG,
        "telephony_provider": "twilio",
        "twilio_account_sid": "AC" + "0123456789abcdef" * 2,
        "twilio_auth_token": "0123456789abcdef" * 2,
        "public_base_url": "https://dialer.example.org",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def test_a_complete_production_configuration_has_no_problem() -> None:
    assert production().problems() == []


def test_development_never_complains() -> None:
    assert Settings(_env_file=None).problems() == []


def test_defaults_in_production_list_every_problem_at_once() -> None:
    problems = Settings(_env_file=None, env="production").problems()
    assert len(problems) == 3, problems
    assert any(p.startswith("DIALER_SECRET_KEY is a placeholder") for p in problems)
    assert any(p.startswith("DIALER_DATABASE_URL is not set") for p in problems)
    assert any(p.startswith("DIALER_TELEPHONY_PROVIDER is 'simulated'") for p in problems)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("", "is not set"),
        (DEV_SECRET, "placeholder"),
        ("please-change-me-before-going-live-0123456789", "placeholder"),
        ("<your secret key here, 32+ characters long>", "placeholder"),
        ("short-but-random-Zx81", "too short"),
    ],
)
def test_placeholder_or_weak_secrets_are_refused(secret: str, says: str) -> None:
    (problem,) = production(secret_key=secret).problems()
    assert problem.startswith("DIALER_SECRET_KEY") and says in problem


@pytest.mark.parametrize(
    "url", [None, "sqlite:///data/dialer.db", "sqlite://", "sqlite+pysqlite:///:memory:"]
)
def test_sqlite_or_missing_database_is_refused(url: str | None) -> None:
    (problem,) = production(database_url=url).problems()
    assert problem.startswith("DIALER_DATABASE_URL")


def test_simulated_provider_is_refused() -> None:
    (problem,) = production(telephony_provider="simulated").problems()
    assert "simulated" in problem


def test_twilio_needs_its_credentials_and_a_public_url() -> None:
    problems = production(
        twilio_account_sid=None, twilio_auth_token="changeme", public_base_url=None
    ).problems()
    assert [p.split(" ")[0] for p in problems] == [
        "DIALER_TWILIO_ACCOUNT_SID",
        "DIALER_TWILIO_AUTH_TOKEN",
        "DIALER_PUBLIC_BASE_URL",
    ]


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The process environment of an operator who set only DIALER_ENV=production."""
    for key in DIALER_VARS:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file is read from the repository
    monkeypatch.setenv("DIALER_ENV", "production")
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.mark.parametrize("command", [["api"], ["worker"], ["db", "upgrade"], ["run"]])
def test_every_starting_command_refuses(
    production_env: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialer: refusing to start in production:\n")
    lines = [line for line in err.splitlines()[1:] if line]
    assert len(lines) == 3 and all(line.startswith("  - DIALER_") for line in lines), err
    assert not production_env.exists(), "nothing may be written before the refusal"


def test_unreadable_settings_are_one_line_each(
    production_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIALER_ENV", "prod")
    monkeypatch.setenv("DIALER_DB_POOL_SIZE", "many")
    assert cli.main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "DIALER_ENV:" in err and "DIALER_DB_POOL_SIZE:" in err
    assert "Traceback" not in err


def test_the_real_process_refuses_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env.update(
        DIALER_ENV="production",
        DIALER_SECRET_KEY="changeme",
        DIALER_DATABASE_URL=f"sqlite:///{tmp_path}/dialer.db",
        DIALER_DATA_DIR=str(tmp_path / "data"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dialer.cli", "api"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "DIALER_SECRET_KEY is a placeholder value" in proc.stderr
    assert "DIALER_DATABASE_URL points at SQLite" in proc.stderr
    assert "DIALER_TELEPHONY_PROVIDER is 'simulated'" in proc.stderr
    assert not (tmp_path / "dialer.db").exists()
