"""The worker's bytecode cache: the sandbox must not compile workflow modules on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import importlib, sys
from infra.bytecode import keep_bytecode_cache
prefix = keep_bytecode_cache()
assert prefix is not None and sys.pycache_prefix == prefix and not sys.dont_write_bytecode
import importlib.util
spec = importlib.util.find_spec("workflows.create_call")
import workflows.create_call
cached = importlib.util.cache_from_source(spec.origin)
assert cached.startswith(prefix), cached
import os
assert os.path.exists(cached), cached
print(prefix)
"""


def test_cache_goes_to_a_private_directory_when_bytecode_is_off(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-B", "-c", SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The cache lived in the private directory (asserted by the script), removed at exit.
    assert not Path(done.stdout.strip()).exists()


def test_nothing_changes_when_bytecode_is_on() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.dont_write_bytecode = False\n"
            "from infra.bytecode import keep_bytecode_cache\n"
            "assert keep_bytecode_cache() is None",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
