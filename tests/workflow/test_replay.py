"""Histories recorded from earlier runs (tests/workflow/histories, made by
record_histories.py) must replay on today's workflow code: a change that would break the
runs in flight when a new worker version is deployed fails here, not in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.campaign import CampaignWorkflow
from workflows.create_call import CreateCallWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 8  # seven calls (a scheduled one, a Failed one), one campaign


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[CreateCallWorkflow, CampaignWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
