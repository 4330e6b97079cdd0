"""Which of a miner's round manifests a backend may delete: all but the newest few.

A manifest is rebuilt whole every round (4 bytes a row: ~4.5 MB at a million rows), so keeping every
round's would grow a backend by tens of MB a day per miner. A check believes only the newest manifest,
and only if the one it names as ``previous`` is still stored; so before a backend stores a new manifest
it may delete all but the newest ``KEEP_MANIFESTS`` it holds. The newest then still has its previous,
whether the new one lands or not, and a validator that listed a moment earlier finds what it listed.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage_core.layout import parse_manifest_key

#: Manifests kept besides the one being stored: the current latest (the new one's previous) and the one
#: before it (the current latest's previous, for a check that listed before the new one landed).
KEEP_MANIFESTS = 2


def superseded_manifests(keys: Iterable[str], hotkey: str, keep: int = KEEP_MANIFESTS) -> list[str]:
    """The manifest keys of ``hotkey`` among ``keys`` older than its newest ``keep`` rounds (by round)."""
    mine = sorted(((name.seq, key) for key in keys
                   if (name := parse_manifest_key(key)) is not None and name.hotkey == hotkey), reverse=True)
    return [key for _seq, key in mine[max(0, keep):]]
