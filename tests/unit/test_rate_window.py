"""An account's max_calls_per_second as a moving window (infra/limiter.py rate_as_window):
never more than the rate in any window, whole seconds."""

from __future__ import annotations

import pytest

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
