"""uv.lock matches pyproject.toml: every dependency declared (runtime and test extras) is in
the lock with the same specifier, so a dependency added without `make lock` fails here (and
`uv sync --locked` refuses to install) instead of being silently missing on a fresh clone."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> set[tuple[str, str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: set[tuple[str, str, str]] = set()
    groups = {"": project["dependencies"], **project.get("optional-dependencies", {})}
    for extra, requirements in groups.items():
        for text in requirements:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            found.add((name, str(req.specifier), extra))
    return found


def _locked() -> set[tuple[str, str, str]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    [own] = [p for p in lock["package"] if p["name"] == "dialer"]
    found: set[tuple[str, str, str]] = set()
    for dep in own["metadata"]["requires-dist"]:
        marker = dep.get("marker", "")
        extra = marker.split("==")[1].strip(" '\"") if "extra ==" in marker else ""
        specifier = str(Requirement(f"x{dep.get('specifier', '')}").specifier)
        found.add((canonicalize_name(dep["name"]), specifier, extra))
    return found


def test_the_lock_has_every_declared_dependency() -> None:
    missing = _declared() - _locked()
    assert not missing, f"pyproject.toml declares {sorted(missing)} but uv.lock does not: make lock"


def test_the_lock_has_nothing_undeclared() -> None:
    stale = _locked() - _declared()
    assert not stale, f"uv.lock still pins {sorted(stale)}: make lock"
