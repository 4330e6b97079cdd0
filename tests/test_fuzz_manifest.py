"""Round manifests from a hostile miner: any bytes of a signed manifest changed after signing.

A check reads a manifest's header, some chunk entries and some index buckets, each held to the signed
header. Whatever bytes a miner changes, the check must end with a verdict (never an exception), must
never believe a URI the miner does not hold, and must refuse the manifest whenever a changed byte is one
it read. Changed bytes it did not read change nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_core.chain.keys import keypair_from_uri
from storage_core.layout import manifest_key, parse_manifest_key
from storage_core.testing import cheats
from storage_core.testing.data import make_table, recent_day
from storage_core.testing.manifests import signed_manifest
from storage_core.testing.memory_store import MemoryStore
from storage_core.verify import CheckSettings, check_claims

MINER = keypair_from_uri("//fuzz-manifest")
HOTKEY = MINER.ss58_address
BACKEND = "memory"
ABSENT = "https://x.com/nobody/status/1"  # never stored: no manifest may make it found


def _world() -> tuple[dict[str, bytes], str, bytes, list[str]]:
    objects: dict[str, bytes] = {}
    claims: list[str] = []
    for day in (1, 2, 3):
        for source in ("x", "reddit"):
            table = make_table(120, source, seed=day * 7 + len(source), day=recent_day(day))
            planted = cheats.honest(HOTKEY, table)
            objects[planted.key] = planted.data
            claims += table.column("uri").to_pylist()[::40]
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    return objects, key, data, claims


OBJECTS, KEY, MANIFEST, CLAIMS = _world()


class Recording(MemoryStore):
    """Records the byte ranges read of the manifest."""

    def __init__(self, objects: dict[str, bytes], manifest_key_: str) -> None:
        super().__init__(objects, HOTKEY)
        self.manifest_key = manifest_key_
        self.read: list[tuple[int, int]] = []

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if key == self.manifest_key:
            self.read.append((start, end))
        return super().read_range(key, start, end)


def _check(data: bytes) -> tuple[object, Recording]:
    key = manifest_key(HOTKEY, parse_manifest_key(KEY).seq, "0" * 64)
    store = Recording({**OBJECTS, key: data}, key)
    result = check_claims(store, BACKEND, HOTKEY, [*CLAIMS, ABSENT], CheckSettings(seed="fuzz", full_checks=2))
    return result, store


def test_the_honest_manifest_passes() -> None:
    result, _store = _check(MANIFEST)
    assert result.found == frozenset(CLAIMS) and result.manifest.startswith("round ")  # type: ignore[attr-defined]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.integers(0, len(MANIFEST) - 1), st.integers(1, 255), min_size=1, max_size=4))
def test_changed_bytes_are_refused_when_read_and_never_make_a_claim_pass(flips: dict[int, int]) -> None:
    forged = bytearray(MANIFEST)
    for position, mask in flips.items():
        forged[position] ^= mask
    result, store = _check(bytes(forged))
    assert ABSENT not in result.found  # type: ignore[attr-defined]
    assert set(result.found) | set(result.rejected) <= {*CLAIMS, ABSENT}  # type: ignore[attr-defined]
    touched = any(start <= position < end for position in flips for start, end in store.read)
    if touched:
        assert result.manifest.startswith("refused: ") and not result.found, result  # type: ignore[attr-defined]
    else:
        assert result.found == frozenset(CLAIMS), result  # type: ignore[attr-defined]


@pytest.mark.parametrize("cut", [0, 7, 8, 100, len(MANIFEST) // 2, len(MANIFEST) - 1])
def test_a_truncated_manifest_is_refused(cut: int) -> None:
    result, _store = _check(MANIFEST[:cut])
    assert not result.found and result.manifest.startswith("refused: ")  # type: ignore[attr-defined]
