"""WebhookDeliveryWorkflow: a stream's events (one call's, or one campaign's) delivered to each
of its endpoints in order. Deterministic code only.

The events are rows of the outbox (store/webhooks.py); this workflow holds only the stream's
name. It lists the pending deliveries, one lane per endpoint, and runs the lanes in parallel;
within a lane each delivery waits for the previous one (delivered, or given up), so a receiver
sees a call's events in order. A delivery is one activity on the webhook task queue with its
own retry policy: a 2xx within the attempt timeout is success; anything else is tried again
with exponential backoff (the activity adds jitter) until the give-up time, then the delivery
is marked failed and the lane moves on. New events signal `kick`; the workflow ends when a
listing finds nothing pending and no kick came while it looked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.webhooks import (
        DeliverInput,
        DeliverResult,
        DeliverStreamInput,
        DeliverStreamResult,
        DeliveryOutcome,
        KickSignal,
        ListPendingInput,
        ListPendingResult,
        MarkFailedInput,
        PendingLane,
    )

# Listing and marking are small database reads and writes, idempotent: local, retried freely.
DB_TIMEOUT = timedelta(seconds=30)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)
# The attempt ends itself at the attempt timeout (its HTTP exchange is bounded); this margin
# lets it record the failure before Temporal's own timeout would.
ATTEMPT_MARGIN = timedelta(seconds=5)
# Long-lived streams (a campaign's) start afresh before their history grows large.
MAX_ROUNDS = 200


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    def __init__(self) -> None:
        self._kicked = False
        self._result = DeliverStreamResult()

    @workflow.signal
    def kick(self, _signal: KickSignal) -> None:
        """New events (or a redelivery): list again before ending."""
        self._kicked = True

    @workflow.query
    def progress(self) -> DeliverStreamResult:
        return self._result

    @workflow.run
    async def run(self, input: DeliverStreamInput) -> DeliverStreamResult:
        for _ in range(MAX_ROUNDS):
            self._kicked = False
            listed: ListPendingResult = await workflow.execute_local_activity(
                "webhook_list_pending",
                ListPendingInput(stream=input.stream),
                result_type=ListPendingResult,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="list pending deliveries",
            )
            if not listed.lanes:
                if self._kicked:
                    continue
                workflow.set_current_details("nothing pending")
                return self._result
            waiting = sum(len(lane.deliveries) for lane in listed.lanes)
            workflow.set_current_details(
                f"delivering {waiting} event(s) to {len(listed.lanes)} endpoint(s)"
            )
            await asyncio.gather(*(self._lane(input, lane) for lane in listed.lanes))
        workflow.continue_as_new(input)

    async def _lane(self, input: DeliverStreamInput, lane: PendingLane) -> None:
        policy = input.policy
        for delivery in lane.deliveries:
            try:
                result: DeliverResult = await workflow.execute_activity(
                    "webhook_deliver",
                    DeliverInput(delivery_id=delivery.delivery_id),
                    result_type=DeliverResult,
                    task_queue=policy.task_queue,
                    start_to_close_timeout=timedelta(seconds=policy.attempt_timeout_seconds)
                    + ATTEMPT_MARGIN,
                    schedule_to_close_timeout=timedelta(seconds=policy.give_up_seconds),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=policy.retry_initial_seconds),
                        backoff_coefficient=2.0,
                        maximum_interval=timedelta(seconds=policy.retry_max_seconds),
                        maximum_attempts=0,  # until the give-up time
                    ),
                    # One user's backlog waits behind itself, not in front of others'.
                    priority=Priority(fairness_key=input.user_id),
                    summary=f"{delivery.event_type} to endpoint {lane.endpoint_id[:8]}",
                )
            except ActivityError:
                await workflow.execute_local_activity(
                    "webhook_mark_failed",
                    MarkFailedInput(
                        delivery_id=delivery.delivery_id,
                        reason=f"no 2xx within {policy.give_up_seconds:g} s of attempts",
                    ),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                    summary="give the delivery up",
                )
                self._result.failed += 1
                continue
            if result.outcome == DeliveryOutcome.DELIVERED:
                self._result.delivered += 1
            elif result.outcome != DeliveryOutcome.SKIPPED:
                self._result.failed += 1
