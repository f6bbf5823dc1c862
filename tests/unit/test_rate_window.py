"""An account's max_calls_per_second as a moving window (infra/limiter.py rate_as_window):
never more than the rate in any window, whole seconds."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from activities.dialing import DialPacer
from contracts.calls import DialSlot
from infra.limiter import SharedLimits, rate_as_window


@pytest.mark.parametrize(
    ("rate", "amount", "seconds"),
    [(5.0, 5, 1), (2.5, 2, 1), (1.0, 1, 1), (0.5, 1, 2), (0.3, 1, 4), (0.1, 1, 10)],
)
def test_the_window_never_allows_more_than_the_rate(rate: float, amount: int, seconds: int) -> None:
    item = rate_as_window(rate)
    assert (item.amount, item.get_expiry()) == (amount, seconds)
    assert item.amount / item.get_expiry() <= rate


def test_hits_beyond_the_window_are_refused_with_a_wait() -> None:
    limits = SharedLimits()
    item = rate_as_window(2)
    assert [limits.hit(item, "account-calls", "u1").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    refused = limits.hit(item, "account-calls", "u1")
    assert not refused.allowed and 0 < refused.wait <= 1
    assert limits.hit(item, "account-calls", "u2").allowed  # another account


async def test_two_campaigns_of_one_account_share_its_rate(redis_url: str) -> None:
    """Two 10/s campaigns of an account limited to 4/s, on two pacers (two workers) of one
    Redis: their dials together keep to the account's 4 in any second."""
    account = f"user-{uuid.uuid4()}"
    at = time.time() + 0.1
    went: list[float] = []

    async def one(pacer: DialPacer, campaign: str) -> None:
        slot = DialSlot(at=at, key=campaign, min_gap=0.101, account=account, account_rate=4)
        await pacer.hold(slot, budget=10)
        went.append(time.time())

    pacers = [DialPacer(SharedLimits(redis_url)), DialPacer(SharedLimits(redis_url))]
    campaigns = [f"campaign-{uuid.uuid4()}", f"campaign-{uuid.uuid4()}"]
    await asyncio.gather(*(one(pacers[i % 2], campaigns[i // 5 % 2]) for i in range(10)))
    went.sort()
    assert max(sum(1 for t in went if s <= t < s + 1) for s in went) <= 4
    assert went[-1] - went[0] >= 2.0  # 10 dials at 4/s: over two seconds, not one
