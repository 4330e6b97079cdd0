"""The generated miner database matches what subnet 13 miners write."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime

from storage_core.testing.minerdb import TABLE_SQL, add_rows, create_miner_db, time_bucket_id


def _digest(path) -> str:
    connection = sqlite3.connect(path)
    digest = hashlib.sha256()
    for row in connection.execute("SELECT * FROM DataEntity ORDER BY uri"):
        digest.update(repr(row).encode())
    connection.close()
    return digest.hexdigest()


def test_table_index_and_journal_match_the_miner(tmp_path):
    summary = create_miner_db(tmp_path / "miner.sqlite", 500, seed=1)
    connection = sqlite3.connect(summary.path)
    sql = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'DataEntity'").fetchone()[0]
    assert sql == TABLE_SQL.replace("IF NOT EXISTS ", "")
    indexes = [row[1] for row in connection.execute("PRAGMA index_list(DataEntity)")]
    assert "data_entity_bucket_index2" in indexes
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert summary.rows == 500 and summary.x_rows + summary.reddit_rows == 500
    assert 150 < summary.x_rows < 350  # mixed sources


def test_rows_look_like_real_x_and_reddit_rows(tmp_path):
    summary = create_miner_db(tmp_path / "miner.sqlite", 400, seed=2)
    connection = sqlite3.connect(summary.path)
    low, high = connection.execute(
        "SELECT MIN(contentSizeBytes), MAX(contentSizeBytes) FROM DataEntity"
    ).fetchone()
    assert 400 <= low and high <= 2500  # every field of the content models, as SN13 stores them
    for uri, when, bucket, source, label, content, size in connection.execute("SELECT * FROM DataEntity"):
        parsed = datetime.fromisoformat(when)
        assert parsed.tzinfo is not None and when.endswith("+00:00")
        assert bucket == time_bucket_id(parsed)
        assert size == len(content)
        post = json.loads(content)
        assert post["url"] == uri
        if source == 2:
            assert set(post) >= {"username", "text", "url", "timestamp", "tweet_hashtags"}
            assert label == (post["tweet_hashtags"][0].lower() if post["tweet_hashtags"] else "NULL")
        else:
            assert source == 1
            assert set(post) >= {"id", "url", "username", "communityName", "body", "createdAt", "dataType"}
            assert label == post["communityName"].lower()


def test_same_seed_same_database_and_add_rows_extends(tmp_path):
    first = create_miner_db(tmp_path / "a.sqlite", 300, seed=7)
    second = create_miner_db(tmp_path / "b.sqlite", 300, seed=7)
    assert _digest(first.path) == _digest(second.path)
    at = datetime(2026, 11, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert add_rows(first.path, 25, seed=8, at=at) == 25
    connection = sqlite3.connect(first.path)
    assert connection.execute("SELECT COUNT(*) FROM DataEntity").fetchone()[0] == 325
    assert connection.execute(
        "SELECT COUNT(*) FROM DataEntity WHERE datetime = ?", ("2026-11-02 03:04:05.678901+00:00",)
    ).fetchone()[0] == 25


def test_undecodable_rows_are_listed(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 50, seed=3, undecodable=4)
    assert summary.rows == 54 and len(summary.undecodable_uris) == 4
