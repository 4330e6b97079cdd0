"""Rows stored late behind the watermark (late-scraped older posts) are exported once, crash-safely."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage_core.backends.local as local_plugin
from storage_core.config import parse_config
from storage_core.dispatch import Dispatcher
from storage_core.export import ExportOptions
from storage_core.export import ledger as ledger_module
from storage_core.export import late as late_module
from storage_core.export.digests import (
    SCHEME,
    DigestLog,
    join,
    page_digests,
    split,
    uri_digest,
)
from storage_core.export import sqlite_source
from storage_core.export.round import run_upload_round
from storage_core.export.spool import Spool
from storage_core.plugins import PluginRegistry
from storage_core.testing.minerdb import (
    DEFAULT_END,
    SOURCE_X,
    add_rows,
    create_miner_db,
    db_datetime,
    insert_rows,
    time_bucket_id,
)
from storage_core.values import BackendContext, UploadOutcome


class World:
    """One miner database, its spool, and the real Dispatcher publishing to the real ``local`` backend."""

    def __init__(self, tmp_path: Path, hotkey: str) -> None:
        self.hotkey = hotkey
        self.root = tmp_path / "store"
        registry = PluginRegistry(points=[], environ={}, extra_plugins={"local": local_plugin})
        config = parse_config({"backends": {"local": {"enabled": True, "rollout_percent": 100}}})
        self.dispatcher = Dispatcher(
            registry, config, lambda b: BackendContext(backend_id=b, options={"root": str(self.root)})
        )
        self.backends = self.dispatcher.upload_backends(hotkey)
        self.db = create_miner_db(tmp_path / "miner.sqlite", 600, seed=71, days=3).path
        self.spool = Spool(tmp_path / "spool")

    def round(self, publish=None, options: ExportOptions = ExportOptions()):
        return run_upload_round(self.db, self.spool, self.backends, publish or self.dispatcher.upload,
                                miner_hotkey=self.hotkey, options=options)

    def stored(self) -> Counter:
        counts: Counter = Counter()
        for path in self.root.rglob("*.parquet"):
            counts.update(pq.ParquetFile(path).read(columns=["uri"]).column("uri").to_pylist())
        return counts

    def uris(self) -> set[str]:
        connection = sqlite3.connect(self.db)
        try:
            return {uri for (uri,) in connection.execute("SELECT uri FROM DataEntity")}
        finally:
            connection.close()

    def assert_stored_once(self, missing: set[str] = frozenset()) -> None:
        stored = self.stored()
        assert set(stored) == self.uris() - missing
        assert max(stored.values()) == 1


@pytest.fixture
def world(tmp_path, miner_keys):
    world = World(tmp_path, miner_keys[2].ss58_address)
    yield world
    world.spool.close()


OLD = DEFAULT_END - timedelta(days=10)  # well behind any watermark of the generated rows


def test_late_rows_are_exported_by_the_next_round_exactly_once(world):
    first = world.round()
    assert first.rows_exported == 600
    mark = world.spool.watermark()

    add_rows(world.db, 150, seed=72, end=OLD, days=1)
    second = world.round()
    assert second.rows_exported == 150 and second.chunks_exported >= 1
    assert second.backend("local").status == "ok"
    assert world.spool.watermark() == mark  # nothing new after the watermark: it does not move
    world.assert_stored_once()

    third = world.round()
    assert third.rows_exported == 0 and third.chunks_exported == 0
    world.assert_stored_once()


def test_late_and_new_rows_in_one_round_each_go_once(world):
    world.round()
    add_rows(world.db, 80, seed=73, end=OLD, days=2)
    add_rows(world.db, 40, seed=74, end=DEFAULT_END + timedelta(days=1), days=0.5)
    result = world.round()
    assert result.rows_exported == 120
    world.assert_stored_once()
    assert world.round().rows_exported == 0


def test_a_late_row_in_the_watermarks_own_hour_waits_until_the_watermark_leaves_it(world):
    world.round()
    mark = world.spool.watermark()
    when = mark.datetime - timedelta(microseconds=1)
    assert time_bucket_id(when) == mark.time_bucket_id  # the generated newest row is not on an hour boundary
    add_rows(world.db, 1, seed=75, at=when)
    world.round()  # the watermark's hour is the incremental export's: the row waits
    add_rows(world.db, 30, seed=76, end=DEFAULT_END + timedelta(hours=5), days=0.1)  # the watermark moves on
    world.round()
    world.round()
    world.assert_stored_once()


def test_undecodable_late_rows_are_skipped_once_not_retried(world):
    world.round()
    when = OLD
    body = b"{not json"
    insert_rows(world.db, iter([("https://x.com/late/status/1", db_datetime(when), time_bucket_id(when), SOURCE_X,
                                 "NULL", body, len(body))]))
    second = world.round()
    assert second.skipped_rows == 1 and second.skipped_uris == ("https://x.com/late/status/1",)
    third = world.round()
    assert third.skipped_rows == 0 and third.rows_exported == 0
    world.assert_stored_once(missing={"https://x.com/late/status/1"})


def test_a_crash_inside_the_ledger_commit_loses_and_duplicates_nothing(world, monkeypatch):
    world.round()
    add_rows(world.db, 120, seed=77, end=OLD, days=1)

    def crash(*_args, **_kwargs):
        raise RuntimeError("killed during the ledger commit")

    with monkeypatch.context() as patched:
        patched.setattr(ledger_module, "_merge_bucket", crash)
        with pytest.raises(RuntimeError, match="killed during the ledger commit"):
            world.round()
    # The transaction rolled back: the chunk files are there, the ledger does not know them.
    known = world.spool.ledger.known_files()
    assert {p.name for p in world.spool.chunk_dir.glob("*.parquet")} - known
    assert world.stored().total() == 600

    result = world.round()
    assert result.rows_exported == 120
    world.assert_stored_once()
    assert world.round().rows_exported == 0


def test_a_crash_after_the_commit_uploads_later_without_re_export(world):
    world.round()
    add_rows(world.db, 90, seed=78, end=OLD, days=1)

    def down(batch, backends):
        return [UploadOutcome(name, "failed", error="killed before the upload") for name in backends]

    second = world.round(down)
    assert second.rows_exported == 90 and second.backend("local").still_owed_files >= 1
    third = world.round()
    assert third.rows_exported == 0 and third.backend("local").files == second.chunks_exported
    world.assert_stored_once()


def _traced(monkeypatch) -> list[str]:
    """Every SQL statement run against the miner database."""
    statements: list[str] = []
    original = sqlite_source.MinerDatabase.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._connection.set_trace_callback(statements.append)

    monkeypatch.setattr(sqlite_source.MinerDatabase, "__init__", init)
    return statements


def test_no_late_rows_costs_one_index_query_and_no_chunks(world, monkeypatch):
    world.round()
    add_rows(world.db, 25, seed=79, end=DEFAULT_END + timedelta(days=1), days=0.5)  # only new rows
    statements = _traced(monkeypatch)
    result = world.round()
    assert result.rows_exported == 25
    behind = [s for s in statements if "timeBucketId <" in s]
    assert len(behind) == 1 and "GROUP BY timeBucketId" in behind[0]
    assert not [s for s in statements if "SELECT uri FROM DataEntity WHERE timeBucketId =" in s]
    assert not [s for s in statements if "json_each" in s and "uri IN" in s]

    statements.clear()
    idle = world.round()
    assert idle.rows_exported == 0 and idle.chunks_exported == 0
    assert len([s for s in statements if "timeBucketId <" in s]) == 1
    world.assert_stored_once()


def test_deleted_old_rows_are_re_baselined_not_exported(world, monkeypatch):
    world.round()
    connection = sqlite3.connect(world.db)
    with connection:
        gone = connection.execute("SELECT COUNT(*) FROM DataEntity WHERE datetime < ?",
                                  (db_datetime(DEFAULT_END - timedelta(days=2)),)).fetchone()[0]
        connection.execute("DELETE FROM DataEntity WHERE datetime < ?",
                           (db_datetime(DEFAULT_END - timedelta(days=2)),))
        counts = dict(connection.execute("SELECT timeBucketId, COUNT(*) FROM DataEntity GROUP BY timeBucketId"))
    connection.close()
    assert gone > 0
    assert world.round().rows_exported == 0
    recorded = world.spool.ledger.bucket_counts()
    watermark_bucket = world.spool.watermark().time_bucket_id
    assert {b: n for b, n in recorded.items() if n} == counts | {watermark_bucket: recorded[watermark_bucket]}
    statements = _traced(monkeypatch)
    assert world.round().rows_exported == 0
    assert not [s for s in statements if "SELECT uri FROM DataEntity WHERE timeBucketId =" in s]


def test_a_ledger_from_before_bucket_records_is_baselined_then_tracked(world):
    world.round()
    ledger = sqlite3.connect(world.spool.ledger.path)
    with ledger:  # what a ledger written before this check looks like
        ledger.execute("DELETE FROM buckets")
        ledger.execute("DELETE FROM state WHERE name = 'buckets_tracked'")
    ledger.close()
    assert not world.spool.ledger.buckets_tracked()

    first = world.round()  # baseline: everything already held counts as done
    assert first.rows_exported == 0 and world.spool.ledger.buckets_tracked()
    add_rows(world.db, 60, seed=80, end=OLD, days=1)
    add_rows(world.db, 20, seed=81, end=DEFAULT_END + timedelta(days=1), days=0.5)
    assert world.round().rows_exported == 80
    assert world.round().rows_exported == 0
    world.assert_stored_once()


def test_digest_log_spills_past_its_memory_bound_and_keeps_every_digest(tmp_path):
    uris = [f"https://x.com/u/status/{i}" for i in range(1_000)]
    buckets = [500_000 + i % 7 for i in range(1_000)]
    log = DigestLog(tmp_path, memory_bytes=256)
    for start in range(0, 1_000, 50):
        page_uris, page_buckets = uris[start : start + 50], buckets[start : start + 50]
        log.add_digests(page_digests(pa.array(page_uris), pa.array(page_buckets)))
    frames = list(log.frames())
    assert len(frames) > 7  # spilled: buckets appear in several frames
    got: dict[int, set[bytes]] = {}
    for bucket, blob in frames:
        got.setdefault(bucket, set()).update(split(blob))
    expected = {b: {uri_digest(u) for u, ub in zip(uris, buckets) if ub == b} for b in range(500_000, 500_007)}
    assert got == expected
    log.close()
    assert list(log.frames()) == []


def test_a_round_whose_digests_spill_to_disk_records_them_all(world):
    tiny = ExportOptions(digest_memory_bytes=512)
    assert world.round(options=tiny).rows_exported == 600
    connection = sqlite3.connect(world.db)
    counts = dict(connection.execute("SELECT timeBucketId, COUNT(*) FROM DataEntity GROUP BY timeBucketId"))
    connection.close()
    assert world.spool.ledger.bucket_counts() == counts
    add_rows(world.db, 70, seed=82, end=OLD, days=1)
    assert world.round(options=tiny).rows_exported == 70
    assert world.round(options=tiny).rows_exported == 0
    world.assert_stored_once()


def test_a_row_whose_datetime_is_not_a_date_is_skipped_by_name_once(world):
    first = world.round()
    assert first.rows_exported == 600
    moment = OLD + timedelta(hours=1)
    bad_uri = "https://x.com/odd/status/1"
    connection = sqlite3.connect(world.db)
    connection.execute("INSERT INTO DataEntity VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (bad_uri, "yesterday", time_bucket_id(moment), SOURCE_X, "NULL", b"{}", 2))
    connection.commit()
    connection.close()
    second = world.round()
    assert second.rows_exported == 0 and second.skipped_uris == (bad_uri,)
    third = world.round()  # recorded with the bucket: not read again
    assert third.rows_exported == 0 and third.skipped_uris == ()
    world.assert_stored_once(missing={bad_uri})


