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
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import scenarios as sc
from bench.charts import write_charts
from bench.fairness import fairness
from bench.live import default_talk_seconds, live_calls
from bench.report import markdown, print_figures
from bench.stack import MATCHING_VARIANTS, Stack, demo_user, seed_user, start_stack

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
    "fairness",
    "live_calls",
)
# Scenarios that start stacks of their own (their own settings); the others share one.
OWN_STACK = ("fairness", "live_calls")
DATABASES = ("sqlite", "postgres")
# PostgreSQL: the machine's server (as tests/support/db.py), a fresh database per stack.
PG_ADMIN_URL = os.environ.get("DIALER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


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
    p.add_argument(
        "--database",
        default="sqlite",
        help="comma-separated: sqlite, postgres; each selected scenario runs on each "
        "(results of postgres keyed <scenario>@postgres)",
    )
    p.add_argument("--fairness-seconds", type=float, default=60.0, help="B's loaded window")
    p.add_argument("--fairness-alone-seconds", type=float, default=20.0, help="B alone, idle")
    p.add_argument("--fairness-b-rate", type=float, default=2.0, help="B's calls per second")
    p.add_argument(
        "--fairness-campaign-rate",
        type=float,
        default=100.0,
        help="A's campaign calls_per_second (default 100, the API's highest: full speed)",
    )
    p.add_argument(
        "--fairness-variants",
        default="fair,nofair,classic",
        help=f"dev server matching variants, of {', '.join(MATCHING_VARIANTS)}",
    )
    p.add_argument(
        "--live-calls", type=int, default=None, help="live_calls' N (default 500, full 10,000)"
    )
    p.add_argument(
        "--live-talk-seconds",
        type=float,
        default=None,
        help="simulated talk time of live_calls (default 60 + N/4, full 60 + N/3)",
    )
    p.add_argument("--no-charts", action="store_true", help="no PNG charts")
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
    args.live_calls = args.live_calls or (10_000 if full else 500)
    args.live_talk_seconds = args.live_talk_seconds or default_talk_seconds(args.live_calls, full)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.database = [d.strip() for d in args.database.split(",") if d.strip()]
    if set(args.database) - set(DATABASES) or not args.database:
        p.error(f"--database takes {', '.join(DATABASES)}")
    args.fairness_variants = [v.strip() for v in args.fairness_variants.split(",") if v.strip()]
    if set(args.fairness_variants) - set(MATCHING_VARIANTS):
        p.error(f"--fairness-variants takes {', '.join(MATCHING_VARIANTS)}")
    return args


@contextlib.contextmanager
def database(kind: str) -> Iterator[str | None]:
    """Dialer's database for one stack: None (the stack's own SQLite file) or a fresh
    PostgreSQL database, dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    import psycopg

    name = f"dialer_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def uncommitted() -> list[str]:
    """Files of the working tree that differ from the commit (the bench measures the tree: on
    a shared tree, other engineers' work in progress is part of what was measured)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(line[3:] for line in out.splitlines() if line[3:])


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
    result: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "uncommitted": uncommitted(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        },
        "scenarios": {},
        "peak_rss_mb": {},
        "load_average": {},
    }
    try:
        for db in args.database:
            suffix = "" if db == "sqlite" else f"@{db}"
            shared = [n for n in args.only if n not in OWN_STACK]
            if shared:
                with database(db) as url:
                    await _shared_stack(args, work / f"shared{suffix}", url, shared, suffix, result)
            if "fairness" in args.only:
                await _fairness(args, work, db, suffix, result)
            if "live_calls" in args.only:
                await _live_calls(args, work, db, suffix, result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["meta"]["seconds"] = round(time.monotonic() - began, 1)
    result["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _record(result: dict[str, Any], key: str, figures: Any, peaks: dict[str, int]) -> None:
    result["scenarios"][key] = figures
    result["peak_rss_mb"][key] = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    result["load_average"][key] = [round(x, 2) for x in os.getloadavg()]
    print_figures(key, figures, sys.stdout.write)
    sys.stdout.flush()


async def _shared_stack(
    args: argparse.Namespace,
    work: Path,
    url: str | None,
    names: list[str],
    suffix: str,
    result: dict[str, Any],
) -> None:
    """The scenarios that share one stack (Dialer and its baselines)."""
    write = sys.stdout.write
    write(f"bench: starting the stack under {work}\n")
    stack = await start_stack(work, database_url=url)
    profiler = Profiler(stack, args.out / "profiles", args.profile)
    engine = stack.engine()
    try:
        async with (
            httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http,
            httpx.AsyncClient(base_url=stack.plain_url, timeout=60) as plain,
        ):
            callers = sc.Callers(stack, http, plain)
            await callers.warm_up()
            for name in names:
                write(f"bench: {name}{suffix} ...\n")
                sys.stdout.flush()
                assert stack.sampler is not None
                stack.sampler.reset()
                profiler.start(name)
                try:
                    figures = await _scenario(name, callers, engine, args)
                finally:
                    profiler.stop()
                _record(result, name + suffix, figures, stack.sampler.peaks())
    finally:
        engine.dispose()
        stack.stop()


async def _fairness(
    args: argparse.Namespace, work: Path, db: str, suffix: str, result: dict[str, Any]
) -> None:
    """One stack per matching variant: a 20/s dial cap, users A (the seeded one) and B."""
    figures: dict[str, Any] = {"variants": {}}
    peaks: dict[str, int] = {}
    for variant in args.fairness_variants:
        sys.stdout.write(f"bench: fairness{suffix}, dev server matching {variant} ...\n")
        sys.stdout.flush()
        with database(db) as url:
            stack = await start_stack(
                work / f"fairness-{variant}{suffix}",
                {"DIALER_DIAL_RATE_PER_SECOND": "20"},
                matching=variant,
                baselines=False,
                database_url=url,
            )
            engine = stack.engine()
            try:
                a = demo_user(stack)
                b = seed_user(stack.settings, "b@bench.local", "+12025550198")
                figures["variants"][variant] = await fairness(
                    stack,
                    engine,
                    a,
                    b,
                    campaign_size=args.campaign_size,
                    window=args.fairness_seconds,
                    b_rate=args.fairness_b_rate,
                    alone_seconds=args.fairness_alone_seconds,
                    campaign_rate=args.fairness_campaign_rate,
                )
                assert stack.sampler is not None
                for k, v in stack.sampler.peaks().items():
                    peaks[f"{k} ({variant})"] = v
            finally:
                engine.dispose()
                stack.stop()
    _record(result, "fairness" + suffix, figures, peaks)


async def _live_calls(
    args: argparse.Namespace, work: Path, db: str, suffix: str, result: dict[str, Any]
) -> None:
    """Calls that talk long enough to be live together: ring and answer at once, then
    `--live-talk-seconds` of talk; callbacks on, as shipped."""
    sys.stdout.write(
        f"bench: live_calls{suffix}: {args.live_calls} calls, "
        f"{args.live_talk_seconds:.0f} s of talk ...\n"
    )
    sys.stdout.flush()
    env = {
        "DIALER_SIMULATED_RING_SECONDS": "0",
        "DIALER_SIMULATED_ANSWER_SECONDS": "0",
        "DIALER_SIMULATED_TALK_SECONDS": str(args.live_talk_seconds),
    }
    with database(db) as url:
        stack = await start_stack(work / f"live{suffix}", env, baselines=False, database_url=url)
        engine = stack.engine()
        try:
            figures = await live_calls(stack, engine, args.live_calls, args.live_talk_seconds)
            assert stack.sampler is not None
            peaks = stack.sampler.peaks()
        finally:
            engine.dispose()
            stack.stop()
    _record(result, "live_calls" + suffix, figures, peaks)


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
    if not args.no_charts:
        result["charts"] = write_charts(result, args.out, args.name)
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = args.out / f"{args.name}.md"
    md_path.write_text(markdown(result))
    sys.stdout.write(f"bench: wrote {json_path} and {md_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
