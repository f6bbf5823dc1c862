"""A campaign's dial pace across workers (issue 17): two pacers (two worker processes) on one
storage space the campaign's dials at least min_gap apart, wherever each dial runs, and a
pacer woken late does not bunch its dials with the other's."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from activities.dialing import LATE_TOLERANCE, DialPacer, Paced
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


def _reserve_past_latest(limits: SharedLimits) -> None:
    key = f"campaign-{uuid.uuid4()}"
    now = time.time()
    assert limits.reserve(key, now, 1.0) == pytest.approx(now, abs=1e-3)
    # The next moment is a second away: beyond `latest` it is answered, not taken...
    assert limits.reserve(key, now, 1.0, latest=now + 0.5) == pytest.approx(now + 1.0, abs=1e-3)
    # ...so the next caller that can wait gets that same moment, not one a second later.
    assert limits.reserve(key, now, 1.0, latest=now + 2.0) == pytest.approx(now + 1.0, abs=1e-3)
    assert limits.reserve(key, now, 1.0) == pytest.approx(now + 2.0, abs=1e-3)


def test_a_moment_past_latest_is_not_reserved_in_memory() -> None:
    _reserve_past_latest(SharedLimits())


def test_a_moment_past_latest_is_not_reserved_in_redis(redis_url: str) -> None:
    _reserve_past_latest(SharedLimits(redis_url))


async def test_a_refused_dial_leaves_no_gap_in_the_pace() -> None:
    limits = SharedLimits()
    pacer = DialPacer(limits)
    key = f"campaign-{uuid.uuid4()}"
    now = time.time()
    limits.reserve(f"campaign:{key}", now + 1.0, 0.5)  # the pace is taken for a second
    with pytest.raises(Paced):
        await pacer.hold(DialSlot(at=now, key=key, min_gap=0.5), budget=0.2)
    # The refused dial took nothing: the next dial of the campaign is 0.5 s after the last.
    assert limits.reserve(f"campaign:{key}", now, 0.5) == pytest.approx(now + 1.5, abs=1e-3)
