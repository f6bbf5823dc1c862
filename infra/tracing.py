"""OpenTelemetry tracing across API -> workflow -> activities. Off unless configured: spans are
only made when a tracer provider is installed (DIALER_OTEL_EXPORTER_OTLP_ENDPOINT, or a test
installing its own), so an unconfigured service pays nothing."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor

from core.config import Settings

log = logging.getLogger(__name__)


def configure_tracing(settings: Settings, service_name: str) -> None:
    """Install the process-wide tracer provider exporting over OTLP/HTTP, when configured."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint or tracing_enabled():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP")


def tracing_enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def client_interceptors() -> list[TracingInterceptor]:
    """Given to every Dialer client: the client spans (start workflow, update) carry the trace
    to the workers, which open workflow and activity spans under it."""
    return [TracingInterceptor()] if tracing_enabled() else []


def fastapi_telemetry_off() -> dict[str, Any]:
    """FastAPI's native telemetry records the full URL (`url.query`), where phone numbers
    travel: it stays off, and Dialer's middleware opens the server span instead."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}  # a FastAPI without native telemetry
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
