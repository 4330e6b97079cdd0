"""Per-hotkey token buckets for the grant service."""

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

    def acquire(self, key: str) -> float | None:
        """Take one token for ``key``: None when allowed, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._evict(now)
            return None

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:  # a full bucket is the same as no bucket
                del self._buckets[key]
