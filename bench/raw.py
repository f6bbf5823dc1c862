"""The raw floor: trivial workflows and activities on the plain temporalio SDK, with the
SDK's default worker options, on their own task queue and their own worker process
(`python -m bench.raw <address> <task queue>`), like Dialer's worker.

- BenchAccepted: update-with-start; the update returns after one local activity
  (the floor of create_call wait=accepted);
- BenchDialed: one local activity, then one regular activity; the update returns after it
  (the floor of wait=dialed);
- BenchDialedOwnQueue: BenchDialed with its activity on a second, rate-limited task queue,
  as Dialer dials (DESIGN: the dial runs on its own task queue, capped per second); the
  activity cannot then be dispatched eagerly with the workflow task. Not a target's floor: it
  separates what that design choice costs from what Dialer's own code costs;
- BenchThroughput: one regular activity (the floor of calls per second).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from infra.bytecode import keep_bytecode_cache

TIMEOUT = timedelta(seconds=30)
# DIALER_DIAL_RATE_PER_SECOND in the bench (bench.stack): a cap that never binds.
BENCH_DIAL_RATE = 100_000.0


@activity.defn(name="bench_noop")
async def noop(value: str) -> str:
    return value


@workflow.defn(name="BenchAccepted")
class AcceptedWorkflow:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self, value: str) -> str:
        await workflow.execute_local_activity(noop, value, start_to_close_timeout=TIMEOUT)
        self._done = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return value

    @workflow.update
    async def wait(self, value: str) -> str:
        await workflow.wait_condition(lambda: self._done)
        return value


@workflow.defn(name="BenchDialed")
class DialedWorkflow:
    """`value` names the activity's task queue; empty: the workflow's own."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self, value: str) -> str:
        await workflow.execute_local_activity(noop, value, start_to_close_timeout=TIMEOUT)
        await workflow.execute_activity(
            noop, value, task_queue=value or None, start_to_close_timeout=TIMEOUT
        )
        self._done = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return value

    @workflow.update
    async def wait(self, value: str) -> str:
        await workflow.wait_condition(lambda: self._done)
        return value


@workflow.defn(name="BenchThroughput")
class ThroughputWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(noop, value, start_to_close_timeout=TIMEOUT)


WORKFLOWS = [AcceptedWorkflow, DialedWorkflow, ThroughputWorkflow]


def own_queue(task_queue: str) -> str:
    return f"{task_queue}-activities"


async def serve(address: str, task_queue: str) -> None:
    # The same bytecode cache as Dialer's worker (infra.bytecode): the floor must not pay
    # for compiling its workflow module on every run either.
    keep_bytecode_cache()
    client = await Client.connect(address)
    worker = Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[noop])
    # BenchDialedOwnQueue's activities: the rate limit the bench gives Dialer's dial queue.
    activities = Worker(
        client,
        task_queue=own_queue(task_queue),
        activities=[noop],
        max_task_queue_activities_per_second=BENCH_DIAL_RATE,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker, activities:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
