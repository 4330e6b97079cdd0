"""Deterministic, sticky, monotone rollout: which miners a backend is switched on for.

A miner's position for backend ``b`` is ``int(sha256(f"{b}:{hotkey}")) mod 10000``; it is selected when
``position < percent * 100``. Raising the percentage only adds miners, and validators compute the same
function, so they know which backends each miner should be on.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def rollout_position(backend: str, hotkey: str) -> int:
    """The miner's fixed position (0..9999) in ``backend``'s rollout order."""
    digest = hashlib.sha256(f"{backend}:{hotkey}".encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def threshold(percent: float) -> int:
    """Positions below this number are selected at ``percent``."""
    if not 0 <= percent <= 100:
        raise ValueError(f"rollout percentage must be within 0..100, got {percent}")
    return round(percent * 100)


def is_selected(backend: str, hotkey: str, percent: float) -> bool:
    """Whether ``hotkey`` is on ``backend`` at ``percent``."""
    return rollout_position(backend, hotkey) < threshold(percent)
