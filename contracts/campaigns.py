"""Inputs and results of CampaignWorkflow and its activities. Recipients never appear here:
they stay in the database, so history holds counts and ids only."""

# No `from __future__ import annotations` here: with string annotations the Temporal data
# converter evaluates every type hint again on each decode, three times slower
# (bench/notes.md; tests/unit/test_dto.py).
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class CampaignState(StrEnum):
    """A campaign's state: scheduled -> running <-> paused -> completed | canceled."""

    SCHEDULED = "scheduled"  # waiting for start_at
    RUNNING = "running"
    PAUSED = "paused"
    CANCELED = "canceled"
    COMPLETED = "completed"


CAMPAIGN_FINAL = frozenset({CampaignState.CANCELED, CampaignState.COMPLETED})


class ProgressState(StrEnum):
    """`CampaignProgress.state` of a run that found no campaign: never a stored state."""

    MISSING = "missing"


class RecipientState(StrEnum):
    """A campaign recipient's state; completed and the ones after it are final (busy,
    no_answer and voicemail after any redials)."""

    NOT_STARTED = "not_started"
    QUEUED = "queued"  # claimed, its call workflow may or may not have been started yet
    CALLING = "calling"  # its call workflow was started
    COMPLETED = "completed"
    FAILED = "failed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    # Its call was answered by a machine (answered_by machine_*), whatever was done about it
    # (machine_detection): the call ended, but no person was reached.
    VOICEMAIL = "voicemail"


IN_FLIGHT = (RecipientState.QUEUED, RecipientState.CALLING)


class AttemptOutcome(StrEnum):
    """What became of one finished call of a recipient (its `outcome` is the latest one's);
    store/campaign_recipients.py reads it from the call's session."""

    COMPLETED = "completed"  # answered by a person (or nobody said otherwise)
    VOICEMAIL = "voicemail"  # answered by a machine (answered_by machine_*)
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # not placed (see failure_code), or the placed call failed or was canceled


# The dial slots given by one tick cover at most this many seconds of the campaign's rate.
# Short enough that pause and cancel (which take effect between ticks, for the calls not yet
# started) stay prompt; long enough that the workflow's sleep between ticks is over a second
# (the dev server fires any shorter timer after about a second, which would cost rate).
TICK_SECONDS = 2.0
MAX_BATCH = 600
# Dial slots within a tick are groups at most this often, so that a high rate does not need
# one slot every few milliseconds.
MAX_GROUPS_PER_SECOND = 20
# Spacing is this much wider than the exact rate: a dial lands a few milliseconds after its
# slot, and a window must still never see one call too many.
SPACING_MARGIN = 1.04


# The rates a campaign may have (calls_per_second). The API refuses others; pacing() holds
# any stored value inside them too, so the workflow's arithmetic (a spacing of 1.04 /
# calls_per_second seconds as a timedelta) stays finite for every row.
MIN_CALLS_PER_SECOND = 0.001
MAX_CALLS_PER_SECOND = 100.0


@dataclass(frozen=True)
class Pacing:
    """How a campaign's rate turns into dial slots: `group` calls every `spacing` seconds, at
    most `batch` per tick. Slots follow a grid `spacing` apart (also from one tick to the
    next), a little wider than the exact rate, so any one-second window holds at most
    calls_per_second dials."""

    group: int
    spacing: float
    batch: int


def bounded_rate(calls_per_second: float) -> float:
    """The rate held within [MIN_CALLS_PER_SECOND, MAX_CALLS_PER_SECOND]; NaN (which fails
    every comparison, so min/max alone would keep it) becomes the minimum."""
    if MIN_CALLS_PER_SECOND <= calls_per_second <= MAX_CALLS_PER_SECOND:
        return calls_per_second
    if calls_per_second > MAX_CALLS_PER_SECOND:
        return MAX_CALLS_PER_SECOND
    return MIN_CALLS_PER_SECOND


def pacing(calls_per_second: float) -> Pacing:
    calls_per_second = bounded_rate(calls_per_second)
    if calls_per_second <= MAX_GROUPS_PER_SECOND:
        group, per_second = 1, calls_per_second
    else:
        group = -(-int(calls_per_second) // MAX_GROUPS_PER_SECOND)  # ceil
        per_second = float(int(calls_per_second // group))
    spacing = SPACING_MARGIN / per_second
    batch = max(1, min(MAX_BATCH, int(calls_per_second * TICK_SECONDS)))
    return Pacing(group=group, spacing=spacing, batch=batch)


@dataclass
class CampaignCarry:
    """What one run hands to the next on continue-as-new."""

    started_total: int = 0
    # Pacing survives continue-as-new: the next run does not start calls before this instant.
    not_before: datetime | None = None
    run: int = 0
    last_start_wall: float | None = None


@dataclass
class CampaignInput:
    campaign_id: str
    carry: CampaignCarry | None = None


@dataclass
class CampaignSignal:
    """Input of pause/resume/cancel. The request is also in the database (the API writes it
    first), so a lost signal only delays the workflow until its next look at the row."""

    reason: str | None = None


@dataclass
class LoadCampaignInput:
    campaign_id: str


@dataclass
class CampaignConfig:
    found: bool
    state: CampaignState = CampaignState.SCHEDULED
    user_id: str | None = None
    calls_per_second: float = 1.0
    max_concurrency: int = 1
    start_at: datetime | None = None


@dataclass
class TickInput:
    campaign_id: str
    now: datetime  # the workflow's clock, so a retried tick decides the same way
    limit: int  # calls this tick may start (pacing); 0 = only bring states up to date
    calls_per_second: float = 1.0  # how the tick spreads its dial slots
    # The previous tick's last dial slot (wall clock, epoch seconds): this tick's first slot
    # keeps to the grid after it.
    last_start_wall: float | None = None
    begin: bool = False  # scheduled -> running


@dataclass
class TickResult:
    state: CampaignState  # the campaign's state in the database
    started: int = 0
    in_flight: int = 0
    pending: int = 0  # not started yet, including those waiting for a window or a redial
    due: int = 0  # pending and callable now (left over when concurrency was the limit)
    next_due_at: datetime | None = None  # when a pending recipient becomes callable
    calls_per_second: float = 1.0
    max_concurrency: int = 1
    done: bool = False
    last_start_wall: float | None = None  # this tick's last dial slot (Unix time)
    # When the next closed calling window of a pending recipient opens (next_due_at is this
    # or a redial's time): tells "outside the calling window" from "waiting for a redial".
    window_opens_at: datetime | None = None
    # The account has its max_concurrent_calls in flight (all its calls, not only these).
    account_limited: bool = False


class WaitReason(StrEnum):
    """Why a campaign starts no call now: in its status answer and its current details."""

    START_AT = "start_at"  # before the campaign's start_at
    CALLING_WINDOW = "calling_window"  # every pending recipient's calling window is closed
    REDIAL_DELAY = "redial_delay"  # the pending recipients wait for their redial time
    MAX_CONCURRENCY = "max_concurrency"  # max_concurrency calls are in flight
    # The account's max_concurrent_calls (`dialer users limits`) are in flight.
    ACCOUNT_CONCURRENCY = "account_max_concurrent_calls"
    LAST_CALLS = "last_calls"  # nobody left to start; the calls in flight are finishing
    PAUSED = "paused"
    PACING = "pacing"  # the next calls' dial slots (calls_per_second)


@dataclass
class CampaignProgress:
    campaign_id: str
    state: CampaignState | ProgressState
    started_total: int = 0
    in_flight: int = 0
    pending: int = 0
    run: int = 0
    waiting_until: datetime | None = None
    # Why nothing is being started now (a WaitReason), while waiting_until says until when.
    waiting_for: str | None = None
