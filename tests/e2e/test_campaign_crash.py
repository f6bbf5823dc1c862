"""A campaign whose worker is SIGKILLed mid-run: a new worker finishes it, and the carrier's
ledger holds exactly one dial per recipient (real processes: dev server, `dialer worker`,
`dialer api`)."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client

from store.models import CallSession, Campaign, CampaignRecipient, SimulatedCall
from tests.support.campaigns import fictional_numbers
from tests.support.processes import running_processes
from tests.support.waiting import wait_until

RECIPIENTS = 120


@pytest.mark.slow
async def test_campaign_survives_a_sigkilled_worker_without_dialing_twice(
    tmp_path: Path, e2e_temporal: str, temporal_client: Client
) -> None:
    async with running_processes(
        tmp_path,
        e2e_temporal,
        temporal_client,
        DIALER_SIMULATED_LATENCY_MS=20,
        # A killed dial becomes ambiguous (and is reconciled) quickly.
        DIALER_DIAL_TIMEOUT_SECONDS=4,
        DIALER_SIMULATED_RING_SECONDS=0.05,
        DIALER_SIMULATED_ANSWER_SECONDS=0.05,
        DIALER_SIMULATED_TALK_SECONDS=0.1,
        DIALER_CALL_STATUS_POLL_SECONDS=1,
        DIALER_CALL_STATUS_POLL_MAX_SECONDS=2,
    ) as procs:
        numbers = fictional_numbers(RECIPIENTS)
        async with httpx.AsyncClient(base_url=procs.base_url, timeout=60) as http:
            agent = await http.post("/api/v1/agents", json={"name": "e2e"}, headers=procs.headers)
            assert agent.status_code == 201, agent.text
            created = await http.post(
                "/api/v1/batch-call/create",
                json={
                    "batch_name": "crash test",
                    "agent_id": agent.json()["id"],
                    "recipients": [{"phone_number": n} for n in numbers],
                    "options": {"calls_per_second": 20, "max_concurrency": 40},
                },
                headers=procs.headers,
            )
        assert created.status_code == 201, created.text
        campaign_id = uuid.UUID(created.json()["campaign"]["id"])
        assert procs.engine is not None
        engine = procs.engine

        def calls_started() -> int:
            with Session(engine) as session:
                return session.exec(
                    select(func.count())
                    .select_from(CallSession)
                    .where(CallSession.campaign_id == campaign_id)
                ).one()

        await wait_until(lambda: calls_started() >= 30, timeout=120, interval=0.1)
        procs.workers[0].kill()  # SIGKILL: no shutdown, tasks and local activities lost
        assert calls_started() < RECIPIENTS, "the kill came too late to prove anything"

        replacement = procs.start_worker()
        await procs.wait_worker(replacement, temporal_client)

        def finished() -> bool:
            with Session(engine) as session:
                row = session.get(Campaign, campaign_id)
                return row is not None and row.finished_at is not None

        await wait_until(finished, timeout=240, interval=0.5)

        with Session(engine) as session:
            states = Counter(
                session.exec(
                    select(CampaignRecipient.state).where(
                        CampaignRecipient.campaign_id == campaign_id
                    )
                ).all()
            )
            session_ids = session.exec(
                select(CampaignRecipient.call_session_id).where(
                    CampaignRecipient.campaign_id == campaign_id
                )
            ).all()
            dials = session.exec(
                select(SimulatedCall.session_id, SimulatedCall.to_number).where(
                    col(SimulatedCall.session_id).in_(session_ids)
                )
            ).all()
        assert states == {"completed": RECIPIENTS}, procs.logs()
        assert len(set(session_ids)) == RECIPIENTS
        # The carrier's ledger: one dial per recipient and per number, none twice.
        assert Counter(sid for sid, _ in dials) == Counter(set(session_ids))
        assert Counter(to for _, to in dials) == Counter(numbers)
        assert calls_started() == RECIPIENTS
