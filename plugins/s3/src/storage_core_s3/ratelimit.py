"""Per-hotkey token buckets and daily storage quotas for the grant service."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """``rate`` requests per second per key, with bursts up to ``burst``; ``rate <= 0`` disables it.

    In-process: each worker of a multi-worker deployment keeps its own buckets, so the effective limit
    is ``workers x rate`` (a gateway in front can add a global limit).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens (the request's work, at most ``burst``) for ``key``: None when allowed,
        else the seconds to wait before retrying."""
        if self.rate <= 0:
            return None
        cost = min(float(self.burst), max(0.0, cost))
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                return (cost - tokens) / self.rate
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self._max_keys:
                self._evict(now)
            return None

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:  # a full bucket is the same as no bucket
                del self._buckets[key]


class DailyQuota:
    """At most ``limit`` bytes granted per key per UTC day (``limit <= 0`` disables it); in-process, like
    :class:`RateLimiter`."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = int(limit)
        self._clock = clock
        self._used: dict[str, int] = {}
        self._day = -1
        self._lock = threading.Lock()

    def charge(self, key: str, size: int) -> int | None:
        """Count ``size`` bytes for ``key``: None when within the quota, else the bytes still allowed today."""
        if self.limit <= 0:
            return None
        day = int(self._clock() // 86400)
        with self._lock:
            if day != self._day:  # a new day: every quota starts over
                self._day, self._used = day, {}
            used = self._used.get(key, 0)
            if used + size > self.limit:
                return self.limit - used
            self._used[key] = used + size
            return None
