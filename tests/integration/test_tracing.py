"""Tracing: one trace from the API request through the workflow to its activities, when a
tracer provider is installed (an in-memory exporter here; OTLP in production)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from temporalio.testing import WorkflowEnvironment

from infra.temporal_client import connect
from infra.tracing import tracing_enabled
from store.db import make_engine
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import Stack, create_call, open_stack


class Recorder(SpanExporter):
    """Keeps finished spans while recording; the provider is process-wide and cannot be
    removed, so outside this test's window spans are dropped instead of piling up."""

    def __init__(self) -> None:
        self.recording = False
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.recording:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS


_recorder = Recorder()
# The providers the recorder is added to: the global one outlives a test.
_recording_on: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


@pytest.fixture
def spans() -> Iterator[Recorder]:
    if not tracing_enabled():
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if provider not in _recording_on:
        provider.add_span_processor(SimpleSpanProcessor(_recorder))
        _recording_on.add(provider)
    _recorder.spans.clear()
    _recorder.recording = True
    try:
        yield _recorder
    finally:
        _recorder.recording = False
        _recorder.spans.clear()


@pytest.fixture
async def traced_stack(
    spans: Recorder, dev_env: WorkflowEnvironment, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    settings = settings_for(
        tmp_path, sqlite_url, temporal_address=dev_env.client.service_client.config.target_host
    )
    client = await connect(settings)  # with the tracing interceptor, since tracing is on
    engine = make_engine(sqlite_url)
    async with open_stack(settings, engine, client) as stack:
        yield stack
    engine.dispose()


async def test_one_trace_links_request_workflow_and_activities(
    traced_stack: Stack, spans: Recorder
) -> None:
    account = make_account(traced_stack.engine)
    resp = await create_call(traced_stack, account.headers, "+12025550100", wait="dialed")
    session_id = resp.json()["call_session_id"]
    await asyncio.wait_for(traced_stack.client.get_workflow_handle(session_id).result(), 60)

    by_id = {s.context.span_id: s for s in spans.spans}
    [server] = [s for s in spans.spans if s.name == "POST /api/call/create_call"]
    assert server.kind == trace.SpanKind.SERVER

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    names = {s.name for s in spans.spans}
    for expected in (
        "RunWorkflow:CreateCallWorkflow",
        "StartActivity:dial",
        "RunActivity:dial",
        "RunActivity:prepare_call",
    ):
        assert expected in names, sorted(names)
    [dial] = [s for s in spans.spans if s.name == "RunActivity:dial"]
    assert dial.context.trace_id == server.context.trace_id
    chain = ancestors(dial)
    assert chain[-1] == server.name, chain
    assert chain[:2] == ["StartActivity:dial", "StartUpdateWithStartWorkflow:CreateCallWorkflow"]
    [run] = [s for s in spans.spans if s.name == "RunWorkflow:CreateCallWorkflow"]
    assert ancestors(run)[0] == "StartUpdateWithStartWorkflow:CreateCallWorkflow"
    # No phone number in span names or attributes.
    for span in spans.spans:
        assert "2025550" not in span.name + str(dict(span.attributes or {}))
