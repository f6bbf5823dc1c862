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
    TickInput,
    TickResult,
    pacing,
)
from workflows.create_call import CreateCallWorkflow, search_attributes_for, summary_for
from workflows.dto import CreateCallInput, DialSlot

log = logging.getLogger(__name__)

# A tick that would have to wait longer than this for its first start claims nobody.
MAX_EARLY_SECONDS = 5.0
# The first tick's first dial slot is this far ahead, so its call is started and prepared
# before its slot (later ticks begin PREP_LEAD before theirs, see workflows/campaign.py).
FIRST_SLOT_LEAD = 0.5
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
        self,
        calls: list[CreateCallInput],
        key: str,
        calls_per_second: float,
        previous: float | None,
    ) -> float:
        """Give the calls dial slots, in groups on a grid `spacing` apart that continues from
        the previous tick's last slot (the first tick's grid begins FIRST_SLOT_LEAD from
        now), start them all at once ahead of their slots (the dial activity holds each
        request until its slot), and return the last slot, where the next tick's grid
        continues. Pacing the dials rather than the starts keeps the rate however long a
        start takes. Wall clock, because ticks and dials may run in other processes."""
        pace = pacing(calls_per_second)
        now = time.time()
        first = now + FIRST_SLOT_LEAD if previous is None else max(previous + pace.spacing, now)
        # Just over the exact rate, so a dial's own timestamp a moment after the pacer's
        # check can never make two dials look closer than 1 / calls_per_second.
        min_gap = 1.01 / calls_per_second
        slots = [
            DialSlot(at=first + (i // pace.group) * pace.spacing, key=key, min_gap=min_gap)
            for i in range(len(calls))
        ]
        await self._launcher.start(
            [replace(call, dial_slot=slot) for call, slot in zip(calls, slots, strict=True)]
        )
        return slots[-1].at

    @activity.defn(name="load_campaign")
    async def load_campaign(self, input: LoadCampaignInput) -> CampaignConfig:
        return await asyncio.to_thread(campaigns.load_config, self._engine, input.campaign_id)

    @activity.defn(name="campaign_tick")
    async def campaign_tick(self, input: TickInput) -> TickResult:
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
                plan.calls, input.campaign_id, input.calls_per_second, input.last_start_wall
            )
            await asyncio.to_thread(campaigns.mark_calling, self._engine, plan.recipient_ids)
            log.info(
                "campaign calls started",
                extra={"campaign_id": input.campaign_id, "count": len(plan.calls)},
            )
        return plan.result
