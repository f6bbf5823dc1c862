"""CampaignWorkflow on the time-skipping server: pacing, calling windows, pause/resume/cancel
(real database work, a launcher that records starts), and continue-as-new over 100,000
recipients (fake activities)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.campaigns import CampaignActivities
from contracts.calls import CallPolicies
from contracts.campaigns import (
    CampaignConfig,
    CampaignInput,
    CampaignProgress,
    CampaignSignal,
    CampaignState,
    LoadCampaignInput,
    TickInput,
    TickResult,
)
from core.ids import campaign_workflow_id
from core.windows import Window, is_open, next_open, zone
from store import campaigns
from store.db import make_engine
from store.migrate import upgrade
from tests.support.accounts import make_account
from tests.support.campaigns import (
    RecordingLauncher,
    fictional_numbers,
    make_campaign,
    recipient_states,
)
from tests.support.waiting import wait_until
from workflows.campaign import CampaignWorkflow

CampaignHandle = WorkflowHandle[CampaignWorkflow, CampaignProgress]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@dataclass
class Harness:
    env: WorkflowEnvironment
    engine: Engine
    launcher: RecordingLauncher
    task_queue: str
    user_id: uuid.UUID

    async def start(self, campaign_id: uuid.UUID) -> CampaignHandle:
        return await self.env.client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(campaign_id=str(campaign_id)),
            id=campaign_workflow_id(campaign_id),
            task_queue=self.task_queue,
        )


@pytest.fixture
async def harness(ts_env: WorkflowEnvironment, engine: Engine) -> AsyncIterator[Harness]:
    launcher = RecordingLauncher(engine, ts_env.get_current_time)
    acts = CampaignActivities(engine, launcher, CallPolicies())
    task_queue = f"campaign-{uuid.uuid4().hex[:8]}"
    user = make_account(engine).user
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow],
        # Always sandboxed here: the worker runs unsandboxed unless DIALER_WORKFLOW_SANDBOX.
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[acts.load_campaign, acts.campaign_tick],
    ):
        yield Harness(ts_env, engine, launcher, task_queue, user.id)


async def wall_clock() -> datetime:
    return datetime.now(UTC)


def busiest_second(times: list[datetime]) -> int:
    """The most starts in any one-second window [t, t + 1 s)."""
    times = sorted(times)
    return max(
        sum(1 for u in times[i:] if u - t < timedelta(seconds=1)) for i, t in enumerate(times)
    )


async def test_pacing_five_per_second(harness: Harness) -> None:
    """Pacing is of the dials: each call gets a slot (dial_slot, held by the dial activity),
    and the calls are started ahead of their slots."""
    numbers = fictional_numbers(40)
    campaign_id = make_campaign(
        harness.engine, harness.user_id, numbers, calls_per_second=5.0, max_concurrency=100
    )

    # Real seconds: the clock runs in real time here (no skipping), and each start is stamped
    # from the wall clock at the instant the launcher is called, like the slots.
    async def precise_clock() -> datetime:
        return datetime.now(UTC)

    harness.launcher.clock = precise_clock
    with harness.env.auto_time_skipping_disabled():
        result: CampaignProgress = await (await harness.start(campaign_id)).result()

    assert result.state == "completed"
    ids = [sid for _, sid in harness.launcher.starts]
    assert len(ids) == len(set(ids)) == 40  # one start per recipient
    slots = [harness.launcher.slots[sid] for sid in ids]
    assert None not in slots
    times = [datetime.fromtimestamp(s.at, UTC) for s in slots if s is not None]
    offsets = [round((t - min(times)).total_seconds(), 3) for t in sorted(times)]
    assert busiest_second(times) <= 5, offsets
    # Mean rate: slots after the first one, over the time from the first to the last.
    span = (max(times) - min(times)).total_seconds()
    rate = (len(times) - 1) / span
    assert abs(rate - 5.0) <= 0.25, (rate, offsets)
    # Every call was started before its slot, so its dial can keep it.
    for (started, _), slot in zip(harness.launcher.starts, slots, strict=True):
        assert slot is not None and started.timestamp() < slot.at, (started, slot)
        assert slot.key == str(campaign_id) and slot.min_gap >= 1 / 5
    assert recipient_states(harness.engine, campaign_id) == {"completed": 40}


async def test_outside_the_window_waits_until_it_opens(harness: Harness) -> None:
    now = await harness.env.get_current_time()
    # A window that is closed now: 09:00-17:00 New York time, only on the day after tomorrow.
    day = (now.astimezone(zone("America/New_York")) + timedelta(days=2)).isoweekday()
    window = Window.parse("09:00", "17:00", str(day))
    opens = next_open(window, "America/New_York", now)
    assert opens > now + timedelta(hours=24)
    # +1 202 … is a Washington, DC number: its zone (New York) comes from the number, not
    # from the campaign's default (UTC), which would open the window at another hour.
    campaign_id = make_campaign(
        harness.engine,
        harness.user_id,
        ["+12025550150", "+12025550151"],
        window_start="09:00",
        window_end="17:00",
        window_days=str(day),
        default_timezone="UTC",
    )
    handle = await harness.start(campaign_id)
    result: CampaignProgress = await handle.result()

    assert result.state == "completed"
    assert len(harness.launcher.starts) == 2
    for started, _ in harness.launcher.starts:
        assert started >= opens
        assert started - opens < timedelta(minutes=1)
        assert is_open(window, "America/New_York", started)


async def _signal(
    harness: Harness, handle: CampaignHandle, campaign_id: uuid.UUID, what: str
) -> None:
    """What the API does: write the request to the row, then wake the workflow."""
    target = {
        "pause": CampaignState.PAUSED,
        "resume": CampaignState.RUNNING,
        "cancel": CampaignState.CANCELED,
    }[what]
    campaigns.transition(harness.engine, campaign_id, harness.user_id, target)
    await handle.signal(what, CampaignSignal())

    async def seen() -> bool:
        progress = await handle.query(CampaignWorkflow.progress)
        return progress.state == target

    await wait_until(seen, timeout=30)


async def test_pause_resume_cancel(harness: Harness) -> None:
    numbers = fictional_numbers(30)
    # The first recipient's call stays in progress until the test ends it.
    harness.launcher.hold = lambda call: call.phone_number == numbers[0]
    # Only counts matter here: no clock reads on the test server while queries are pending
    # (the test server can hold one behind the other).
    harness.launcher.clock = wall_clock
    campaign_id = make_campaign(
        # One call at a time besides the held one: every tick is short, so the test's queries
        # are never held behind a long tick on the test server.
        harness.engine,
        harness.user_id,
        numbers,
        calls_per_second=1.0,
        max_concurrency=2,
    )
    handle = await harness.start(campaign_id)
    await harness.env.sleep(3)
    assert len(harness.launcher.starts) >= 2

    await _signal(harness, handle, campaign_id, "pause")
    paused_at = len(harness.launcher.starts)
    await harness.env.sleep(600)  # ten minutes of paused campaign: no new call
    assert len(harness.launcher.starts) == paused_at
    assert recipient_states(harness.engine, campaign_id)["not_started"] == 30 - paused_at

    await _signal(harness, handle, campaign_id, "resume")
    await harness.env.sleep(4)
    assert len(harness.launcher.starts) > paused_at

    await _signal(harness, handle, campaign_id, "cancel")
    canceled_at = len(harness.launcher.starts)
    progress = await handle.query(CampaignWorkflow.progress)
    assert progress.in_flight == 1  # the held call: canceling does not cut it off
    await harness.env.sleep(60)
    assert len(harness.launcher.starts) == canceled_at
    states = recipient_states(harness.engine, campaign_id)
    assert states["canceled"] == 30 - canceled_at
    assert states["calling"] == 1

    harness.launcher.finish(harness.launcher.held[0])
    result: CampaignProgress = await handle.result()
    assert result.state == "canceled"
    states = recipient_states(harness.engine, campaign_id)
    assert states == {"completed": canceled_at, "canceled": 30 - canceled_at}
    ids = [sid for _, sid in harness.launcher.starts]
    assert len(ids) == len(set(ids))


async def test_redial_busy_after_the_delay(harness: Harness) -> None:
    numbers = fictional_numbers(2)
    # The first call to the first number stays in progress until the test ends it busy.
    harness.launcher.hold = lambda call: (
        call.phone_number == numbers[0] and not harness.launcher.held
    )
    campaign_id = make_campaign(
        harness.engine,
        harness.user_id,
        numbers,
        redial_outcomes="busy,no_answer",
        redial_max_attempts=2,
        redial_delay_seconds=300,
    )
    handle = await harness.start(campaign_id)
    await wait_until(lambda: harness.launcher.held, timeout=30)
    first_try = harness.launcher.held[0]
    harness.launcher.finish(first_try, "busy")
    result: CampaignProgress = await handle.result()

    assert result.state == "completed"
    tries = [
        (t, sid)
        for t, sid in harness.launcher.starts
        if harness.launcher.number_of[sid] == numbers[0]
    ]
    assert [sid for _, sid in tries][0] == first_try
    assert len(tries) == 2  # the busy recipient, once more, under a new call id
    assert tries[1][1] != first_try
    assert tries[1][0] - tries[0][0] >= timedelta(seconds=300)
    assert recipient_states(harness.engine, campaign_id) == {"completed": 2}


# --- 100,000 recipients through continue-as-new, with fake activities -------------------------


# 100 recipients per tick (two seconds of slots): 1,000 ticks, more than one run can hold.
CPS = 50


@dataclass
class FakeCampaign:
    """Stands in for the database: hands out each recipient exactly once."""

    total: int
    started: int = 0
    ticks: int = 0

    @activity.defn(name="load_campaign")
    async def load_campaign(self, input: LoadCampaignInput) -> CampaignConfig:
        return CampaignConfig(
            found=True, state=CampaignState.RUNNING, calls_per_second=CPS, max_concurrency=500
        )

    @activity.defn(name="campaign_tick")
    async def campaign_tick(self, input: TickInput) -> TickResult:
        self.ticks += 1
        n = min(input.limit, self.total - self.started)
        self.started += n
        pending = self.total - self.started
        return TickResult(
            state=CampaignState.RUNNING if pending else CampaignState.COMPLETED,
            started=n,
            pending=pending,
            due=pending,
            calls_per_second=CPS,
            max_concurrency=500,
            done=pending == 0 and n == 0,
        )


async def test_100k_recipients_continue_as_new(ts_env: WorkflowEnvironment) -> None:
    fake = FakeCampaign(total=100_000)
    task_queue = f"campaign-{uuid.uuid4().hex[:8]}"
    workflow_id = f"campaign-{uuid.uuid4()}"
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow],
        # Always sandboxed here: the worker runs unsandboxed unless DIALER_WORKFLOW_SANDBOX.
        workflow_runner=SandboxedWorkflowRunner(),
        activities=[fake.load_campaign, fake.campaign_tick],
    ):
        handle = await ts_env.client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(campaign_id=str(uuid.uuid4())),
            id=workflow_id,
            task_queue=task_queue,
        )
        result: CampaignProgress = await handle.result()

    assert fake.started == 100_000
    assert result.started_total == 100_000
    assert result.run >= 1  # it continued as new at least once
    # Walk the chain of runs: none may come near 10,000 events.
    run_id = handle.first_execution_run_id
    lengths = []
    while run_id:
        history = await ts_env.client.get_workflow_handle(
            workflow_id, run_id=run_id
        ).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = None
    assert len(lengths) == result.run + 1
    assert max(lengths) < 10_000, lengths
