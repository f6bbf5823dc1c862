"""Record the histories that tests/workflow/test_replay.py replays.

    .venv/bin/python -m tests.workflow.record_histories

Run it only when a workflow change is meant to be incompatible (nothing running needs the
old code). For a compatible change, keep the recorded histories: they are the proof that
runs started by the previous worker version still replay (use `workflow.patched` for a
change that must differ for new runs)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.conftest import start_ts_env
from tests.workflow.harness import (
    Fakes,
    ambiguous,
    not_placed,
    placed,
    rejected,
    running,
)
from workflows.dto import FailureCode, PersistSessionResult, ValidationResult

HERE = Path(__file__).resolve().parent / "histories"

SCENARIOS = {
    # placed at once, followed until the (fake) poll reports completed
    "placed_and_followed": dict(fakes=Fakes(default_dial=placed()), wait="dialed"),
    # not placed twice (backoff timers), then placed
    "retried_then_placed": dict(
        fakes=Fakes(dial_steps={1: not_placed(), 2: not_placed()}), wait="dialed"
    ),
    # the answer lost, reconciliation finds the call: no second dial
    "ambiguous_reconciled": dict(
        fakes=Fakes(dial_steps={1: ambiguous(was_placed=True)}), wait="dialed"
    ),
    "rejected": dict(fakes=Fakes(default_dial=rejected()), wait="dialed"),
    "refused_by_validation": dict(
        fakes=Fakes(
            validation=ValidationResult(
                ok=False,
                target_number="+12025550100",
                failure_code=FailureCode.SUPPRESSED_NUMBER,
                failure_reason="the number is on the do-not-call list",
            ),
            persisted=PersistSessionResult(
                status="failed", failure_code=FailureCode.SUPPRESSED_NUMBER
            ),
        ),
        wait="accepted",
    ),
}


async def record() -> None:
    HERE.mkdir(exist_ok=True)
    async with await start_ts_env() as env:
        for name, scenario in SCENARIOS.items():
            async with running(env, scenario["fakes"]) as run:  # type: ignore[arg-type]
                await run.create(wait=scenario["wait"])  # type: ignore[arg-type]
                await run.finish()
                history = await run.handle.fetch_history()
            (HERE / f"create_call-{name}.json").write_text(history.to_json())
            sys.stdout.write(f"recorded {name}: {len(history.events)} events\n")


if __name__ == "__main__":
    asyncio.run(record())
