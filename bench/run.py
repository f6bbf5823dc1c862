"""`make bench` / `python -m bench`: start a private stack, run the scenarios, print every
figure as Dialer / baseline, write bench/results/<name>.json and .md.

    python -m bench                      # the short default run (a few minutes)
    python -m bench --full               # more repetitions and larger samples
    python -m bench --only latency_accepted --reps 1 --latency-n 5   # one scenario, quickly
    python -m bench --profile            # py-spy profiles of the API and worker under load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import scenarios as sc
from bench.report import markdown, print_figures
from bench.stack import Stack, start_stack

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = (
    "latency_accepted",
    "latency_dialed",
    "plain",
    "throughput",
    "campaign",
    "campaign_paced",
    "sustained",
    "recipients_csv",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="more repetitions, larger samples")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3, full 5)")
    p.add_argument("--latency-n", type=int, default=None, help="calls per latency repetition")
    p.add_argument("--throughput-n", type=int, default=None, help="calls per throughput run")
    p.add_argument("--concurrency", default=None, help="throughput concurrencies, e.g. 2,16,64")
    p.add_argument("--campaign-size", type=int, default=10_000)
    p.add_argument(
        "--campaign-budget",
        type=float,
        default=None,
        help="seconds the 10,000-recipient campaign may take before its rate so far is "
        "reported and the rest canceled (default 180, full 1800)",
    )
    p.add_argument("--paced-seconds", type=float, default=None, help="length of the 20/s run")
    p.add_argument("--sustained-seconds", type=float, default=60.0)
    p.add_argument("--csv-recipients", type=int, default=100_000, help="recipients_csv's size")
    p.add_argument("--name", default="latest", help="results file name (bench/results/<name>.*)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--profile", action="store_true", help="py-spy the API and worker (throughput)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = p.parse_args(argv)
    full = args.full
    args.reps = args.reps or (5 if full else 3)
    args.latency_n = args.latency_n or (300 if full else 40)
    args.throughput_n = args.throughput_n or (1000 if full else 120)
    args.concurrency = [int(c) for c in (args.concurrency or "2,16,64").split(",")]
    args.paced_seconds = args.paced_seconds or (60.0 if full else 15.0)
    args.campaign_budget = args.campaign_budget or (1800.0 if full else 180.0)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Profiler:
    """py-spy record of the API and worker processes while a scenario runs."""

    def __init__(self, stack: Stack, out: Path, enabled: bool) -> None:
        self._stack = stack
        self._out = out
        beside = Path(sys.executable).parent / "py-spy"
        self._pyspy = str(beside) if beside.exists() else shutil.which("py-spy")
        self._enabled = enabled and self._pyspy is not None
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, label: str) -> None:
        if not self._enabled:
            return
        self._out.mkdir(parents=True, exist_ok=True)
        for name in ("api", "worker"):
            target = self._out / f"{label}-{name}.txt"
            self._procs.append(
                subprocess.Popen(
                    [
                        str(self._pyspy),
                        "record",
                        "--pid",
                        str(self._stack.procs[name].pid),
                        "--format",
                        "raw",
                        "--rate",
                        "50",
                        "--output",
                        str(target),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs = []


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dialer-bench-"))
    began = time.monotonic()
    write = sys.stdout.write
    write(f"bench: starting the stack under {work}\n")
    stack = await start_stack(work)
    result: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        },
        "scenarios": {},
        "peak_rss_mb": {},
    }
    profiler = Profiler(stack, args.out / "profiles", args.profile)
    engine = stack.engine()
    try:
        async with (
            httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http,
            httpx.AsyncClient(base_url=stack.plain_url, timeout=60) as plain,
        ):
            callers = sc.Callers(stack, http, plain)
            await callers.warm_up()
            for name in args.only:
                write(f"bench: {name} ...\n")
                sys.stdout.flush()
                assert stack.sampler is not None
                stack.sampler.reset()
                profiler.start(name)
                try:
                    figures = await _scenario(name, callers, engine, args)
                finally:
                    profiler.stop()
                result["scenarios"][name] = figures
                result["peak_rss_mb"][name] = {
                    k: round(v / 2**20, 1) for k, v in stack.sampler.peaks().items()
                }
                print_figures(name, figures, write)
                sys.stdout.flush()
    finally:
        engine.dispose()
        stack.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["meta"]["seconds"] = round(time.monotonic() - began, 1)
    result["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


async def _scenario(name: str, callers: sc.Callers, engine: Any, args: argparse.Namespace) -> Any:
    if name == "latency_accepted":
        return await sc.latency_pair(
            callers.stack,
            name,
            lambda: callers.dialer("accepted"),
            callers.raw_accepted,
            args.latency_n,
            args.reps,
        )
    if name == "latency_dialed":
        return await sc.latency_pair(
            callers.stack,
            name,
            lambda: callers.dialer("dialed"),
            callers.raw_dialed,
            args.latency_n,
            args.reps,
            extra={"baseline_own_queue": callers.raw_dialed_own_queue},
        )
    if name == "plain":
        # Dialer's wait=dialed against the plain endpoint (which also answers after the dial).
        return await sc.latency_pair(
            callers.stack,
            name,
            lambda: callers.dialer("dialed"),
            callers.plain_call,
            args.latency_n,
            args.reps,
            extra={"dialer_accepted": lambda: callers.dialer("accepted")},
        )
    if name == "throughput":
        return await sc.throughput(
            callers, engine, args.throughput_n, args.concurrency, max(1, args.reps - 1)
        )
    if name == "campaign":
        return await sc.run_campaign(
            callers,
            engine,
            args.campaign_size,
            calls_per_second=100,
            max_concurrency=1000,
            budget=args.campaign_budget,
        )
    if name == "campaign_paced":
        size = int(20 * args.paced_seconds)
        return await sc.run_campaign(
            callers, engine, size, calls_per_second=20, max_concurrency=1000, budget=300.0
        )
    if name == "sustained":
        return await sc.sustained(callers, args.sustained_seconds, concurrency=8)
    if name == "recipients_csv":
        return await sc.recipients_csv(callers, engine, args.csv_recipients)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = args.out / f"{args.name}.md"
    md_path.write_text(markdown(result))
    sys.stdout.write(f"bench: wrote {json_path} and {md_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
