"""Record the histories that tests/workflow/test_replay.py replays.

    .venv/bin/python -m tests.workflow.record_histories [scenario ...]   # default: all

Run it only when a workflow change is meant to be incompatible (nothing running needs the
old code). For a compatible change, keep the recorded histories: they are the proof that
runs started by the previous worker version still replay (use `workflow.patched` for a
change that must differ for new runs)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from contracts.calls import (
    CallOptions,
    FailureCode,
    PersistSessionResult,
    SessionStatus,
    Stage,
    ValidationResult,
)
from contracts.campaigns import (
    CampaignConfig,
    CampaignInput,
    CampaignState,
    LoadCampaignInput,
    TickInput,
    TickResult,
)
from tests.support.temporal import start_ts_env
from tests.workflow.harness import (
    Fakes,
    ambiguous,
    not_placed,
    placed,
    rejected,
    running,
)
from workflows.campaign import CampaignWorkflow

HERE = Path(__file__).resolve().parent / "histories"


@dataclass
class QuietTalk(Fakes):
    """Polls only (no callbacks): the first look-up deferred by the account's budget, then
    answered (a quiet talk, asked every poll_max: patched follow-by-state), then completed."""

    answers: list[str | None] = field(default_factory=lambda: [None, "in-progress", "completed"])
    fetches: int = 0

    @activity.defn(name="fetch_call_status")
    async def fetch_call_status(self, input: Any) -> dict[str, Any]:
        status = self.answers[min(self.fetches, len(self.answers) - 1)]
        self.fetches += 1
        if status is None:
            return {"deferred_seconds": 1.0}
        return {
            "update": {
                "status": status,
                "telephony_leg_id": input.get("telephony_leg_id"),
                "duration_seconds": 700 if status == "completed" else None,
                "source": "poll",
            }
        }


class Scenario(TypedDict):
    fakes: Fakes
    wait: Stage  # the stage create_call waits for
    # Call control (issue 16): scheduled_at and latest_at this long after the server's now.
    scheduled_in: NotRequired[timedelta]
    latest_in: NotRequired[timedelta]


SCENARIOS: dict[str, Scenario] = {
    # placed at once, followed until the (fake) poll reports completed
    "placed_and_followed": Scenario(fakes=Fakes(default_dial=placed()), wait=Stage.DIALED),
    # not placed twice (backoff timers), then placed
    "retried_then_placed": Scenario(
        fakes=Fakes(dial_steps={1: not_placed(), 2: not_placed()}), wait=Stage.DIALED
    ),
    # the answer lost, reconciliation finds the call: no second dial
    "ambiguous_reconciled": Scenario(
        fakes=Fakes(dial_steps={1: ambiguous(was_placed=True)}), wait=Stage.DIALED
    ),
    "rejected": Scenario(fakes=Fakes(default_dial=rejected()), wait=Stage.DIALED),
    "refused_by_validation": Scenario(
        fakes=Fakes(
            validation=ValidationResult(
                ok=False,
                target_number="+12025550100",
                failure_code=FailureCode.SUPPRESSED_NUMBER,
                failure_reason="the number is on the do-not-call list",
            ),
            persisted=PersistSessionResult(
                status=SessionStatus.FAILED, failure_code=FailureCode.SUPPRESSED_NUMBER
            ),
        ),
        wait=Stage.ACCEPTED,
    ),
    # the durable timer until scheduled_at (patched scheduled-calls), then placed
    "scheduled_then_placed": Scenario(
        fakes=Fakes(default_dial=placed()), wait=Stage.ACCEPTED, scheduled_in=timedelta(hours=1)
    ),
    # scheduled; the carrier refuses and asks to retry past latest_at: the call fails
    # latest_at_passed, the run Failed (patched fail-failed-calls)
    # a look-up deferred by the budget, then a quiet talk asked every poll_max, ended by poll
    # (patched follow-by-state)
    "quiet_talk_deferred": Scenario(fakes=QuietTalk(default_dial=placed()), wait=Stage.DIALED),
    "failed_latest_at_passed": Scenario(
        fakes=Fakes(default_dial=not_placed(retry_after=600)),
        wait=Stage.ACCEPTED,
        scheduled_in=timedelta(hours=1),
        latest_in=timedelta(hours=1, minutes=5),
    ),
}


class ScriptedCampaign:
    """A campaign's activities answering from a script: a scheduled start, two paced ticks,
    one at the concurrency bound, one outside the calling window, then done. Every way the
    workflow decides to wait appears in its history."""

    def __init__(self) -> None:
        self.ticks = 0

    @activity.defn(name="load_campaign")
    async def load_campaign(self, input: LoadCampaignInput) -> CampaignConfig:
        start_at = activity.info().current_attempt_scheduled_time + timedelta(minutes=5)
        return CampaignConfig(
            found=True,
            state=CampaignState.SCHEDULED,
            calls_per_second=20,
            max_concurrency=60,
            start_at=start_at,
        )

    @activity.defn(name="campaign_tick")
    async def campaign_tick(self, input: TickInput) -> TickResult:
        self.ticks += 1
        slot = input.now.timestamp() + 1.0
        common: dict[str, Any] = dict(calls_per_second=20.0, max_concurrency=60)
        script = {
            1: TickResult(
                CampaignState.RUNNING,
                started=40,
                in_flight=40,
                pending=60,
                due=60,
                last_start_wall=slot + 2,
                **common,
            ),
            2: TickResult(
                CampaignState.RUNNING,
                started=20,
                in_flight=60,
                pending=40,
                due=40,
                last_start_wall=slot + 1,
                **common,
            ),
            3: TickResult(
                CampaignState.RUNNING,
                in_flight=0,
                pending=40,
                due=0,
                next_due_at=input.now + timedelta(hours=1),
                **common,
            ),
            4: TickResult(
                CampaignState.RUNNING,
                started=40,
                in_flight=40,
                pending=0,
                last_start_wall=slot + 2,
                **common,
            ),
        }
        return script.get(self.ticks) or TickResult(CampaignState.COMPLETED, done=True, **common)


async def record_campaign(env: WorkflowEnvironment) -> None:
    acts = ScriptedCampaign()
    async with Worker(
        env.client,
        task_queue="record-campaign",
        workflows=[CampaignWorkflow],
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[acts.load_campaign, acts.campaign_tick],
    ):
        handle = await env.client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(campaign_id=str(uuid.uuid4())),
            id=f"campaign-{uuid.uuid4()}",
            task_queue="record-campaign",
        )
        await handle.result()
        history = await handle.fetch_history()
    (HERE / "campaign-scheduled_paced_bounded_windowed.json").write_text(history.to_json())
    sys.stdout.write(f"recorded campaign: {len(history.events)} events\n")


async def record(only: list[str]) -> None:
    """Record the named scenarios (`campaign` for the campaign's), or all of them."""
    HERE.mkdir(exist_ok=True)
    async with await start_ts_env() as env:
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            async with running(env, scenario["fakes"]) as run:
                now = await env.get_current_time()
                at, latest = scenario.get("scheduled_in"), scenario.get("latest_in")
                run.call = replace(
                    run.call,
                    options=CallOptions(
                        scheduled_at=(now + at).isoformat() if at else None,
                        latest_at=(now + latest).isoformat() if latest else None,
                    ),
                )
                await run.create(wait=scenario["wait"])
                await run.finish()
                history = await run.handle.fetch_history()
            (HERE / f"create_call-{name}.json").write_text(history.to_json())
            sys.stdout.write(f"recorded {name}: {len(history.events)} events\n")
        if not only or "campaign" in only:
            await record_campaign(env)


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
