"""Activities of CampaignWorkflow (local activities on the main worker): read the campaign,
and run one tick: database work plus starting the claimed recipients' call workflows."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Protocol

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from store import campaigns
from store.campaigns import CallPolicies
from workflows.campaign_dto import (
    CampaignConfig,
    LoadCampaignInput,
    Pacing,
    TickInput,
    TickResult,
    pacing,
)
from workflows.create_call import CreateCallWorkflow, search_attributes_for, summary_for
from workflows.dto import CreateCallInput

log = logging.getLogger(__name__)

# A tick that would have to wait longer than this for its first start claims nobody.
MAX_EARLY_SECONDS = 5.0
# Starts in flight at once from one tick: enough to keep up with a high rate, few enough to
# stay far from the server's limits.
START_CONCURRENCY = 20


class CallLauncher(Protocol):
    async def start(self, calls: list[CreateCallInput]) -> None:
        """Start each call's workflow once; a call whose workflow exists already is left be."""
        ...


class TemporalCallLauncher:
    """Starts CreateCallWorkflow with its deterministic id: a running one is joined
    (USE_EXISTING) and a closed one is never started again (REJECT_DUPLICATE), so a repeated
    start after a crash or a retry can never dial a recipient twice."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    async def start(self, calls: list[CreateCallInput]) -> None:
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def one(call: CreateCallInput) -> None:
            summary, details = summary_for(call)
            async with gate:
                try:
                    await self._client.start_workflow(
                        CreateCallWorkflow.run,
                        call,
                        id=call.call_session_id,
                        task_queue=self._task_queue,
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=TypedSearchAttributes(search_attributes_for(call)),
                        static_summary=summary,
                        static_details=details,
                    )
                except WorkflowAlreadyStartedError:
                    pass  # it ran already: the recipient's call exists

        await asyncio.gather(*(one(c) for c in calls))


class CampaignActivities:
    def __init__(self, engine: Engine, launcher: CallLauncher, policies: CallPolicies) -> None:
        self._engine = engine
        self._launcher = launcher
        self._policies = policies

    async def _start_paced(
        self, calls: list[CreateCallInput], pace: Pacing, previous: float | None
    ) -> float:
        """Start the calls in groups on a grid `spacing` apart that continues from the
        previous tick's last group; a late group never brings the next one closer than
        `min_gap` (the exact rate). Wall clock, because ticks may run in other processes.
        Returns when the last group started."""
        # On the grid after the previous tick's last group, or now if that is past already.
        due = time.time() if previous is None else max(previous + pace.spacing, time.time())
        last = previous
        for i in range(0, len(calls), pace.group):
            target = due if last is None else max(due, last + pace.min_gap)
            wait = target - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            last = time.time()
            await self._launcher.start(calls[i : i + pace.group])
            due += pace.spacing
        assert last is not None
        return last

    @activity.defn(name="load_campaign")
    async def load_campaign(self, input: LoadCampaignInput) -> CampaignConfig:
        return await asyncio.to_thread(campaigns.load_config, self._engine, input.campaign_id)

    @activity.defn(name="campaign_tick")
    async def campaign_tick(self, input: TickInput) -> TickResult:
        began = time.monotonic()
        pace = pacing(input.calls_per_second)
        if input.last_start_wall is not None:
            early = input.last_start_wall + pace.spacing - time.time()
            if early > MAX_EARLY_SECONDS:
                # Woken long before the next start is due (a signal): only bring states up
                # to date, claim nobody.
                input = replace(input, limit=0)
        plan = await asyncio.to_thread(campaigns.prepare_tick, self._engine, input, self._policies)
        if plan.calls:
            plan.result.last_start_wall = await self._start_paced(
                plan.calls, pace, input.last_start_wall
            )
            await asyncio.to_thread(campaigns.mark_calling, self._engine, plan.recipient_ids)
            log.info(
                "campaign calls started",
                extra={"campaign_id": input.campaign_id, "count": len(plan.calls)},
            )
            plan.result.elapsed_seconds = time.monotonic() - began
        return plan.result
