"""Activities of WebhookDeliveryWorkflow: list a stream's pending deliveries and give one up
(local), and deliver one (on the webhook task queue, with its own retry policy).

Also the `WebhookKicker` the recording activities are given: after their transaction has
committed the events, they hand the streams to their delivery workflows through it
(services/webhooks.py implements it; only services start or signal workflows)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import httpx
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from contracts.webhooks import (
    DeliverInput,
    DeliverResult,
    DeliveryOutcome,
    DeliveryState,
    ListPendingInput,
    ListPendingResult,
    MarkFailedInput,
)
from core.security import unseal
from core.webhooks import sign_headers
from infra.metrics import WEBHOOK_DELIVERIES_METRIC
from infra.webhook_http import AddressRefused, post
from store import webhooks as store
from store.models import utcnow

log = logging.getLogger(__name__)


class WebhookKicker(Protocol):
    async def kick(self, streams: Sequence[str]) -> None:
        """Start, or signal, the delivery workflow of each stream that has pending
        deliveries. Never raises: a stream it could not reach is picked up by the worker's
        sweeper (services/webhooks.py `WebhookDispatcher`)."""
        ...


@dataclass(frozen=True)
class DeliveryConfig:
    secret_key: str  # DIALER_SECRET_KEY: the endpoints' secrets are sealed under it
    production: bool
    attempt_timeout_seconds: float
    retry_initial_seconds: float
    retry_max_seconds: float
    disable_after_seconds: float
    max_response_bytes: int


def backoff_seconds(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """The wait after failed attempt `attempt` (1-based): exponential, capped, with "equal
    jitter" (between half and all of it), so receivers that came back are not hit by every
    retry at once."""
    base: float = min(maximum, initial * 2.0 ** min(attempt - 1, 62))
    return base / 2 + rng.uniform(0, base / 2)


def _count(outcome: DeliveryOutcome) -> None:
    counter = activity.metric_meter().create_counter(
        WEBHOOK_DELIVERIES_METRIC, "webhook delivery attempts, by outcome"
    )
    counter.add(1, {"outcome": outcome})


def delivery_client(config: DeliveryConfig) -> httpx.AsyncClient:
    """The HTTP client of every delivery of a worker. No redirects, no proxies from the
    environment, no cookies kept between endpoints. No cap on connections: the worker's
    delivery slots (DIALER_WEBHOOK_MAX_CONCURRENT_DELIVERIES) bound them, and httpx's default
    cap of 100 would let one user's slow receivers hold every connection, so that another
    user's deliveries waited in the pool and failed with PoolTimeout."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=config.attempt_timeout_seconds,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    )


class WebhookActivities:
    def __init__(
        self, engine: Engine, config: DeliveryConfig, client: httpx.AsyncClient | None = None
    ) -> None:
        self._engine = engine
        self._config = config
        self._client = client or delivery_client(config)
        self._rng = random.Random()

    @activity.defn(name="webhook_list_pending")
    async def list_pending(self, input: ListPendingInput) -> ListPendingResult:
        return await asyncio.to_thread(store.list_pending, self._engine, input.stream)

    @activity.defn(name="webhook_mark_failed")
    async def mark_failed(self, input: MarkFailedInput) -> None:
        if await asyncio.to_thread(
            store.mark_failed, self._engine, uuid.UUID(input.delivery_id), input.reason
        ):
            _count(DeliveryOutcome.FAILED)

    @activity.defn(name="webhook_deliver")
    async def deliver(self, input: DeliverInput) -> DeliverResult:
        """One attempt. A 2xx is success; anything else raises, so Temporal tries again after
        the backoff this attempt chose (next_retry_delay), until the give-up time."""
        delivery_id = uuid.UUID(input.delivery_id)
        loaded = await asyncio.to_thread(store.load_attempt, self._engine, delivery_id)
        if loaded is None or loaded.delivery.state != DeliveryState.PENDING:
            return DeliverResult(DeliveryOutcome.SKIPPED)
        delivery, endpoint = loaded.delivery, loaded.endpoint
        if endpoint is None or not endpoint.enabled:
            why = "the endpoint is disabled" if endpoint else "the endpoint was deleted"
            await asyncio.to_thread(store.mark_failed, self._engine, delivery_id, why)
            _count(DeliveryOutcome.DISABLED)
            return DeliverResult(DeliveryOutcome.DISABLED)
        secrets = [unseal(endpoint.secret, self._config.secret_key)]
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret and expires is not None and expires > utcnow():
            secrets.append(unseal(endpoint.previous_secret, self._config.secret_key))
        body = delivery.payload.encode()
        headers = sign_headers(secrets, delivery.event_id, int(time.time()), body)
        status: int | None = None
        try:
            answer = await post(
                self._client,
                endpoint.url,
                body,
                headers,
                production=self._config.production,
                timeout_seconds=self._config.attempt_timeout_seconds,
                max_response_bytes=self._config.max_response_bytes,
            )
            status = answer.status_code
            if 200 <= status < 300:
                await asyncio.to_thread(store.record_success, self._engine, delivery_id, status)
                _count(DeliveryOutcome.DELIVERED)
                return DeliverResult(DeliveryOutcome.DELIVERED, status)
            error = f"HTTP {status}"
            snippet = answer.body[:200].decode(errors="replace").strip()
            if snippet:
                error += f": {snippet}"
        except AddressRefused as exc:
            # Production refuses the address (checked at every attempt, so a DNS answer that
            # changed after creation is refused too); not retried: it would be refused again.
            reason = f"refused: {exc}"
            await asyncio.to_thread(store.mark_failed, self._engine, delivery_id, reason)
            _count(DeliveryOutcome.REFUSED)
            log.info("webhook delivery refused: %s", exc)
            return DeliverResult(DeliveryOutcome.REFUSED)
        except TimeoutError:
            error = f"no answer within {self._config.attempt_timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        return await self._failed(delivery_id, status, error)

    async def _failed(
        self, delivery_id: uuid.UUID, status: int | None, error: str
    ) -> DeliverResult:
        attempt = activity.info().attempt
        delay = backoff_seconds(
            attempt, self._config.retry_initial_seconds, self._config.retry_max_seconds, self._rng
        )
        disabled = await asyncio.to_thread(
            lambda: store.record_failure(
                self._engine,
                delivery_id,
                status_code=status,
                error=error,
                next_attempt_at=utcnow() + timedelta(seconds=delay),
                disable_after=timedelta(seconds=self._config.disable_after_seconds),
            )
        )
        if disabled is not None:
            _count(DeliveryOutcome.DISABLED)
            log.warning("webhook endpoint disabled: %s", disabled)
            return DeliverResult(DeliveryOutcome.DISABLED, status)
        _count(DeliveryOutcome.RETRYING)
        log.info("webhook delivery attempt %d failed (%s); next in %.1f s", attempt, error, delay)
        raise ApplicationError(
            f"delivery attempt {attempt} failed: {error}",
            type="WebhookAttemptFailed",
            next_retry_delay=timedelta(seconds=delay),
            # Expected: a receiver that is down is the customer's business, said in one line.
            category=ApplicationErrorCategory.BENIGN,
        )
