"""The one way Dialer processes connect to Temporal: the worker and the API share the data
converter (payload encryption) and the tracing interceptor, so what one writes the other reads."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from core.config import Settings
from infra.codec import data_converter
from infra.tracing import client_interceptors

log = logging.getLogger(__name__)


def payload_keys(settings: Settings) -> str | None:
    return settings.payload_keys.get_secret_value() if settings.payload_keys else None


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(payload_keys(settings)),
        interceptors=client_interceptors(),
        runtime=runtime,
    )


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime serving the SDK's Prometheus metrics (and metrics recorded through
    `activity.metric_meter()`, like the dial counter) at the worker metrics address."""
    if settings.worker_metrics_port is None:
        return None
    address = f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except Exception:
        # A taken port must not keep calls from being placed: run without the endpoint.
        log.warning("worker metrics endpoint could not bind %s; running without it", address)
        return None
