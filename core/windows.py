"""Calling windows: when a recipient may be called, in the recipient's local time.

Pure functions of (window, zone, instant), so the campaign activity gives the same answer on
every retry for the instant the workflow passes in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from phonenumbers import timezone as number_timezones

ALL_DAYS = (1, 2, 3, 4, 5, 6, 7)  # ISO weekdays, 1 = Monday
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    start: time
    end: time  # exclusive; after start (no windows across midnight)
    days: tuple[int, ...] = ALL_DAYS

    @classmethod
    def parse(cls, start: str, end: str, days: str | None) -> Window:
        parsed_days = tuple(int(d) for d in days.split(",")) if days else ALL_DAYS
        return cls(time.fromisoformat(start), time.fromisoformat(end), parsed_days)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def iana_zone_names() -> frozenset[str]:
    """The zone and link names of the IANA time zone database, from its `tzdata.zi` on the
    zone path (the system's tzdata ships it); else Python's list of the keys it can load
    (available_timezones, which reads the `tzdata` package's list when that is installed).
    Not every file ZoneInfo opens is a zone: `localtime`, `posixrules`, `right/UTC` and
    `posix/...` are files of the system's copy, not names of the database."""
    for root in TZPATH:
        listing = Path(root) / "tzdata.zi"
        if listing.is_file():
            names: set[str] = set()
            for line in listing.read_text(encoding="utf-8").splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "Z":
                    names.add(fields[1])  # Z <name> ...
                elif len(fields) >= 3 and fields[0] == "L":
                    names.add(fields[2])  # L <target> <name>
            return frozenset(names)
    return frozenset(available_timezones())


def valid_zone(name: str) -> bool:
    """An IANA zone name that this machine can load."""
    if name not in iana_zone_names():
        return False
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def is_open(window: Window, tz: str, now: datetime) -> bool:
    local = now.astimezone(zone(tz))
    return local.isoweekday() in window.days and window.start <= local.time() < window.end


def next_open(window: Window, tz: str, now: datetime) -> datetime:
    """`now` when the window is open, else the next instant (UTC) it opens."""
    if is_open(window, tz, now):
        return now
    local = now.astimezone(zone(tz))
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.isoweekday() not in window.days:
            continue
        opens = datetime.combine(day, window.start, tzinfo=zone(tz))
        if opens > local:
            return opens.astimezone(UTC)
    raise ValueError("calling window has no open day")


def timezone_of(e164: str) -> str | None:
    """The number's time zone when it has exactly one (a US area code does; a mobile range
    spanning zones does not): None means the campaign's default zone applies."""
    try:
        zones = number_timezones.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
    if len(zones) == 1 and zones[0] != "Etc/Unknown" and valid_zone(zones[0]):
        return zones[0]
    return None
