"""The export: rows after a watermark -> one-source, one-day, content-addressed chunks; bad input named."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet

from storage_core.chunks import describe_chunk, sha256_file, verify_staged_file
from storage_core.export import ExportOptions, FieldEncoder, MinerDatabaseError, Watermark, export
from storage_core.export import sqlite_source
from storage_core.export.encoding import decode_value
from storage_core.testing.minerdb import DEFAULT_END, TABLE_SQL, add_rows, create_miner_db


@pytest.fixture
def miner_db(tmp_path):
    return create_miner_db(tmp_path / "miner.sqlite", 1_500, seed=11, undecodable=4)


def _uris(files) -> Counter:
    counts: Counter = Counter()
    for staged in files:
        counts.update(pq.read_table(staged.path, columns=["uri"]).column("uri").to_pylist())
    return counts


def _all_uris(path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT uri FROM DataEntity")}
    finally:
        connection.close()


def test_every_decodable_row_lands_in_exactly_one_chunk(miner_db, tmp_path):
    result = export(miner_db.path, tmp_path / "out")
    counts = _uris(result.files)
    expected = _all_uris(miner_db.path) - set(miner_db.undecodable_uris)
    assert set(counts) == expected and max(counts.values()) == 1
    assert result.rows == len(expected) == sum(f.rows for f in result.files)
    assert result.rows_read == miner_db.rows
    for staged in result.files:
        verify_staged_file(staged)  # size, sha256 and schema as described
        assert staged.path.name == f"{staged.sha256}.parquet" and sha256_file(staged.path) == staged.sha256
        assert describe_chunk(staged.path) == staged
        table = pq.read_table(staged.path)
        assert set(table.column("source").to_pylist()) == {staged.source}
        assert {d.date().isoformat() for d in table.column("datetime").to_pylist()} == {staged.date}
        uris = table.column("uri").to_pylist()
        assert uris == sorted(uris)  # row-group statistics on uri let a checker skip most of a file


def test_undecodable_rows_are_skipped_counted_and_named(miner_db, tmp_path):
    result = export(miner_db.path, tmp_path / "out")
    assert result.skipped_count == 4
    assert {row.uri for row in result.skipped} == set(miner_db.undecodable_uris)
    assert all("not a valid x post" in row.reason for row in result.skipped)


def test_columns_hold_the_decoded_post(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 200, seed=12)
    result = export(summary.path, tmp_path / "out")
    connection = sqlite3.connect(summary.path)
    stored = {uri: (label, json.loads(content)) for uri, label, content in
              connection.execute("SELECT uri, label, content FROM DataEntity")}
    checked = set()
    for staged in result.files:
        for row in pq.read_table(staged.path).to_pylist():
            label, post = stored[row["uri"]]
            assert row["label"] == (None if label == "NULL" else label)
            assert row["url"] == post["url"] and row["username"] == post["username"]
            if staged.source == "x":
                assert row["text"] == post["text"] and row["tweet_hashtags"] == post["tweet_hashtags"]
                assert row["timestamp"] == datetime.fromisoformat(post["timestamp"].replace("Z", "+00:00"))
            else:
                assert row["community_name"] == post["communityName"] and row["body"] == post["body"]
                assert row["data_type"] == post["dataType"] and row["parent_id"] == post["parentId"]
            checked.add(staged.source)
    assert checked == {"x", "reddit"}


def _rows_by_uri(files) -> dict[str, dict]:
    return {row["uri"]: row for staged in files for row in pq.read_table(staged.path).to_pylist()}


def test_scan_index_and_memory_bound_paths_write_the_same_rows(miner_db, tmp_path):
    scan = export(miner_db.path, tmp_path / "scan", options=ExportOptions(scan_fraction=0.0))
    index = export(miner_db.path, tmp_path / "index", options=ExportOptions(scan_fraction=1.0, page_rows=97))
    tight_options = ExportOptions(memory_bytes=1, page_rows=200, row_group_rows=32)
    tight = export(miner_db.path, tmp_path / "tight", options=tight_options)
    assert (scan.method, index.method) == ("scan", "index")
    assert _rows_by_uri(scan.files) == _rows_by_uri(index.files) == _rows_by_uri(tight.files)
    assert scan.watermark == index.watermark == tight.watermark
    # With no memory to spare, buffered rows go out with every page: many row groups, the chunk still sorted.
    assert sum(pq.ParquetFile(f.path).metadata.num_row_groups for f in tight.files) > len(tight.files)
    for staged in tight.files:
        uris = pq.read_table(staged.path, columns=["uri"]).column("uri").to_pylist()
        assert uris == sorted(uris)
    assert not [p for p in (tmp_path / "tight").iterdir() if p.name.startswith(".")]  # no temporary files


def test_the_same_export_writes_the_same_files(miner_db, tmp_path):
    """Content addressing makes a re-run after a crash land on the same names."""
    options = ExportOptions(memory_bytes=64 * 1024, page_rows=300)
    first = export(miner_db.path, tmp_path / "a", options=options)
    again = export(miner_db.path, tmp_path / "b", options=options)
    assert [f.sha256 for f in first.files] == [f.sha256 for f in again.files]


def test_chunk_rows_bounds_each_file(miner_db, tmp_path):
    result = export(miner_db.path, tmp_path / "out", options=ExportOptions(chunk_rows=20))
    assert all(f.rows <= 20 for f in result.files)
    assert sum(_uris(result.files).values()) == result.rows


def test_a_bucket_bigger_than_a_page_is_read_in_keyset_pages(tmp_path):
    path = tmp_path / "m.sqlite"
    at = datetime(2026, 11, 3, 10, 0, 0, 123456, tzinfo=UTC)
    add_rows(path, 700, seed=21, at=at)
    add_rows(path, 300, seed=22)
    result = export(path, tmp_path / "out", options=ExportOptions(page_rows=64, scan_fraction=1.0))
    counts = _uris(result.files)
    assert len(counts) == 1_000 and max(counts.values()) == 1


def test_incremental_export_from_the_watermark(miner_db, tmp_path):
    first = export(miner_db.path, tmp_path / "one")
    again = export(miner_db.path, tmp_path / "two", since=first.watermark)
    assert again.files == () and again.rows == 0 and again.watermark == first.watermark
    # The miner stores more rows, some at exactly the watermark's instant (sorting before and after
    # the rows already exported at that instant), some later.
    add_rows(miner_db.path, 40, seed=31, at=first.watermark.datetime)
    add_rows(miner_db.path, 60, seed=32, end=DEFAULT_END + timedelta(days=3), days=2)
    third = export(miner_db.path, tmp_path / "three", since=first.watermark)
    assert third.rows == 100
    combined = _uris(first.files) + _uris(third.files)
    assert set(combined) == _all_uris(miner_db.path) - set(miner_db.undecodable_uris)
    assert max(combined.values()) == 1
    assert export(miner_db.path, tmp_path / "four", since=third.watermark).rows == 0


def test_since_a_datetime_takes_rows_at_or_after_it(miner_db, tmp_path):
    since_day = (DEFAULT_END - timedelta(days=5)).date().isoformat()
    since = Watermark.parse(f"{since_day}T00:00:00Z")
    result = export(miner_db.path, tmp_path / "out", since=since)
    connection = sqlite3.connect(miner_db.path)
    expected = {uri for (uri,) in connection.execute(
        "SELECT uri FROM DataEntity WHERE datetime >= ?", (f"{since_day} 00:00:00+00:00",))} - set(miner_db.undecodable_uris)
    assert set(_uris(result.files)) == expected
    assert all(f.date >= since_day for f in result.files)


def test_max_rows_stops_at_an_hour_boundary_and_the_rest_follows(miner_db, tmp_path):
    first = export(miner_db.path, tmp_path / "a", options=ExportOptions(max_rows=300))
    assert not first.complete and 0 < first.rows_read <= 300
    rest = export(miner_db.path, tmp_path / "b", since=first.watermark)
    assert rest.complete
    combined = _uris(first.files) + _uris(rest.files)
    assert len(combined) == miner_db.rows - 4 and max(combined.values()) == 1


def test_field_encoding_encrypts_url_and_username_only(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 100, seed=13)
    url_key, user_key = Fernet.generate_key(), Fernet.generate_key()
    plain = export(summary.path, tmp_path / "plain")
    coded = export(summary.path, tmp_path / "coded", options=ExportOptions(
        encoder=FieldEncoder.from_keys(url=url_key, username=user_key)))
    by_uri = {row["uri"]: row for f in plain.files for row in pq.read_table(f.path).to_pylist()}
    for staged in coded.files:
        for row in pq.read_table(staged.path).to_pylist():
            original = by_uri[row["uri"]]  # uri stays in clear: validators look rows up by it
            assert row["url"] != original["url"] and row["username"] != original["username"]
            assert decode_value(row["url"], url_key) == original["url"]
            assert decode_value(row["username"], user_key) == original["username"]
            # the subnet's format: urlsafe base64 of the Fernet token
            assert Fernet(url_key).decrypt(base64.urlsafe_b64decode(row["url"])).decode() == original["url"]
            assert row.get("text", row.get("body")) == original.get("text", original.get("body"))
    with pytest.raises(ValueError, match="Fernet key"):
        FieldEncoder.from_keys(url="not-a-key")


def test_export_reads_while_the_miner_is_writing(miner_db, tmp_path):
    writer = sqlite3.connect(miner_db.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM DataEntity WHERE source = 1")  # not committed yet
    result = export(miner_db.path, tmp_path / "out")
    assert result.rows == miner_db.rows - 4  # sees the committed state only, and does not block
    writer.execute("COMMIT")  # the miner's write goes through after the export's reads
    writer.close()


def _make_db(path, columns_sql: str | None = None):
    connection = sqlite3.connect(path)
    if columns_sql is not None:
        connection.execute(columns_sql)
    connection.commit()
    connection.close()
    return path


def test_missing_table_is_named(tmp_path):
    path = _make_db(tmp_path / "empty.sqlite", "CREATE TABLE Other (x INTEGER)")
    with pytest.raises(MinerDatabaseError, match="no table 'DataEntity'"):
        export(path, tmp_path / "out")


def test_missing_column_is_named(tmp_path):
    path = _make_db(tmp_path / "old.sqlite", TABLE_SQL.replace("label               CHAR(32)                ,", ""))
    with pytest.raises(MinerDatabaseError, match="no column 'label'"):
        export(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_file_and_garbage_file_are_named(tmp_path):
    with pytest.raises(MinerDatabaseError, match="does not exist"):
        export(tmp_path / "nope.sqlite", tmp_path / "out")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MinerDatabaseError, match="cannot read miner database"):
        export(garbage, tmp_path / "out")


def test_a_database_damaged_during_the_export_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    summary = create_miner_db(tmp_path / "m.sqlite", 600, seed=14)
    original = sqlite_source.MinerDatabase.iter_scan_pages

    def damage_then_scan(self, *args):
        with open(self.path, "r+b") as handle:  # the schema was read; now the table's pages are garbage
            handle.seek(3 * 4096)
            handle.write(b"\xff" * (self.path.stat().st_size - 3 * 4096))
        return original(self, *args)

    monkeypatch.setattr(sqlite_source.MinerDatabase, "iter_scan_pages", damage_then_scan)
    with pytest.raises(MinerDatabaseError, match=f"cannot read miner database {summary.path}") as raised:
        export(summary.path, tmp_path / "out", options=ExportOptions(page_rows=50))
    assert "malformed" in str(raised.value) or "not a database" in str(raised.value)
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())  # no chunk, no temporary file


def test_empty_database_has_nothing_to_do(tmp_path):
    path = _make_db(tmp_path / "empty.sqlite", TABLE_SQL)
    result = export(path, tmp_path / "out")
    assert result.files == () and result.rows == 0 and result.watermark is None and result.method == "none"
