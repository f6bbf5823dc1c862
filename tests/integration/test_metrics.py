"""Metrics: the API's /metrics counters move when calls are placed; the worker's endpoint
serves the Temporal SDK metrics and the dial counter."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from infra.temporal_client import connect, metrics_runtime
from store.db import make_engine
from tests.support.accounts import make_account
from tests.support.rows import terminal_row
from tests.support.settings import settings_for
from tests.support.stack import Stack, create_call, open_stack, running_workers
from tests.support.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def _scrape(http: httpx.AsyncClient, url: str = "/metrics") -> Samples:
    resp = await http.get(url)
    assert resp.status_code == 200
    return _samples(resp.text)


async def test_api_metrics_count_requests_and_create_call_outcomes(stack: Stack) -> None:
    account = make_account(stack.engine)
    before = await _scrape(stack.http)
    ok = await create_call(stack, account.headers, "+12025550100", wait="dialed")
    rejected = await create_call(stack, account.headers, "+12025550103", wait="dialed")
    assert (ok.json()["status"], rejected.json()["status"]) == ("success", "failed")
    await stack.http.get(
        "/api/v1/call-analytics",
        params={"call_session_id": ok.json()["call_session_id"]},
        headers=account.headers,
    )
    await stack.http.get("/no/such/path/+12025550100")
    after = await _scrape(stack.http)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/api/call/create_call"
    assert moved("dialer_create_call_total", status="success", failure_code="") == 1
    assert moved("dialer_create_call_total", status="failed", failure_code="provider_rejected") == 1
    assert moved("dialer_http_requests_total", route=route, method="POST", status="200") == 2
    assert moved("dialer_http_request_duration_seconds_count", route=route) == 2
    assert moved("dialer_http_requests_total", route="/api/v1/call-analytics", status="200") == 1
    # Unknown paths share one label: no ids or numbers become label values.
    assert moved("dialer_http_requests_total", route="unmatched", status="404") == 1
    assert not any("2025550100" in str(labels) for _, labels in after)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # typeshed: the address of any family is Any
        return port


@pytest.fixture
async def metered_stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A stack whose workers run on a client with the Prometheus runtime, as `dialer worker`
    does with DIALER_WORKER_METRICS_PORT."""
    settings = settings_for(
        tmp_path,
        sqlite_url,
        temporal_address=dev_env.client.service_client.config.target_host,
        worker_metrics_port=_free_port(),
    )
    runtime = metrics_runtime(settings)
    assert runtime is not None
    client = await connect(settings, runtime=runtime)
    engine = make_engine(sqlite_url)
    async with open_stack(settings, engine, client) as stack:
        yield stack
    engine.dispose()


async def test_worker_metrics_endpoint_serves_sdk_metrics_and_dials(metered_stack: Stack) -> None:
    settings = metered_stack.settings
    url = f"http://{settings.worker_metrics_host}:{settings.worker_metrics_port}/metrics"
    async with httpx.AsyncClient() as scraper:
        before = await _scrape(scraper, url)
        account = make_account(metered_stack.engine)
        # Two refused attempts, then placed: three dials.
        resp = await create_call(metered_stack, account.headers, "+12025550104", wait="dialed")
        assert resp.json()["status"] == "success"
        await wait_until(terminal_row(metered_stack.engine, resp.json()["call_session_id"]))

        async def dials_counted() -> Samples | None:
            now = await _scrape(scraper, url)
            placed = _value(now, "dialer_dials_total", provider="simulated", result="placed")
            return now if placed > _value(before, "dialer_dials_total", result="placed") else None

        after = await wait_until(dials_counted, timeout=15)
    refused = _value(after, "dialer_dials_total", result="not_placed") - _value(
        before, "dialer_dials_total", result="not_placed"
    )
    assert refused == 2
    names = {name for name, _ in after}
    # The SDK's own metrics: polls, task latencies, activity executions.
    assert any(n.startswith("temporal_activity_execution") for n in names), sorted(names)
    assert any(n.startswith("temporal_workflow_task") for n in names), sorted(names)

    # The sticky cache (DIALER_WORKER_MAX_CACHED_WORKFLOWS): the call's tasks after its first
    # (the dial's result, its callbacks) found its run in memory; a bench reads hits,
    # misses, size and evictions from here.
    async def cache_hit() -> Samples | None:
        now = await _scrape(scraper, url)
        hits = _value(now, "temporal_sticky_cache_hit_total", workflow_type="CreateCallWorkflow")
        return now if hits > 0 else None

    async with httpx.AsyncClient() as scraper:
        cached = await wait_until(cache_hit, timeout=15)
    assert "temporal_sticky_cache_size" in {name for name, _ in cached}


async def test_the_calls_worker_caches_as_many_runs_as_configured(
    dev_env: WorkflowEnvironment, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, sqlite_url, worker_max_cached_workflows=321)
    engine = make_engine(sqlite_url)
    try:
        async with running_workers(dev_env.client, settings, engine) as workers:
            [calls] = [w for w in workers if w.task_queue == settings.task_queue]
            assert calls.config()["max_cached_workflows"] == 321
    finally:
        engine.dispose()
