"""The one place where workflows, activities, providers and clients are wired together."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.calls import CallActivities
from activities.campaigns import CampaignActivities
from activities.dialing import DialActivities
from activities.lifecycle import LifecycleActivities, LookupBudget
from activities.webhooks import DeliveryConfig, WebhookActivities
from contracts.context import media_stream_url_problem
from core.config import Settings, get_settings
from infra.bytecode import keep_bytecode_cache
from infra.health import clear_heartbeat, heartbeat_loop
from infra.interceptors import CallContextInterceptor
from infra.limiter import SharedLimits
from infra.temporal_client import connect, metrics_runtime
from infra.tracing import configure_tracing
from services.call_status import CallStatusSink
from services.calls import TemporalCallLauncher, call_policies
from services.lines import carrier_names, twilio_config
from services.webhooks import WebhookDispatcher
from store.db import get_engine
from store.simulated_ledger import DatabaseLedger
from telephony.base import TelephonyProvider
from telephony.faults import FaultInjector, with_faults
from telephony.registry import ProviderRegistry
from telephony.simulated import SimulatedProvider, SimulatedTimeline
from telephony.twilio import TwilioProvider
from workflows.campaign import CampaignWorkflow
from workflows.create_call import CreateCallWorkflow
from workflows.webhooks import WebhookDeliveryWorkflow

log = logging.getLogger("dialer.worker")


# Dials held for their campaign slot plus dials in flight, per worker process: at the
# highest campaign rate (100/s) about three seconds of slots, and room for create_call's.
MAX_CONCURRENT_DIALS = 1000


def twilio_provider(settings: Settings) -> TwilioProvider:
    """Build the provider from dialer settings; refuses a half-configured account."""
    return TwilioProvider(twilio_config(settings))


def build_providers(
    settings: Settings, engine: Engine, client: Client | None = None
) -> ProviderRegistry:
    """The configured providers. With DIALER_TELEPHONY_PROVIDER=twilio the simulated carrier
    is not configured, so every line is dialed through Twilio whatever its stored label says;
    Twilio is also configured beside the simulated default when its credentials are set, for
    lines labelled `twilio`. `client` lets the simulated carrier send its status callbacks
    to the workflows, through the same path as the Twilio webhook."""
    providers: dict[str, TelephonyProvider] = {}
    # Which carriers: services/lines.py's rule, so the API confirms a line at the carrier
    # that will dial it.
    names = carrier_names(settings)
    if "simulated" in names:
        sink = None
        if client is not None and settings.simulated_callbacks:

            async def get_client() -> Client:
                return client

            sink = CallStatusSink(get_client, engine, webhook_dispatcher(client, settings, engine))
        providers["simulated"] = SimulatedProvider(
            DatabaseLedger(engine),
            settings.simulated_latency_ms,
            timeline=SimulatedTimeline(
                ring_seconds=settings.simulated_ring_seconds,
                answer_seconds=settings.simulated_answer_seconds,
                talk_seconds=settings.simulated_talk_seconds,
            ),
            status_sink=sink,
        )
    if "twilio" in names:
        providers["twilio"] = twilio_provider(settings)
    if "simulated" in providers:
        providers["simulated"] = with_faults(providers["simulated"], fault_injector(settings))
    return ProviderRegistry(providers, default=settings.telephony_provider)


def webhook_dispatcher(client: Client, settings: Settings, engine: Engine) -> WebhookDispatcher:
    """Hands the customer's events, once committed, to their delivery workflows."""

    async def get_client() -> Client:
        return client

    return WebhookDispatcher(get_client, engine, settings)


def webhook_activities(settings: Settings, engine: Engine) -> WebhookActivities:
    return WebhookActivities(
        engine,
        DeliveryConfig(
            secret_key=settings.secret_key,
            production=settings.env == "production",
            attempt_timeout_seconds=settings.webhook_attempt_timeout_seconds,
            retry_initial_seconds=settings.webhook_retry_initial_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            disable_after_seconds=settings.webhook_disable_after_seconds,
            max_response_bytes=settings.webhook_max_response_bytes,
        ),
    )


def lookup_budget(settings: Settings, shared: SharedLimits) -> LookupBudget:
    """Polls of one provider account share one window in every worker: a Twilio account is
    its SID (two deployments of one account that share the limits storage share it too)."""
    accounts = {"twilio": settings.twilio_account_sid} if settings.twilio_account_sid else {}
    return LookupBudget(shared, settings.provider_lookups_per_second, accounts)


def fault_injector(settings: Settings) -> FaultInjector | None:
    """The simulated carrier's fault injector, when DIALER_SIMULATED_FAULT_SEED is set."""
    if settings.simulated_fault_seed is None:
        return None
    return FaultInjector(
        seed=settings.simulated_fault_seed,
        rate=settings.simulated_fault_rate,
        spike_ms=settings.simulated_fault_spike_ms,
    )


def build_workers(
    client: Client,
    settings: Settings,
    engine: Engine,
    providers: ProviderRegistry | None = None,
) -> list[Worker]:
    """The call worker (workflows + local DB activities) and the dial worker (provider calls,
    on its own task queue so the server can cap dials per second across all workers)."""
    providers = providers or build_providers(settings, engine, client)
    webhooks = webhook_dispatcher(client, settings, engine)
    # A campaign's dial pace and an account's calls per second hold across every worker that
    # shares this storage (Redis).
    shared = SharedLimits(settings.limits_storage_url)
    calls = CallActivities(
        engine, providers, settings.default_region, settings.media_stream_url, webhooks, shared
    )
    # Polls and reconciliations of one carrier account share its look-up budget.
    lookups = lookup_budget(settings, shared)
    lifecycle = LifecycleActivities(engine, providers, webhooks, lookups)
    dialing = DialActivities(providers, shared, lookups)
    grace = timedelta(seconds=settings.worker_graceful_shutdown_seconds)
    campaigns = CampaignActivities(
        engine, TemporalCallLauncher(client, settings), call_policies(settings), webhooks
    )
    delivery = webhook_activities(settings, engine)
    call_worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[CreateCallWorkflow, CampaignWorkflow],
        activities=[
            calls.prepare_call,
            calls.admit_call,
            calls.record_attempt,
            calls.record_outcome,
            calls.record_call_event,
            lifecycle.record_call_status,
            lifecycle.fetch_call_status,
            campaigns.load_campaign,
            campaigns.campaign_tick,
        ],
        interceptors=[CallContextInterceptor()],
        # Its activities all run as local activities: no pollers for remote activity tasks.
        no_remote_activities=True,
        # Sized for the calls live at once, so a callback finds its run in memory instead of
        # replaying its history (temporal_sticky_cache_* at the worker's metrics endpoint).
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflow_runner=SandboxedWorkflowRunner()
        if settings.workflow_sandbox
        else UnsandboxedWorkflowRunner(),
        # On shutdown: stop polling, give running activities this long to finish.
        graceful_shutdown_timeout=grace,
    )
    dial_worker = Worker(
        client,
        task_queue=settings.dial_task_queue,
        activities=[dialing.dial, dialing.reconcile_dial, dialing.hangup_call],
        max_task_queue_activities_per_second=settings.dial_rate_per_second,
        # A campaign's dials wait here for their slots (up to a few seconds, a sleeping
        # coroutine each): room for them beside the dials of create_call.
        max_concurrent_activities=MAX_CONCURRENT_DIALS,
        interceptors=[CallContextInterceptor()],
        # On shutdown: stop polling, give running activities this long to finish.
        graceful_shutdown_timeout=grace,
    )
    # The customer's webhooks on a worker of their own: a slow receiver holds only a
    # delivery slot (at most the attempt timeout), never a call's workflow task or a dial.
    webhook_worker = Worker(
        client,
        task_queue=settings.webhook_task_queue,
        workflows=[WebhookDeliveryWorkflow],
        activities=[delivery.list_pending, delivery.mark_failed, delivery.deliver],
        max_concurrent_activities=settings.webhook_max_concurrent_deliveries,
        interceptors=[CallContextInterceptor()],
        workflow_runner=SandboxedWorkflowRunner()
        if settings.workflow_sandbox
        else UnsandboxedWorkflowRunner(),
        graceful_shutdown_timeout=grace,
    )
    return [call_worker, dial_worker, webhook_worker]


def check_media_stream_default(settings: Settings) -> None:
    """Refuse a default stream URL no call could use; say so in production when none is set."""
    url = settings.media_stream_url
    if url and (problem := media_stream_url_problem(url)):
        raise SystemExit(f"DIALER_MEDIA_STREAM_URL: {problem}")
    if settings.env == "production" and not url:
        log.warning(
            "DIALER_MEDIA_STREAM_URL is not set: a call whose agent and workflow have no "
            "media_stream_url fails with failure_code no_media_stream, before any dial"
        )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    check_media_stream_default(settings)
    if settings.workflow_sandbox:
        # Each workflow run re-imports its module in the sandbox: never compile it every time.
        keep_bytecode_cache()
    configure_tracing(settings, "dialer-worker")
    client = await connect(settings, runtime=metrics_runtime(settings))
    workers = build_workers(client, settings, get_engine(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling %s and %s", settings.task_queue, settings.dial_task_queue)
    runs = [asyncio.create_task(w.run()) for w in workers]
    beat = asyncio.create_task(heartbeat_loop(client, settings, runs))
    # Events recorded while Temporal was unreachable (or whose hand-over a crash cut off).
    sweeper = asyncio.create_task(
        webhook_dispatcher(client, settings, get_engine(settings)).sweep_forever()
    )
    stopping = asyncio.create_task(stop.wait())
    # A poller that dies (fatal worker error) ends the process too, so it is restarted.
    await asyncio.wait([stopping, *runs], return_when=asyncio.FIRST_COMPLETED)
    # Unhealthy from here on: no new tasks are polled while running activities finish.
    beat.cancel()
    sweeper.cancel()
    clear_heartbeat(settings.heartbeat_path)
    log.info(
        "worker shutting down: polling stopped, running activities get %ss to finish",
        settings.worker_graceful_shutdown_seconds,
    )
    await asyncio.gather(*(w.shutdown() for w in workers))
    results = await asyncio.gather(*runs, return_exceptions=True)
    stopping.cancel()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed and not stop.is_set():
        raise RuntimeError("a worker stopped polling on its own") from failed[0]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run_worker())
