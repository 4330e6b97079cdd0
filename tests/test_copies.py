"""Copies across miners: byte copies and re-encoded copies are flagged, honest overlap is not.

Four miners on one backend: an original, a miner that stores the original's chunks byte for byte
into its own prefix, one that re-encodes the same rows into new bytes, and an honest miner that
scraped 5% of the same posts. The audit reads listings and manifests only; a check given its
findings rejects every claim stored in a copied chunk, and says whose data it copied.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_core.audit import copy_verdicts, run_audit
from storage_core.audit.copies import load_copies, copies_document
from storage_core.chain.keys import new_keypair
from storage_core.layout import object_key
from storage_core.testing import cheats
from storage_core.testing.data import make_table, recent_day
from storage_core.testing.manifests import signed_manifest
from storage_core.testing.memory_store import MemoryStore
from storage_core.verify import CheckSettings, check_claims

BACKEND = "memory"
ROWS = 2400  # ~19 sampled URIs per chunk
T0 = datetime.now(UTC) - timedelta(days=1)


class Miner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.key = new_keypair()
        self.hotkey = self.key.ss58_address
        self.objects: dict[str, bytes] = {}
        self.times: dict[str, datetime] = {}

    def store(self, table: pa.Table, at: datetime, data: bytes | None = None) -> str:
        planted = cheats.honest(self.hotkey, table) if data is None else cheats.planted(self.hotkey, table, data, "")
        self.objects[planted.key] = planted.data
        self.times[planted.key] = at
        return planted.key

    def publish(self, at: datetime) -> None:
        key, data = signed_manifest(self.objects, self.hotkey, self.key, BACKEND)
        self.objects[key] = data
        self.times[key] = at

    def store_for(self) -> MemoryStore:
        return MemoryStore(self.objects, self.hotkey, self.times)

    def claims(self, count: int = 12) -> list[str]:
        uris = sorted(uri for key, data in self.objects.items() if key.endswith(".parquet")
                      for uri in pq.ParquetFile(io.BytesIO(data)).read(columns=["uri"]).column("uri").to_pylist())
        return uris[:: len(uris) // count][:count]


@pytest.fixture(scope="module")
def subnet() -> dict[str, Miner]:
    original, byte_copier, reencoder, honest = (Miner(n) for n in ("original", "bytes", "re-encoded", "honest"))
    tables = [make_table(ROWS, source, seed=40 + day, day=recent_day(day)) for day in (1, 2) for source in ("x",)]
    for table in tables:
        original.store(table, T0)
    original.publish(T0)
    for key, data in original.objects.items():  # the same bytes, under the copier's own prefix
        if key.endswith(".parquet"):
            name = key.split("/", 1)[1]
            byte_copier.objects[f"hotkey={byte_copier.hotkey}/{name}"] = data
            byte_copier.times[f"hotkey={byte_copier.hotkey}/{name}"] = T0 + timedelta(hours=2)
    byte_copier.publish(T0 + timedelta(hours=2))
    for table in tables:  # the same rows in new bytes: another row-group size and one more metadata key
        metadata = {**(table.schema.metadata or {}), b"copied": b"no, really"}
        data = cheats.parquet_bytes(table.replace_schema_metadata(metadata), row_group_size=700)
        reencoder.store(table, T0 + timedelta(hours=3), data)
    reencoder.publish(T0 + timedelta(hours=3))
    for index, table in enumerate(tables):  # an honest scrape sharing 5% of the posts, stored later
        own = make_table(ROWS, "x", seed=90 + index, day=recent_day(index + 1))
        shared = table.slice(0, ROWS // 20)
        honest.store(pa.concat_tables([own.slice(0, ROWS - len(shared)), shared]), T0 + timedelta(hours=4))
    honest.publish(T0 + timedelta(hours=4))
    return {m.name: m for m in (original, byte_copier, reencoder, honest)}


def _audit(subnet: dict[str, Miner]):  # type: ignore[no-untyped-def]
    miners = {m.hotkey: m for m in subnet.values()}
    return run_audit(lambda backend, hotkey: miners[hotkey].store_for(), [BACKEND], sorted(miners))


def test_the_audit_flags_byte_and_reencoded_copies_and_not_honest_overlap(subnet: dict[str, Miner]) -> None:
    report = _audit(subnet)
    by_copier: dict[str, set[str]] = {}
    for copy in report.copies:
        by_copier.setdefault(copy.copier, set()).add(copy.kind)
        assert copy.original == subnet["original"].hotkey
    assert by_copier == {subnet["bytes"].hotkey: {"byte"}, subnet["re-encoded"].hotkey: {"re-encoded"}}
    audits = {m.hotkey: m for m in report.miners}
    assert audits[subnet["bytes"].hotkey].copied_chunks == 2 and audits[subnet["re-encoded"].hotkey].copied_chunks == 2
    assert audits[subnet["honest"].hotkey].copied_chunks == 0 and audits[subnet["original"].hotkey].copied_chunks == 0
    assert all(m.manifest_round == 0 and m.problem is None and m.rows == 2 * ROWS for m in report.miners)
    # Listing and manifest headers only: far less than the chunks themselves.
    chunk_bytes = sum(len(d) for m in subnet.values() for k, d in m.objects.items() if k.endswith(".parquet"))
    assert report.bytes_read < chunk_bytes / 4


def test_a_check_given_the_audit_rejects_claims_in_copied_chunks(subnet: dict[str, Miner]) -> None:
    copies = load_copies(copies_document(_audit(subnet).copies))
    for name in ("bytes", "re-encoded"):
        miner = subnet[name]
        claims = miner.claims()
        plain = check_claims(miner.store_for(), BACKEND, miner.hotkey, claims, CheckSettings(seed="s"))
        assert plain.found == set(claims)  # every byte is sound: only the comparison across miners catches it
        result = check_claims(miner.store_for(), BACKEND, miner.hotkey, claims, CheckSettings(seed="s", copies=copies))
        assert not result.found and set(result.rejected) == set(claims)
        assert all(f"stored earlier by {subnet['original'].hotkey}" in why for why in result.rejected.values())
    for name in ("original", "honest"):
        miner = subnet[name]
        claims = miner.claims()
        result = check_claims(miner.store_for(), BACKEND, miner.hotkey, claims, CheckSettings(seed="s", copies=copies))
        assert result.found == set(claims)


def test_a_store_without_times_decides_no_byte_copy(subnet: dict[str, Miner]) -> None:
    """Who was first is the store's word only: with no recorded times, nobody is called a copier."""
    miners = {m.hotkey: m for m in subnet.values()}
    report = run_audit(lambda backend, hotkey: MemoryStore(miners[hotkey].objects, hotkey), [BACKEND], sorted(miners))
    assert not report.copies


def test_copies_files_are_checked() -> None:
    with pytest.raises(ValueError, match="not a copies file"):
        load_copies({"format": "something else"})
    with pytest.raises(ValueError, match="must map object keys"):
        load_copies({"format": "storage-core-copies/1", "copies": ["a"]})
    key = object_key(new_keypair().ss58_address, "x", "2026-12-01", "ab" * 32)
    assert load_copies({"format": "storage-core-copies/1", "copies": {key: "copy"}}) == {key: "copy"}
    assert copy_verdicts([]) == {}


def test_a_small_reencoding_copier_is_judged_and_a_small_honest_miner_is_not_flagged() -> None:
    """Many hotkeys that each copy a few hundred rows: each still has enough sampled URIs to be judged
    (one URI in 32 is sampled), while a small honest miner sharing 5% of its posts is not flagged."""
    original, copier, honest = Miner("original"), Miner("small copier"), Miner("small honest")
    table = make_table(ROWS, "x", seed=61, day=recent_day(1))
    original.store(table, T0)
    original.publish(T0)
    copied = table.slice(0, 400)  # a few hundred rows, in new bytes
    copier.store(copied, T0 + timedelta(hours=1),
                 cheats.parquet_bytes(copied.replace_schema_metadata({**(copied.schema.metadata or {}), b"x": b"y"})))
    copier.publish(T0 + timedelta(hours=1))
    own = make_table(400, "x", seed=62, day=recent_day(1))
    honest.store(pa.concat_tables([own.slice(0, 380), table.slice(1000, 20)]), T0 + timedelta(hours=2))
    honest.publish(T0 + timedelta(hours=2))
    report = _audit({m.name: m for m in (original, copier, honest)})
    assert {(c.copier, c.original, c.kind) for c in report.copies} == {(copier.hotkey, original.hotkey, "re-encoded")}
