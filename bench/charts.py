"""PNG charts of one bench result, written beside its Markdown (results/<name>-<chart>.png):
latency distributions of Dialer and its floor, the paced campaign's dials per second with the
cap, each user's dials per second in `fairness`, RSS and CPU over the `live_calls` run.

matplotlib is a bench-only tool (bench/requirements.txt) and is imported when charts are drawn,
through importlib, so that the product's type check and tests do not need it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

LATENCY_SCENARIOS = ("latency_accepted", "latency_dialed", "plain")
LIVE_PROCESSES = ("worker", "api", "temporal")


def available() -> bool:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def ecdf(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of samples at or below each."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def cpu_cores(series: list[dict[str, Any]], proc: str) -> tuple[list[float], list[float]]:
    """Cores a process used between consecutive samples (CPU seconds / wall seconds), at
    the later sample's time."""
    times, cores = [], []
    for prev, cur in zip(series, series[1:], strict=False):
        dt = cur["t"] - prev["t"]
        if dt <= 0 or proc not in cur["cpu_s"] or proc not in prev["cpu_s"]:
            continue
        times.append(cur["t"])
        cores.append((cur["cpu_s"][proc] - prev["cpu_s"][proc]) / dt)
    return times, cores


def _latency(plt: Any, key: str, fig: dict[str, Any], path: Path) -> bool:
    kinds = [k[: -len("_samples_ms")] for k in fig if k.endswith("_samples_ms") and fig[k]]
    if not kinds:
        return False
    figure, ax = plt.subplots(figsize=(7, 4))
    for kind in kinds:
        xs, ys = ecdf(fig[f"{kind}_samples_ms"])
        ax.step(xs, ys, where="post", label=kind.replace("_", " "))
    ax.set_xscale("log")
    ticker = importlib.import_module("matplotlib.ticker")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{key}: latency distribution, Dialer and its floor")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _paced(plt: Any, key: str, fig: dict[str, Any], path: Path, cap: float) -> bool:
    counts = fig.get("dials_per_second")
    if not counts:
        return False
    figure, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(counts)), counts, width=1.0, align="edge", label="dials in the second")
    ax.axhline(cap, color="red", linestyle="--", label=f"cap {cap:g}/s")
    ax.set_xlabel("seconds from the first dial")
    ax.set_ylabel("dials")
    ax.set_title(f"{key}: dials per second (carrier's ledger)")
    ax.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _fairness(plt: Any, key: str, fig: dict[str, Any], path: Path) -> bool:
    variants = fig.get("variants", {})
    if not variants:
        return False
    figure, axes = plt.subplots(len(variants), 1, figsize=(7, 2.6 * len(variants)), sharex=True)
    axes = axes if len(variants) > 1 else [axes]
    for ax, (variant, v) in zip(axes, variants.items(), strict=True):
        series = v["dials_per_second_series"]
        a, b = series.get("A", []), series.get("B", [])
        offset = v["series_starts_before_window"]
        xs = [i - offset for i in range(len(a))]
        ax.bar(xs, a, width=1.0, align="edge", label="A (campaign)")
        ax.bar(xs, b, width=1.0, align="edge", bottom=a, label="B (single calls)")
        ax.axhline(v["cap"], color="red", linestyle="--", label=f"cap {v['cap']:g}/s")
        ax.axvspan(0, v["window_seconds"], color="grey", alpha=0.1)
        ax.set_ylabel("dials/s")
        ax.set_title(
            f"{variant}: A {v['dials_per_second']['A']:g}/s, B "
            f"{v['dials_per_second']['B']:g}/s in the window (shaded)",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds from the start of B's loaded window")
    figure.suptitle(f"{key}: dials per second of each user (carrier's ledger)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _live(plt: Any, key: str, fig: dict[str, Any], path: Path) -> bool:
    series = fig.get("series") or []
    if len(series) < 2:
        return False
    t = [p["t"] for p in series]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for proc in LIVE_PROCESSES:
        top.plot(t, [p["rss_mb"].get(proc, 0) for p in series], label=f"{proc} RSS")
    top.set_ylabel("RSS (MB)")
    live = top.twinx()
    live.fill_between(t, [p.get("live", 0) for p in series], color="grey", alpha=0.2)
    live.set_ylabel("live calls (shaded)")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{key}: {fig['placed']} calls, {fig['talk_seconds']:g} s of talk")
    for proc in LIVE_PROCESSES:
        xs, ys = cpu_cores(series, proc)
        bottom.plot(xs, ys, label=f"{proc} CPU", linewidth=0.8)
    bottom.set_ylabel("CPU (cores)")
    bottom.set_xlabel("seconds from the start of placing")
    bottom.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write_charts(result: dict[str, Any], out: Path, name: str) -> dict[str, list[str]]:
    """Draw every chart the result has data for; file names (relative to `out`) by scenario
    key. Nothing without matplotlib."""
    if not available():
        return {}
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    charts: dict[str, list[str]] = {}
    for key, fig in result.get("scenarios", {}).items():
        base = key.partition("@")[0]
        file = f"{name}-{key.replace('@', '-')}.png"
        path = out / file
        drawn = False
        if base in LATENCY_SCENARIOS:
            drawn = _latency(plt, key, fig, path)
        elif base == "campaign_paced":
            drawn = _paced(plt, key, fig, path, cap=float(fig.get("calls_per_second_option", 20)))
        elif base == "fairness":
            drawn = _fairness(plt, key, fig, path)
        elif base == "live_calls":
            drawn = _live(plt, key, fig, path)
        if drawn:
            charts[key] = [file]
    return charts
