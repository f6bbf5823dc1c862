"""CampaignWorkflow: many calls, paced, controllable, never twice. Deterministic code only.

The campaign's recipients and options live in the database; this workflow holds only the
campaign id and a few counters. Each tick (a local activity) brings recipients up to date from
their sessions and claims and starts the next calls; the workflow decides when to tick:

- pacing: each call gets a dial slot on a grid 1.04 / calls_per_second apart, continued from
  tick to tick; the tick starts its calls ahead of their slots and the dial activity holds
  each request until its slot, so no one-second window holds more than calls_per_second dials
  however long starting a call takes;
- concurrency: the tick never lets more than max_concurrency calls be in flight;
- calling windows and redial delays: with nothing callable, it sleeps until the next recipient
  becomes callable;
- pause / resume / cancel: written to the database by the API, then signalled; a signal only
  wakes the workflow early, the row decides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contracts.campaigns import (
        CampaignCarry,
        CampaignConfig,
        CampaignInput,
        CampaignProgress,
        CampaignSignal,
        CampaignState,
        LoadCampaignInput,
        ProgressState,
        TickInput,
        TickResult,
        WaitReason,
        pacing,
    )

WORKFLOW_NAME = "CampaignWorkflow"

# How often calls in flight are checked for their outcome.
POLL_INTERVAL = timedelta(seconds=1)
# A paused campaign with nothing in flight looks at its row this often, in case a resume
# signal was lost (the API writes the row first, then signals).
PAUSED_RECHECK = timedelta(seconds=60)
# Continue as new well before a run's history gets large (a tick costs about 6 events).
HISTORY_LIMIT = 4_000

# How much earlier than its first dial slot a tick begins: for its database work and for
# starting its calls, which the dial activity then holds until their slots. Also the margin
# for a late timer: the dev server fires every timer shorter than a second after about one
# second (bench/notes.md), and a tick that starts late only shortens its calls' lead.
PREP_LEAD = timedelta(seconds=1)

TICK_TIMEOUT = timedelta(seconds=120)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)


def next_tick_at(last_start_wall: float, calls_per_second: float) -> datetime:
    """When the next tick may begin: one spacing after the last dial slot given (a wall-clock
    timestamp from the tick), PREP_LEAD early. Finite for every rate: pacing() holds the rate
    within the accepted range (tests/security/test_hostile_input.py drives it over all of it)."""
    last_slot = datetime.fromtimestamp(last_start_wall, UTC)
    return last_slot + timedelta(seconds=pacing(calls_per_second).spacing) - PREP_LEAD


@workflow.defn(name=WORKFLOW_NAME)
class CampaignWorkflow:
    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        carry = input.carry or CampaignCarry()
        self._run = carry.run
        self._not_before: datetime | None = carry.not_before
        self._last_start_wall: float | None = carry.last_start_wall
        self._wake = False
        self._progress = CampaignProgress(
            campaign_id=input.campaign_id,
            state=CampaignState.SCHEDULED,
            started_total=carry.started_total,
            run=carry.run,
        )

    @workflow.run
    async def run(self, input: CampaignInput) -> CampaignProgress:
        config: CampaignConfig = await workflow.execute_local_activity(
            "load_campaign",
            LoadCampaignInput(campaign_id=input.campaign_id),
            result_type=CampaignConfig,
            start_to_close_timeout=TICK_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="load campaign",
        )
        if not config.found:
            self._progress.state = ProgressState.MISSING
            return self._progress
        self._progress.state = config.state
        if config.state == CampaignState.SCHEDULED and config.start_at is not None:
            await self._wait_for_start(config.start_at)

        cps = config.calls_per_second
        while True:
            await self._respect_pacing()
            result: TickResult = await workflow.execute_local_activity(
                "campaign_tick",
                TickInput(
                    campaign_id=input.campaign_id,
                    now=workflow.now(),
                    limit=pacing(cps).batch,
                    calls_per_second=cps,
                    last_start_wall=self._last_start_wall,
                    begin=True,
                ),
                result_type=TickResult,
                start_to_close_timeout=TICK_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=self._tick_summary(pacing(cps).batch),
            )
            cps = result.calls_per_second
            self._update(result)
            if result.done:
                return self._progress
            now = workflow.now()
            if result.started and result.last_start_wall is not None:
                # The tick gave its calls dial slots one spacing apart, the last at
                # last_start_wall; the next tick's first slot comes one spacing after it. Wake
                # that tick PREP_LEAD early, to prepare and start its calls before their slots.
                self._not_before = next_tick_at(result.last_start_wall, cps)
                self._last_start_wall = result.last_start_wall
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CampaignInput(
                        campaign_id=input.campaign_id,
                        carry=CampaignCarry(
                            started_total=self._progress.started_total,
                            not_before=self._not_before,
                            run=self._run + 1,
                            last_start_wall=self._last_start_wall,
                        ),
                    )
                )
            delay = self._next_delay(result, now)
            self._progress.waiting_until = now + delay
            self._progress.waiting_for = self._wait_reason(result)
            self._describe()
            await self._sleep_or_wake(delay)
            self._progress.waiting_until = None
            self._progress.waiting_for = None

    async def _wait_for_start(self, start_at: datetime) -> None:
        """Sleep until start_at. A control signal wakes it to look at the row: a cancel ends
        the wait (the next tick finishes the campaign), a pause or resume does not."""
        self._progress.waiting_until = start_at
        self._progress.waiting_for = WaitReason.START_AT
        self._describe()
        while workflow.now() < start_at:
            if not await self._sleep_or_wake(start_at - workflow.now()):
                continue
            config: CampaignConfig = await workflow.execute_local_activity(
                "load_campaign",
                LoadCampaignInput(campaign_id=self._progress.campaign_id),
                result_type=CampaignConfig,
                start_to_close_timeout=TICK_TIMEOUT,
                retry_policy=DB_RETRY,
                summary="reload campaign",
            )
            self._progress.state = config.state
            if config.state == CampaignState.CANCELED:
                break
        self._progress.waiting_until = None
        self._progress.waiting_for = None

    async def _sleep_or_wake(self, delay: timedelta) -> bool:
        """Sleep for `delay` or until a signal arrives; True when a signal woke it."""
        try:
            await workflow.wait_condition(lambda: self._wake, timeout=delay)
        except TimeoutError:
            return False
        self._wake = False
        return True

    async def _respect_pacing(self) -> None:
        """Never start a batch before the previous one's share of time has passed, even when a
        signal woke the workflow early or a new run took over."""
        if self._not_before is not None and workflow.now() < self._not_before:
            await workflow.sleep(self._not_before - workflow.now())

    def _next_delay(self, result: TickResult, now: datetime) -> timedelta:
        if result.state == CampaignState.RUNNING:
            if result.due and result.in_flight < result.max_concurrency:
                pace = (self._not_before - now) if self._not_before else timedelta(0)
                return max(pace, timedelta(milliseconds=1))
            if result.in_flight:
                return POLL_INTERVAL  # at the concurrency bound, or waiting for the last calls
            if result.next_due_at is not None:
                # Outside every recipient's calling window, or waiting for a redial.
                return max(result.next_due_at - now, timedelta(milliseconds=1))
            return POLL_INTERVAL
        if result.in_flight:
            return POLL_INTERVAL  # paused or canceled: calls in progress still finish
        return PAUSED_RECHECK

    def _wait_reason(self, result: TickResult) -> WaitReason:
        """Why the sleep that follows this tick starts no call (see _next_delay)."""
        if result.state == CampaignState.PAUSED:
            return WaitReason.PAUSED
        if result.state != CampaignState.RUNNING:
            return WaitReason.LAST_CALLS  # canceled: the calls in progress finish
        if result.due and result.account_limited:
            return WaitReason.ACCOUNT_CONCURRENCY
        if result.due and result.in_flight < result.max_concurrency:
            return WaitReason.PACING
        if result.due:
            return WaitReason.MAX_CONCURRENCY
        if result.pending and result.next_due_at is not None:
            if result.window_opens_at is not None and result.next_due_at >= result.window_opens_at:
                return WaitReason.CALLING_WINDOW
            return WaitReason.REDIAL_DELAY
        return WaitReason.LAST_CALLS

    def _describe(self) -> None:
        """The run's current details: the state and counts, and while it waits, why and until
        when (UTC), e.g. `running: 0 calls started, 0 in flight, 40 not started; waiting for
        calling_window until 2026-12-01T14:00:00Z`."""
        p = self._progress
        details = (
            f"{p.state}: {p.started_total} calls started, {p.in_flight} in flight, "
            f"{p.pending} not started"
        )
        if p.waiting_for and p.waiting_for != WaitReason.PACING and p.waiting_until:
            until = p.waiting_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            details += f"; waiting for {p.waiting_for} until {until}"
        workflow.set_current_details(details)

    def _tick_summary(self, limit: int) -> str:
        """Each tick's summary in the history: what it does, and where the campaign stood."""
        p = self._progress
        return (
            f"tick: sync outcomes, start up to {limit} calls ({p.started_total} started, "
            f"{p.in_flight} in flight, {p.pending} not started)"
        )

    def _update(self, result: TickResult) -> None:
        p = self._progress
        p.state = result.state
        p.started_total += result.started
        p.in_flight = result.in_flight
        p.pending = result.pending
        self._describe()

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_LIMIT
        )

    @workflow.signal
    def pause(self, _: CampaignSignal) -> None:
        self._wake = True

    @workflow.signal
    def resume(self, _: CampaignSignal) -> None:
        self._wake = True

    @workflow.signal
    def cancel(self, _: CampaignSignal) -> None:
        self._wake = True

    @workflow.query
    def progress(self) -> CampaignProgress:
        return self._progress
