"""The worker's Prometheus endpoint (the Temporal SDK's metrics and Dialer's own, served by
the worker's runtime at DIALER_WORKER_METRICS_PORT), read as numbers the scenarios subtract:
one scrape before a phase, one after."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import httpx

# One sample: its name (with _count, _sum, _bucket suffixes) and its labels.
Key = tuple[str, frozenset[tuple[str, str]]]

# Activities that send a request to the carrier, by the SDK's activity_type: the dial
# (create_call; a retry first looks its earlier attempt up: lookup_call) and the poll of a live
# call (fetch_call). Any other activity type whose name says it looks a call up is counted too
# (`provider_requests`), so a new one shows up without a change here.
PROVIDER_ACTIVITIES = ("dial", "fetch_call_status")
PROVIDER_WORDS = ("lookup", "fetch", "poll", "reconcile")
# Both kinds of activity: remote (dial) and local (the call worker's).
ACTIVITY_COUNTS = (
    "temporal_activity_execution_latency_count",
    "temporal_local_activity_total",
)


@dataclass(frozen=True)
class Scrape:
    samples: dict[Key, float]

    def total(self, name: str, **labels: str) -> float:
        """Sum of `name` over every label set that has `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n != name:
                continue
            value = dict(ls).get(label)
            if value is not None:
                out[value] = out.get(value, 0.0) + v
        return out

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """The cumulative buckets of histogram `name` (summed over label sets), by bound."""
        found: dict[float, float] = {}
        for (n, ls), v in self.samples.items():
            if n != f"{name}_bucket":
                continue
            bound = float(dict(ls)["le"])
            found[bound] = found.get(bound, 0.0) + v
        return sorted(found.items())


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Scrape:
    """The samples of Prometheus' text format under the names the endpoint wrote (a parser
    such as prometheus_client's renames counters `<name>_total`, the SDK's do not end so)."""
    samples: dict[Key, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        key = (name, frozenset(LABEL.findall(labels or "")))
        try:
            samples[key] = samples.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return Scrape(samples)


async def scrape(url: str | None) -> Scrape:
    """The endpoint now; empty when there is none or it does not answer."""
    if not url:
        return Scrape({})
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(url)
        resp.raise_for_status()
    except httpx.HTTPError:
        return Scrape({})
    return parse(resp.text)


def delta(after: Scrape, before: Scrape) -> Scrape:
    """Counters and histograms over the interval between two scrapes (gauges: the later)."""
    keys = set(after.samples) | set(before.samples)
    return Scrape({k: after.samples.get(k, 0.0) - before.samples.get(k, 0.0) for k in keys})


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds rank q (0..1) of the
    cumulative counts; the last finite bound when it falls in +Inf; None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def activity_counts(s: Scrape) -> dict[str, float]:
    """Executions of each activity type, remote and local together."""
    out: dict[str, float] = {}
    for name in ACTIVITY_COUNTS:
        for kind, value in s.by_label(name, "activity_type").items():
            out[kind] = out.get(kind, 0.0) + value
    return out


def provider_requests(s: Scrape) -> float:
    """Activity executions that send the carrier a request (PROVIDER_ACTIVITIES and any
    other type named like a look-up)."""
    return sum(
        value
        for kind, value in activity_counts(s).items()
        if kind in PROVIDER_ACTIVITIES or any(w in kind.lower() for w in PROVIDER_WORDS)
    )


def workflow_tasks(s: Scrape) -> dict[str, float | None]:
    """Workflow-task figures of the call worker's SDK metrics (milliseconds): execution
    latency (mean, p50, p99 from the buckets), schedule-to-start mean, and the sticky cache's
    hits, misses and forced evictions (a miss means the task replayed the whole history)."""
    count = s.total("temporal_workflow_task_execution_latency_count")
    total = s.total("temporal_workflow_task_execution_latency_sum")
    buckets = s.buckets("temporal_workflow_task_execution_latency")
    s2s_count = s.total("temporal_workflow_task_schedule_to_start_latency_count")
    s2s_sum = s.total("temporal_workflow_task_schedule_to_start_latency_sum")

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "workflow_tasks": count,
        "execution_ms_mean": r(total / count) if count else None,
        "execution_ms_p50": r(histogram_quantile(buckets, 0.5)),
        "execution_ms_p99": r(histogram_quantile(buckets, 0.99)),
        "schedule_to_start_ms_mean": r(s2s_sum / s2s_count) if s2s_count else None,
        "sticky_cache_hits": s.total("temporal_sticky_cache_hit"),
        "sticky_cache_misses": s.total("temporal_sticky_cache_miss"),
        "sticky_cache_forced_evictions": s.total("temporal_sticky_cache_total_forced_eviction"),
    }
