"""Limits that hold across processes, in one storage every API and worker process shares
(`DIALER_LIMITS_STORAGE_URL`): `memory://` for the embedded stack (one API, one worker),
`redis://host:6379/0` for several replicas.

Two kinds:
- `WindowLimit`: at most `amount` hits per `seconds` in any moving window, per key (the
  `limits` library's moving window, exact in memory and in Redis): the per-key request
  limit and the failed-authentication throttle of the API.
- `Spacing`: each caller reserves the next moment at least `gap` seconds after the previous
  reservation of the same key, atomically in the storage (a Lua script in Redis): a
  campaign's dials and an account's calls per second, spread over any number of workers,
  never closer than `gap`, so no one-second window holds more than 1 / gap of them.

A storage that cannot be reached (Redis down) does not stop the service: the process falls
back to its own memory, says so in its log once a minute, and goes back to the shared
storage as soon as it answers."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

# How often a process that lost its shared storage says so (and tries it again).
_COMPLAINT_SECONDS = 60.0
# Reservations are forgotten this long after their moment (they only matter for `gap`).
_SPACING_MEMORY_MS = 60_000

_RESERVE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = math.max(tonumber(ARGV[1]), last + tonumber(ARGV[2]))
if ARGV[4] ~= '' and at > tonumber(ARGV[4]) then
  return string.format('%.6f', at)
end
redis.call('SET', KEYS[1], string.format('%.6f', at), 'PX', ARGV[3])
return string.format('%.6f', at)
"""


def window_item(amount: int, seconds: int) -> RateLimitItem:
    return RateLimitItemPerSecond(max(1, amount), max(1, seconds))


def rate_as_window(per_second: float) -> RateLimitItem:
    """A rate in calls per second as a moving window of whole seconds that never allows more
    than the rate: 2.5/s is 2 per second, 0.5/s is 1 per 2 seconds, 0.3/s is 1 per 4."""
    seconds = max(1, math.ceil(1 / per_second)) if per_second > 0 else 3600
    return window_item(max(1, math.floor(per_second * seconds)), seconds)


def bucket_as_window(per_minute: int, burst: int) -> RateLimitItem:
    """A token bucket's promise (`burst` at once, `per_minute` in the long run) as a moving
    window: `burst` hits per `burst / rate` seconds. Windows are whole seconds, so a burst
    smaller than a second's worth of the rate is raised to one second's worth."""
    seconds = max(1, math.ceil(burst * 60 / per_minute))
    amount = max(burst, round(per_minute * seconds / 60))
    return window_item(amount, seconds)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    wait: float  # seconds until a hit would be allowed again (0 when allowed)


class SharedLimits:
    """The process's handle on the shared storage: window limits and spacing."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.shared = not url.startswith("memory")
        storage = storage_from_string(url)
        if not isinstance(storage, Storage):
            raise ValueError(f"DIALER_LIMITS_STORAGE_URL: {url!r} is an asyncio storage")
        self._storage = storage
        self._local = MemoryStorage()
        self._windows = MovingWindowRateLimiter(self._storage)
        self._local_windows = MovingWindowRateLimiter(self._local)
        self._lock = threading.Lock()
        self._reserved: dict[str, float] = {}
        self._down_since: float | None = None
        self._script: Any = None

    def describe(self) -> str:
        return "redis" if self.shared else "memory (this process only)"

    # --- window limits -------------------------------------------------------------------

    def hit(self, item: RateLimitItem, *key: str) -> Verdict:
        """Spend one hit of `key`'s window if it has one."""
        windows = self._windows if self._usable() else self._local_windows
        try:
            if windows.hit(item, *key):
                return Verdict(True, 0.0)
            return Verdict(False, self._wait(windows, item, key))
        except Exception as exc:  # the shared storage failed: this process's memory decides
            self._lost(exc)
            if self._local_windows.hit(item, *key):
                return Verdict(True, 0.0)
            return Verdict(False, self._wait(self._local_windows, item, key))

    def test(self, item: RateLimitItem, *key: str) -> Verdict:
        """Whether `key` has a hit left, spending nothing."""
        windows = self._windows if self._usable() else self._local_windows
        try:
            if windows.test(item, *key):
                return Verdict(True, 0.0)
            return Verdict(False, self._wait(windows, item, key))
        except Exception as exc:
            self._lost(exc)
            return Verdict(True, 0.0)

    @staticmethod
    def _wait(windows: MovingWindowRateLimiter, item: RateLimitItem, key: tuple[str, ...]) -> float:
        stats = windows.get_window_stats(item, *key)
        return max(0.0, stats.reset_time - time.time())

    # --- spacing -------------------------------------------------------------------------

    def reserve(self, key: str, earliest: float, gap: float, latest: float | None = None) -> float:
        """Reserve the first moment, no earlier than `earliest` (Unix time), at least `gap`
        seconds after the previous reservation of `key`, in every process. Returns it. A
        moment later than `latest` is returned but not reserved: a caller that cannot wait
        that long leaves no gap in the others' pace."""
        if self.shared and self._usable():
            try:
                return self._reserve_shared(key, earliest, gap, latest)
            except Exception as exc:
                self._lost(exc)
        with self._lock:
            at = max(earliest, self._reserved.get(key, 0.0) + gap)
            if latest is not None and at > latest:
                return at
            self._reserved[key] = at
            if len(self._reserved) > 10_000:
                horizon = time.time() - _SPACING_MEMORY_MS / 1000
                self._reserved = {k: t for k, t in self._reserved.items() if t >= horizon}
        return at

    def _reserve_shared(self, key: str, earliest: float, gap: float, latest: float | None) -> float:
        if self._script is None:
            connection = self._storage.get_connection()  # type: ignore[attr-defined]
            self._script = connection.register_script(_RESERVE)
        keep_ms = int(gap * 1000) + _SPACING_MEMORY_MS
        bound = "" if latest is None else f"{latest:.6f}"
        value = self._script(
            keys=[f"dialer:spacing:{key}"],
            args=[f"{earliest:.6f}", f"{gap:.6f}", keep_ms, bound],
        )
        return float(value.decode() if isinstance(value, bytes) else value)

    # --- a storage that does not answer --------------------------------------------------

    def _usable(self) -> bool:
        down = self._down_since
        return down is None or time.monotonic() - down > _COMPLAINT_SECONDS

    def _lost(self, exc: Exception) -> None:
        first = self._down_since is None or self._usable()
        self._down_since = time.monotonic()
        if first:
            log.warning(
                "shared limits storage unreachable (%s): this process limits on its own for now",
                type(exc).__name__,
            )

    def answers(self) -> bool:
        """Whether the shared storage answers (always, for memory)."""
        try:
            return bool(self._storage.check())
        except Exception:
            return False
