"""The customer's webhooks as an application service: endpoints (create, change, rotate,
delete), the delivery log and redelivery, and the one way a WebhookDeliveryWorkflow is started
or told about new events (`WebhookDispatcher`: signal-with-start, so a running workflow is
signalled and a closed or missing one started again; it reads the outbox, never history)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from contracts.search_attributes import SA_USER_ID
from contracts.webhooks import (
    DeliverStreamInput,
    DeliveryPolicy,
    KickSignal,
    delivery_workflow_id,
)
from core.config import Settings
from core.security import seal
from core.webhooks import generate_secret
from infra.webhook_http import AddressRefused, checked_address
from services.temporal import TemporalUnavailable
from store import webhooks as store
from store.models import WebhookDelivery, WebhookEndpoint
from workflows.webhooks import WebhookDeliveryWorkflow

log = logging.getLogger(__name__)


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        task_queue=settings.webhook_task_queue,
        attempt_timeout_seconds=settings.webhook_attempt_timeout_seconds,
        retry_initial_seconds=settings.webhook_retry_initial_seconds,
        retry_max_seconds=settings.webhook_retry_max_seconds,
        give_up_seconds=settings.webhook_give_up_seconds,
    )


class WebhookDispatcher:
    """Hands streams with pending deliveries to their workflows (activities.webhooks
    `WebhookKicker`). The outbox rows are already committed when it is called, so a failure
    here loses nothing: the worker's sweeper (`sweep_forever`) hands them over later."""

    def __init__(
        self, client: Callable[[], Awaitable[Client]], engine: Engine, settings: Settings
    ) -> None:
        self._client = client
        self._engine = engine
        self._settings = settings

    async def kick(self, streams: Sequence[str]) -> None:
        try:
            pending = await asyncio.to_thread(store.pending_streams, self._engine, list(streams))
            await self._start(pending)
        except (TemporalUnavailable, RPCError, OSError) as exc:
            log.warning("webhook deliveries not handed over yet (the sweeper will): %s", exc)

    async def _start(self, pending: Sequence[tuple[str, uuid.UUID]]) -> None:
        if not pending:
            return
        client = await self._client()
        policy = delivery_policy(self._settings)
        for stream, user_id in pending:
            await client.start_workflow(
                WebhookDeliveryWorkflow.run,
                DeliverStreamInput(stream=stream, user_id=str(user_id), policy=policy),
                id=delivery_workflow_id(stream),
                task_queue=self._settings.webhook_task_queue,
                start_signal="kick",
                start_signal_args=[KickSignal()],
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(SA_USER_ID, str(user_id))]
                ),
                static_summary=f"Webhooks of {stream.split(':', 1)[0]} {stream.split(':', 1)[1]}",
            )

    async def sweep(self) -> int:
        """Hand over the streams nothing has touched for a while (an event recorded while
        Temporal was unreachable, a kick lost in a crash). Returns how many."""
        # Longer than an attempt may take, so a delivery in flight is never handed over again.
        s = self._settings
        idle = timedelta(
            seconds=max(2 * s.webhook_sweep_seconds, s.webhook_attempt_timeout_seconds + 10)
        )
        stale = await asyncio.to_thread(store.stale_streams, self._engine, idle)
        await self._start(stale)
        return len(stale)

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.webhook_sweep_seconds)
            try:
                if n := await self.sweep():
                    log.info("webhook sweeper handed %d stream(s) to their workflows", n)
            except Exception as exc:  # the next round tries again
                log.warning("webhook sweeper: %s", exc)


# --- the API's operations ---------------------------------------------------------------------


class UnsafeUrl(ValueError):
    """The URL may not be an endpoint (the message says why)."""


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


class WebhookService:
    def __init__(self, settings: Settings, engine: Engine, dispatcher: WebhookDispatcher) -> None:
        self._settings = settings
        self._engine = engine
        self._dispatcher = dispatcher

    @property
    def _production(self) -> bool:
        return self._settings.env == "production"

    async def check_url(self, url: str) -> None:
        """Raises UnsafeUrl. In production the host is resolved now, and again at every
        delivery (so a DNS answer that changes later is refused then)."""
        try:
            await checked_address(url, production=self._production)
        except AddressRefused as exc:
            raise UnsafeUrl(str(exc)) from exc

    def _seal(self, secret: str) -> str:
        return seal(secret, self._settings.secret_key)

    async def create(
        self,
        *,
        user_id: uuid.UUID,
        url: str,
        events: list[str] | None,
        description: str | None,
        include_phone_numbers: bool,
    ) -> CreatedEndpoint:
        await self.check_url(url)
        secret = generate_secret()
        spec = store.EndpointSpec(
            user_id=user_id,
            url=url,
            events=events,
            description=description,
            include_phone_numbers=include_phone_numbers,
            sealed_secret=self._seal(secret),
        )
        row = await asyncio.to_thread(store.create_endpoint, self._engine, spec)
        return CreatedEndpoint(row, secret)

    async def update(
        self, endpoint_id: uuid.UUID, user_id: uuid.UUID, changes: dict[str, object]
    ) -> WebhookEndpoint:
        await asyncio.to_thread(store.get_endpoint, self._engine, endpoint_id, user_id)
        url = changes.get("url")
        if isinstance(url, str):
            await self.check_url(url)
        return await asyncio.to_thread(
            store.update_endpoint, self._engine, endpoint_id, user_id, changes
        )

    async def rotate(self, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> CreatedEndpoint:
        secret = generate_secret()
        grace = timedelta(seconds=self._settings.webhook_rotation_grace_seconds)
        row = await asyncio.to_thread(
            store.rotate_secret, self._engine, endpoint_id, user_id, self._seal(secret), grace
        )
        return CreatedEndpoint(row, secret)

    async def redeliver(
        self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, user_id: uuid.UUID
    ) -> WebhookDelivery:
        """The row is pending again, then its stream's workflow is told (or the sweeper)."""
        row = await asyncio.to_thread(
            store.redeliver, self._engine, endpoint_id, delivery_id, user_id
        )
        await self._dispatcher.kick([row.stream])
        return row
