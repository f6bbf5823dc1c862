"""Inputs and results of CampaignWorkflow and its activities. Recipients never appear here:
they stay in the database, so history holds counts and ids only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Campaign states.
SCHEDULED = "scheduled"
RUNNING = "running"
PAUSED = "paused"
CANCELED = "canceled"
COMPLETED = "completed"
CAMPAIGN_STATES = (SCHEDULED, RUNNING, PAUSED, CANCELED, COMPLETED)
CAMPAIGN_FINAL = frozenset({CANCELED, COMPLETED})

# Recipient states.
NOT_STARTED = "not_started"
QUEUED = "queued"  # claimed, its call workflow may or may not have been started yet
CALLING = "calling"  # its call workflow was started
R_COMPLETED = "completed"
R_FAILED = "failed"
BUSY = "busy"
NO_ANSWER = "no_answer"
SKIPPED = "skipped"
R_CANCELED = "canceled"
RECIPIENT_STATES = (
    NOT_STARTED,
    QUEUED,
    CALLING,
    R_COMPLETED,
    R_FAILED,
    BUSY,
    NO_ANSWER,
    SKIPPED,
    R_CANCELED,
)
IN_FLIGHT = (QUEUED, CALLING)
REDIAL_OUTCOMES = (BUSY, NO_ANSWER)


@dataclass
class CampaignCarry:
    """What one run hands to the next on continue-as-new."""

    started_total: int = 0
    # Pacing survives continue-as-new: the next run does not start calls before this instant.
    not_before: datetime | None = None
    run: int = 0


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
    state: str = SCHEDULED
    user_id: str | None = None
    calls_per_second: float = 1.0
    max_concurrency: int = 1
    start_at: datetime | None = None


@dataclass
class TickInput:
    campaign_id: str
    now: datetime  # the workflow's clock, so a retried tick decides the same way
    limit: int  # calls this tick may start (pacing); 0 = only bring states up to date
    begin: bool = False  # scheduled -> running


@dataclass
class TickResult:
    state: str  # the campaign's state in the database
    started: int = 0
    in_flight: int = 0
    pending: int = 0  # not started yet, including those waiting for a window or a redial
    due: int = 0  # pending and callable now (left over when concurrency was the limit)
    next_due_at: datetime | None = None  # when a pending recipient becomes callable
    calls_per_second: float = 1.0
    max_concurrency: int = 1
    done: bool = False
    # How long the tick took: its starts are spread over that time, so pacing counts from
    # its end (the workflow's clock does not move while a local activity runs).
    elapsed_seconds: float = 0.0


@dataclass
class CampaignProgress:
    campaign_id: str
    state: str
    started_total: int = 0
    in_flight: int = 0
    pending: int = 0
    run: int = 0
    waiting_until: datetime | None = None
