"""`make chaos`: run the scenarios and print one table row each.

python -m chaos.run                 # every scenario, full size
python -m chaos.run --only 1,6      # some of them
python -m chaos.run --scale 0.5     # fewer calls per scenario
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from chaos.procs import Postgres
from chaos.scenarios import (
    Row,
    scenario_api_kill,
    scenario_database_down,
    scenario_one_key,
    scenario_provider_faults,
    scenario_temporal_kill,
    scenario_worker_kill,
)
from chaos.webhooks import WebhookRow, scenario_webhooks

HEADER = (
    "| scenario | calls requested | sessions terminal | sessions lost | second dials "
    "| HTTP 5xx | documented 503 | time to recover (s) |"
)


def format_row(row: Row) -> str:
    recover = f"{row.recover_seconds:.1f}" if row.recover_seconds is not None else "-"
    return (
        f"| {row.scenario} | {row.requested} | {row.terminal} | {row.lost} | "
        f"{row.second_dials} | {row.http_5xx} | {row.documented_503} | {recover} |"
    )


WEBHOOK_HEADER = (
    "| scenario | events expected | events recorded | events delivered | events lost "
    "| duplicates (all retries) | out of order | bad signatures | all delivered after (s) |"
)


def format_webhook_row(row: WebhookRow) -> str:
    after = f"{row.deliver_seconds:.1f}" if row.deliver_seconds is not None else "-"
    retries = "yes" if row.duplicates_not_retries == 0 else f"no ({row.duplicates_not_retries})"
    return (
        f"| {row.scenario} | {row.events_expected} | {row.events_recorded} | "
        f"{row.events_delivered} | {row.events_lost} | {row.duplicates} ({retries}) | "
        f"{row.out_of_order} | {row.bad_signatures} | {after} |"
    )


def scenarios(scale: float) -> dict[str, Callable[[Path], Awaitable[Row]]]:
    def n(calls: int) -> int:
        return max(5, int(calls * scale))

    return {
        "1": lambda root: scenario_worker_kill(root, calls=n(60)),
        "2": lambda root: scenario_temporal_kill(root, calls=n(60)),
        "3": lambda root: scenario_database_down(root, calls=n(60)),
        "4": lambda root: scenario_provider_faults(root, calls=n(60)),
        "5": lambda root: scenario_api_kill(root, calls=n(30)),
        "6": lambda root: scenario_one_key(root, calls=50),
        "7": lambda root: scenario_webhooks(root, calls=n(60)),
    }


async def main_async(only: list[str], scale: float) -> int:
    table = scenarios(scale)
    rows: list[Row] = []
    failed = False
    sys.stdout.write(HEADER + "\n|" + "---|" * 8 + "\n")
    sys.stdout.flush()
    for key in only:
        if key == "3" and not Postgres.available():
            sys.stdout.write("| 3 database down + back | skipped: no initdb found |\n")
            continue
        try:
            with tempfile.TemporaryDirectory(prefix=f"dialer-chaos-{key}-") as tmp:
                row = await table[key](Path(tmp))
        except Exception as exc:  # one broken scenario must not hide the others' figures
            logging.exception("scenario %s could not run", key)
            sys.stdout.write(f"| scenario {key} | could not run: {type(exc).__name__} |\n")
            failed = True
            continue
        rows.append(row)
        sys.stdout.write(format_row(row) + "\n")
        sys.stdout.flush()
    hooks = [r for r in rows if isinstance(r, WebhookRow)]
    if hooks:
        sys.stdout.write("\n" + WEBHOOK_HEADER + "\n|" + "---|" * 9 + "\n")
        sys.stdout.writelines(format_webhook_row(r) + "\n" for r in hooks)
    for row in rows:
        for note in row.notes:
            sys.stdout.write(f"- {row.scenario}: {note}\n")
    return 0 if all(r.ok for r in rows) and not failed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__)
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated scenario numbers")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies calls per scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(main_async(args.only.split(","), args.scale))


if __name__ == "__main__":
    sys.exit(main())
