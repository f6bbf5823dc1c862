"""Calling windows and the time zone of a number."""

from __future__ import annotations

from datetime import UTC, datetime

from core.windows import Window, is_open, next_open, timezone_of

WEEKDAYS = Window.parse("09:00", "17:00", "1,2,3,4,5")


def test_open_inside_the_local_hours_only() -> None:
    # Tuesday 2026-12-01 14:00 UTC is 09:00 in New York: the window has just opened.
    at = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert is_open(WEEKDAYS, "America/New_York", at)
    assert not is_open(WEEKDAYS, "America/Los_Angeles", at)  # 06:00 there
    assert next_open(WEEKDAYS, "America/New_York", at) == at
    assert next_open(WEEKDAYS, "America/Los_Angeles", at) == datetime(
        2026, 12, 1, 17, 0, tzinfo=UTC
    )


def test_end_is_exclusive_and_weekends_are_skipped() -> None:
    friday_close = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)  # Friday 17:00 in New York
    assert not is_open(WEEKDAYS, "America/New_York", friday_close)
    assert next_open(WEEKDAYS, "America/New_York", friday_close) == datetime(
        2026, 12, 7, 14, 0, tzinfo=UTC
    )  # Monday 09:00


def test_next_open_across_a_daylight_saving_change() -> None:
    # Saturday 2027-03-13; New York moves to UTC-4 on Sunday the 14th.
    saturday = datetime(2027, 3, 13, 23, 0, tzinfo=UTC)
    assert next_open(WEEKDAYS, "America/New_York", saturday) == datetime(
        2027, 3, 15, 13, 0, tzinfo=UTC
    )


def test_zone_of_a_number_only_when_unambiguous() -> None:
    assert timezone_of("+12025550150") == "America/New_York"
    assert timezone_of("+13125550150") == "America/Chicago"
    assert timezone_of("+447911123456") is None  # UK mobiles span several zones
