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

from activities.webhooks import WebhookKicker
from contracts.calls import CallPolicies, CallSpec, DialSlot
from contracts.campaigns import (
    CampaignConfig,
    LoadCampaignInput,
    TickInput,
    TickResult,
    bounded_rate,
    pacing,
)
from contracts.webhooks import campaign_stream
from store import accounts, campaign_ticks

log = logging.getLogger(__name__)

# A tick that would have to wait longer than this for its first start claims nobody.
MAX_EARLY_SECONDS = 5.0
# The first tick's first dial slot is this far ahead, so its call is started and prepared
# before its slot (later ticks begin PREP_LEAD before theirs, see workflows/campaign.py).
FIRST_SLOT_LEAD = 0.5


class CallLauncher(Protocol):
    async def start(self, calls: list[CallSpec]) -> None:
        """Start each call's workflow once; a call whose workflow exists already is left be
        (services/calls.py `TemporalCallLauncher`)."""
        ...


class CampaignActivities:
    def __init__(
        self,
        engine: Engine,
        launcher: CallLauncher,
        policies: CallPolicies,
        webhooks: WebhookKicker | None = None,
    ) -> None:
        self._engine = engine
        self._launcher = launcher
        self._policies = policies
        self._webhooks = webhooks

    async def _start_paced(
        self,
        calls: list[CallSpec],
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
        min_gap = 1.01 / bounded_rate(calls_per_second)
        # The dials count in the account's max_calls_per_second with its single calls.
        account = calls[0].user_id
        rate = (
            await asyncio.to_thread(accounts.get_limits, self._engine, account)
        ).max_calls_per_second
        slots = [
            DialSlot(
                at=first + (i // pace.group) * pace.spacing,
                key=key,
                min_gap=min_gap,
                account=account if rate is not None else None,
                account_rate=rate,
            )
            for i in range(len(calls))
        ]
        await self._launcher.start(
            [replace(call, dial_slot=slot) for call, slot in zip(calls, slots, strict=True)]
        )
        return slots[-1].at

    @activity.defn(name="load_campaign")
    async def load_campaign(self, input: LoadCampaignInput) -> CampaignConfig:
        return await asyncio.to_thread(campaign_ticks.load_config, self._engine, input.campaign_id)

    @activity.defn(name="campaign_tick")
    async def campaign_tick(self, input: TickInput) -> TickResult:
        pace = pacing(input.calls_per_second)
        if input.last_start_wall is not None:
            early = input.last_start_wall + pace.spacing - time.time()
            if early > MAX_EARLY_SECONDS:
                # Woken long before the next start is due (a signal): only bring states up
                # to date, claim nobody.
                input = replace(input, limit=0)
        plan = await asyncio.to_thread(
            campaign_ticks.prepare_tick, self._engine, input, self._policies
        )
        if self._webhooks is not None:
            # campaign.started / campaign.completed, if this tick committed one.
            await self._webhooks.kick([campaign_stream(input.campaign_id)])
        if plan.calls:
            plan.result.last_start_wall = await self._start_paced(
                plan.calls, input.campaign_id, input.calls_per_second, input.last_start_wall
            )
            await asyncio.to_thread(campaign_ticks.mark_calling, self._engine, plan.recipient_ids)
            log.info(
                "campaign calls started",
                extra={"campaign_id": input.campaign_id, "count": len(plan.calls)},
            )
        return plan.result
