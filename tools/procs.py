"""Subprocess helpers shared by the e2e tests, chaos and the benchmark: a clean DIALER_*
environment, a process in its own process group with its output in a log file, stopped by
its pid (never by name)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# How long stop() waits after its signal before it SIGKILLs the process group.
STOP_TIMEOUT = 30.0

# Runs the command with SIGINT at its default, as in a terminal: a process started in the
# background (a test runner, `make ... &`) inherits SIGINT ignored, and Python would then
# never raise KeyboardInterrupt on Ctrl-C. execv keeps the pid.
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def clean_env(values: Mapping[str, object] | None = None, /, **more: object) -> dict[str, str]:
    """This process's environment without any DIALER_* setting, plus `values` and `more`
    (as strings): a child configured only by what the caller says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env.update({k: str(v) for k, v in {**(values or {}), **more}.items()})
    return env


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not reaped, counts as gone). Linux only."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@dataclass
class Proc:
    """A subprocess in its own process group, its output appended to `log`. The command and
    environment are kept, so start() after a kill() restarts it into the same log."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    # Start with SIGINT at its default (see _SIGINT_DEFAULT), for processes a test stops
    # with SIGINT as Ctrl-C would.
    sigint_default: bool = False
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> Proc:
        args = (
            [sys.executable, "-c", _SIGINT_DEFAULT, *self.cmd] if self.sigint_default else self.cmd
        )
        with self.log.open("ab") as out:
            self._popen = subprocess.Popen(
                args,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return f"--- {self.name} log ---\n" + self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return f"--- {self.name}: no log ---"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send `sig`, wait up to `timeout` seconds, then SIGKILL the process group; the exit
        code (None if never started)."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return None if self._popen is None else self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the process and anything it started (its process group): no shutdown hook
        runs, like a crash or an OOM kill."""
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._popen.wait(10)


def spawn(
    name: str,
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    unique_log: bool = False,
    sigint_default: bool = False,
) -> Proc:
    """Start `args` in `cwd`, output to `cwd/<name>.log` (appended), or to a log file of its
    own with `unique_log` (several processes of one name in one directory)."""
    stem = f"{name}-{uuid.uuid4().hex[:6]}" if unique_log else name
    proc = Proc(
        name=name,
        cmd=args,
        env=env,
        log=cwd / f"{stem}.log",
        cwd=cwd,
        sigint_default=sigint_default,
    )
    return proc.start()
