"""The layering of docs/ARCHITECTURE.md, read from the code: every import of one of Dialer's own
packages (at the top of a module or inside a function) must be allowed by the table below, so
no arrow points from the core towards the edge. Change the table and the document together."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each package (or top-level module) of the product may import, besides itself. From the
# edge down: dialer (the command) -> api, worker -> services -> activities, workflows ->
# store, telephony, infra -> contracts -> core.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "contracts": frozenset({"core"}),
    "infra": frozenset({"core"}),
    "store": frozenset({"contracts", "core"}),
    "telephony": frozenset({"contracts", "core"}),
    "workflows": frozenset({"contracts", "core"}),
    "activities": frozenset({"store", "telephony", "infra", "contracts", "core"}),
    "services": frozenset({"workflows", "store", "telephony", "infra", "contracts", "core"}),
    "api": frozenset({"services", "store", "telephony", "infra", "contracts", "core"}),
    "worker": frozenset(
        {"services", "activities", "workflows", "store", "telephony", "infra", "contracts", "core"}
    ),
    "dialer": frozenset(
        {
            "api",
            "worker",
            "services",
            "workflows",
            "store",
            "telephony",
            "infra",
            "contracts",
            "core",
        }
    ),
}
# Outside the wheel: may use any product package, never the other way round.
TOOLING = ("tools", "bench", "chaos", "tests")
# Only application services start or signal workflows.
CLIENT_CALLS = ("start_workflow", "execute_update_with_start_workflow", "signal_workflow")


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def product_files() -> list[Path]:
    files = [ROOT / "worker.py"]
    for pkg in ALLOWED:
        if (ROOT / pkg).is_dir():
            files += sorted((ROOT / pkg).rglob("*.py"))
    return [f for f in files if "migrations" not in f.parts]


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from store import calls` names the module store.calls
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


OWN = set(ALLOWED) | set(TOOLING)


def wrong_way_imports() -> list[str]:
    problems = []
    for path in product_files():
        pkg = package_of(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, module in imported_modules(tree):
            top = module.split(".")[0]
            if top not in OWN or top == pkg:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if top not in ALLOWED[pkg]:
                problems.append(f"{where}: {pkg} imports {module}")
    return problems


def test_no_package_imports_one_above_it() -> None:
    assert wrong_way_imports() == []


def test_only_services_start_or_signal_workflows() -> None:
    offenders = []
    for path in product_files():
        if package_of(path) == "services":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in CLIENT_CALLS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "signal"
                and package_of(path) != "workflows"
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "signal")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .signal()")
    assert offenders == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_package_of_the_table_exists(package: str) -> None:
    assert (ROOT / package).is_dir() or (ROOT / f"{package}.py").is_file()


def test_the_checker_sees_a_wrong_way_arrow() -> None:
    """The rule can fail: an import of store from core is reported."""
    tree = ast.parse("def f():\n    from store import db\n")
    modules = [m for _, m in imported_modules(tree)]
    assert "store.db" in modules and "store" not in ALLOWED["core"]


def test_tooling_stays_out_of_the_wheel() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    packaged = pyproject.split("[tool.setuptools.packages.find]", 1)[1].split("\n\n", 1)[0]
    for name in TOOLING:
        assert f'"{name}' not in packaged
    for name in ALLOWED:
        if (ROOT / name).is_dir():
            assert f'"{name}*"' in packaged, f"{name} is not packaged"


ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def test_the_architecture_page_names_every_module() -> None:
    """docs/ARCHITECTURE.md matches the tree: each product module is named in its package's row
    (as `name.py`), and each package of the table has a row."""
    page = ARCHITECTURE.read_text()
    missing = []
    for path in product_files():
        if path.name == "__init__.py" or path.parent == ROOT:
            continue
        if f"`{path.name}`" not in page and f"`{path.relative_to(ROOT)}`" not in page:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
    for package in ALLOWED:
        assert f"| `{package}/` |" in page or f"| `{package}.py` |" in page, package


def test_the_architecture_page_names_only_what_exists() -> None:
    page = ARCHITECTURE.read_text()
    for ref in sorted(set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+(?:\.py|/))`", page))):
        assert (ROOT / ref).exists(), ref
