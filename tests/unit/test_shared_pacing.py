"""A campaign's dial pace across workers (issue 17): two pacers (two worker processes) on one
storage space the campaign's dials at least min_gap apart, wherever each dial runs, and a
pacer woken late does not bunch its dials with the other's."""

from __future__ import annotations

import asyncio
import time
import uuid

from activities.dialing import LATE_TOLERANCE, DialPacer
from contracts.calls import DialSlot
from infra.limiter import SharedLimits


async def _dials(first: DialPacer, second: DialPacer, count: int, gap: float) -> list[float]:
    key = f"campaign-{uuid.uuid4()}"
    went: list[float] = []
    at = time.time() + 0.2

    async def one(pacer: DialPacer) -> None:
        await pacer.hold(DialSlot(at=at, key=key, min_gap=gap), budget=10)
        went.append(time.time())

    # All slotted at once, half on each "worker": only the shared spacing keeps them apart.
    await asyncio.gather(*(one(first if i % 2 else second) for i in range(count)))
    return sorted(went)


def _closest(times: list[float]) -> float:
    return min(b - a for a, b in zip(times, times[1:], strict=False))


async def test_two_workers_on_one_redis_keep_the_campaigns_gap(redis_url: str) -> None:
    gap = 1.01 / 20
    went = await _dials(
        DialPacer(SharedLimits(redis_url)), DialPacer(SharedLimits(redis_url)), 30, gap
    )
    assert _closest(went) >= gap - 2 * LATE_TOLERANCE
    worst = max(sum(1 for t in went if start <= t < start + 1) for start in went)
    assert worst <= 20


async def test_one_process_keeps_the_gap_in_memory() -> None:
    limits = SharedLimits()
    gap = 0.05
    went = await _dials(DialPacer(limits), DialPacer(limits), 10, gap)
    assert _closest(went) >= gap - 2 * LATE_TOLERANCE
