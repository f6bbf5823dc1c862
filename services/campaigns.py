"""Campaigns as an application service: create one and start its workflow (or write nothing),
and pause / resume / cancel it (the row first, then the workflow is told). The only code that
starts or signals a CampaignWorkflow; the HTTP routes read input and map errors."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from contracts.campaigns import CampaignInput, CampaignProgress, CampaignSignal, CampaignState
from contracts.search_attributes import SA_CAMPAIGN_ID, SA_USER_ID
from contracts.webhooks import campaign_stream
from core.config import Settings
from core.ids import campaign_workflow_id
from services.temporal import TemporalGateway, TemporalUnavailable
from services.webhooks import WebhookDispatcher
from store import campaigns as store
from store.models import Campaign
from workflows.campaign import CampaignWorkflow

log = logging.getLogger(__name__)

# The signal that tells the workflow about each control target.
_SIGNALS = {
    CampaignState.PAUSED: CampaignWorkflow.pause,
    CampaignState.RUNNING: CampaignWorkflow.resume,
    CampaignState.CANCELED: CampaignWorkflow.cancel,
}


# How long a status answer waits for the campaign workflow's progress query (it needs a worker):
# without an answer, the status says what the database knows.
PROGRESS_QUERY_SECONDS = 2.0


class OrchestratorUnavailable(Exception):
    """Temporal could not be reached: the campaign was not created."""


async def start_campaign_workflow(client: Client, row: Campaign, task_queue: str) -> None:
    """Start (or join) the campaign's workflow. A closed run may be started again: its calls
    have deterministic ids and the database knows which were started, so a new run only
    carries on where the last one stopped."""
    await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(campaign_id=str(row.id)),
        id=campaign_workflow_id(row.id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_USER_ID, str(row.user_id)),
                SearchAttributePair(SA_CAMPAIGN_ID, str(row.id)),
            ]
        ),
        static_summary=f"Campaign {row.name[:80]}: {row.total_recipients} recipients",
        static_details=f"**campaign_id**: {row.id}\n**user_id**: {row.user_id}\n"
        f"**calls of this campaign**: `DialerCampaignId = '{row.id}'`",
    )


class CampaignService:
    def __init__(self, settings: Settings, engine: Engine, temporal: TemporalGateway) -> None:
        self._settings = settings
        self._engine = engine
        self._temporal = temporal
        self._webhooks = WebhookDispatcher(temporal.client, engine, settings)

    async def create(
        self, spec: store.CampaignSpec, rows: Iterable[store.RecipientRow]
    ) -> store.CreationReport:
        """Write the campaign and its recipients, then start its workflow; if Temporal cannot
        be reached the rows are removed again and OrchestratorUnavailable is raised. Raises
        store.CampaignNotFound and store.NoValidRecipients with nothing written."""
        report = await asyncio.to_thread(
            store.create_campaign, self._engine, spec, rows, self._settings.default_region
        )
        campaign = report.campaign
        if campaign.state != CampaignState.COMPLETED:
            try:
                client = await self._temporal.client()
                await start_campaign_workflow(client, campaign, self._settings.task_queue)
            except (TemporalUnavailable, RPCError) as exc:
                await asyncio.to_thread(store.delete_campaign, self._engine, campaign.id)
                raise OrchestratorUnavailable() from exc
        await self._webhooks.kick([campaign_stream(campaign.id)])  # started or completed
        return report

    async def progress(self, row: Campaign) -> CampaignProgress | None:
        """What the campaign's running workflow says of itself (why it waits and until when),
        or None: finished, not running, no worker answering in time, Temporal unreachable."""
        if row.finished_at is not None:
            return None
        try:
            client = await self._temporal.client()
            handle = client.get_workflow_handle_for(
                CampaignWorkflow.run, campaign_workflow_id(row.id)
            )
            return await asyncio.wait_for(
                handle.query(CampaignWorkflow.progress), PROGRESS_QUERY_SECONDS
            )
        except (TemporalUnavailable, RPCError, TimeoutError, WorkflowQueryFailedError):
            return None

    async def control(
        self, campaign_id: uuid.UUID, user_id: uuid.UUID, target: CampaignState
    ) -> Campaign:
        """pause / resume / cancel: written to the row (the truth), then the workflow is told.
        Raises store.CampaignNotFound and store.InvalidTransition."""
        row = await asyncio.to_thread(store.transition, self._engine, campaign_id, user_id, target)
        await self._notify(row, target)
        await self._webhooks.kick([campaign_stream(row.id)])
        return row

    async def _notify(self, row: Campaign, target: CampaignState) -> None:
        """Tell the workflow about a control request already written to the database. When it
        is not running (it closed, or was never started) start it: it reads the row and acts."""
        try:
            client = await self._temporal.client()
            handle = client.get_workflow_handle(campaign_workflow_id(row.id))
            try:
                await handle.signal(_SIGNALS[target], CampaignSignal())
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                await start_campaign_workflow(client, row, self._settings.task_queue)
        except (TemporalUnavailable, RPCError):
            # The row is the truth; the workflow reads it at its next tick.
            log.warning("campaign %s: %s not signalled (Temporal unreachable)", row.id, target)
