"""Rows the miner's code does not write but a database may still hold: each is exported right or skipped by name.

The fast path reads pages into Arrow with every column pinned to one type; these cases are the ones
that could trip that (type inference on NULLs, text where a blob is expected) or the JSON-lines trick
(a post spread over several lines), so each is checked against the decoded value.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from storage_core.export import ExportOptions, export
from storage_core.testing.minerdb import create_schema, db_datetime, time_bucket_id

DAY = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _x(index: int) -> dict:
    return {"username": f"user{index}", "text": f"post {index}", "url": f"https://x.com/user{index}/status/{index}",
            "timestamp": (DAY + timedelta(seconds=index)).isoformat(), "tweet_hashtags": ["#a"]}


def _insert(path, rows) -> None:
    connection = sqlite3.connect(path)
    create_schema(connection)
    connection.executemany("INSERT INTO DataEntity VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()


def _row(index: int, *, label: object = "#a", content: object = None, when: object = None, source: int = 2):
    moment = DAY + timedelta(seconds=index)
    body = content if content is not None else json.dumps(_x(index)).encode()
    return (f"https://x.com/user{index}/status/{index}", when if when is not None else db_datetime(moment),
            time_bucket_id(moment), source, label, body, 100)


def _exported(path, tmp_path, **options) -> tuple[dict[str, dict], object]:
    result = export(path, tmp_path / "out", options=ExportOptions(**options))
    rows = {row["uri"]: row for f in result.files for row in pq.read_table(f.path).to_pylist()}
    return rows, result


@pytest.mark.parametrize("page_rows", [4, 4_096])
def test_null_labels_before_text_labels_keep_their_types(tmp_path, page_rows):
    """The Arrow driver infers types per page: a page that starts with NULL labels must still read text."""
    path = tmp_path / "m.sqlite"
    _insert(path, [_row(i, label=None if i < 10 else f"#l{i}") for i in range(20)])
    rows, result = _exported(path, tmp_path, page_rows=page_rows, scan_fraction=0.0)
    assert result.rows == 20 and result.skipped_count == 0
    assert [rows[_row(i)[0]]["label"] for i in range(20)] == [None] * 10 + [f"#l{i}" for i in range(10, 20)]


def test_label_text_null_means_no_label(tmp_path):
    path = tmp_path / "m.sqlite"
    _insert(path, [_row(0, label="NULL"), _row(1, label="#x")])
    rows, _ = _exported(path, tmp_path)
    assert rows[_row(0)[0]]["label"] is None and rows[_row(1)[0]]["label"] == "#x"


def test_content_stored_as_text_and_pretty_printed_json_decode(tmp_path):
    path = tmp_path / "m.sqlite"
    _insert(path, [
        _row(0, content=json.dumps(_x(0))),  # TEXT, not BLOB
        _row(1, content=json.dumps(_x(1), indent=2).encode()),  # newlines inside one post
        _row(2),
    ])
    rows, result = _exported(path, tmp_path)
    assert result.skipped_count == 0
    for index in range(3):
        row = rows[_row(index)[0]]
        assert (row["username"], row["text"], row["url"]) == (f"user{index}", f"post {index}", _x(index)["url"])


def test_naive_datetime_text_is_read_as_utc(tmp_path):
    path = tmp_path / "m.sqlite"
    naive = (DAY + timedelta(seconds=5)).replace(tzinfo=None).isoformat(sep=" ")
    _insert(path, [_row(5, when=naive), _row(6)])
    rows, result = _exported(path, tmp_path)
    assert result.rows == 2
    assert rows[_row(5)[0]]["datetime"] == DAY + timedelta(seconds=5)


def test_unknown_source_and_two_posts_on_one_line_are_skipped_by_name(tmp_path):
    path = tmp_path / "m.sqlite"
    two = (json.dumps(_x(1)) + json.dumps(_x(1))).encode()
    _insert(path, [_row(0, source=7), _row(1, content=two), _row(2, content=b""), _row(3)])
    rows, result = _exported(path, tmp_path)
    assert set(rows) == {_row(3)[0]}
    reasons = {skip.uri: skip.reason for skip in result.skipped}
    assert reasons[_row(0)[0]] == "unknown DataEntity.source 7"
    assert "not a valid x post" in reasons[_row(1)[0]] and "not a valid x post" in reasons[_row(2)[0]]
    assert result.rows_read == 4


def test_a_datetime_that_is_not_iso_8601_skips_its_row_and_never_becomes_the_watermark(tmp_path):
    path = tmp_path / "m.sqlite"
    _insert(path, [_row(0, when=1_700_000_000), _row(1, when="yesterday"), _row(2)])
    rows, result = _exported(path, tmp_path)
    assert set(rows) == {_row(2)[0]}
    assert {skip.uri: skip.reason for skip in result.skipped} == {
        _row(0)[0]: "datetime '1700000000' is not an ISO 8601 datetime"}
    # "yesterday" sorts after every real datetime: as the watermark it would end all later exports.
    # It is left to the late-row check of the next round (tests/test_late_rows.py).
    assert result.watermark is not None and result.watermark.text == _row(2)[1]
    _insert(path, [_row(10)])
    later = export(path, tmp_path / "later", since=result.watermark)
    assert later.rows == 1
