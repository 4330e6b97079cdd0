"""Which repo belongs to which miner.

The repo id is derived, never claimed: ``{namespace}/{repo_prefix}-{hotkey}``, with ``namespace`` and
``repo_prefix`` from the chain config. A validator computes it from the hotkey alone, so a miner cannot
point validators at another miner's repo. Write access is enforced by the Hub (each miner's token is
scoped to its own repo). What ties the repo's contents to the hotkey is the core's round manifest,
signed by the hotkey and stored in the repo like any other object (``storage_core.manifest``).
"""

from __future__ import annotations

from storage_core.layout import check_hotkey


def repo_id_for(namespace: str, repo_prefix: str, hotkey: str) -> str:
    """The one repo a miner's data lives in."""
    return f"{namespace}/{repo_prefix}-{check_hotkey(hotkey)}"
