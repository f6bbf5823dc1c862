"""A bytecode cache for the workflow sandbox.

The Temporal Python SDK runs every workflow in a sandbox that imports the workflow's module
afresh for each run. With no `.pyc` to read (PYTHONDONTWRITEBYTECODE=1, usual in containers
and set on this machine), that import compiles the source every time: about 11 ms of CPU per
CreateCallWorkflow on the bench machine, on every call. The worker keeps a cache in a private
temporary directory instead (sys.pycache_prefix), so the source tree is never written to."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile


def keep_bytecode_cache() -> str | None:
    """When this process may not write bytecode, let it write to a private temporary
    directory (removed at exit). Returns that directory, or None when nothing changed."""
    if not sys.dont_write_bytecode:
        return None
    prefix = tempfile.mkdtemp(prefix="dialer-pycache-")
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False
    return prefix
