"""Read the miner's ``DataEntity`` table without ever getting in the way of the miner's own writers.

The connection is read-only (``mode=ro``) and every query is its own short read transaction, so in WAL
mode the miner keeps writing and checkpointing while we export. The table has no index on ``datetime``;
the miner's ``(timeBucketId, source, label, contentSizeBytes)`` index gives cheap per-hour counts and
range scans, so the export walks hour buckets in order and sorts only one page at a time.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_manager
import pyarrow as pa

from storage_core.errors import StorageCoreError
from storage_core.export.arrow_queries import ArrowQueries, Param
from storage_core.export.watermark import Watermark

log = logging.getLogger(__name__)

TABLE = "DataEntity"
REQUIRED_COLUMNS = ("uri", "datetime", "timeBucketId", "source", "label", "content", "contentSizeBytes")


class MinerDatabaseError(StorageCoreError):
    """The miner database cannot be exported (missing file, table or column); the message names it."""


class MinerDatabase:
    """A read-only view of one miner database file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._arrow: ArrowQueries | None = None
        if not self.path.is_file():
            raise MinerDatabaseError(f"miner database {self.path} does not exist")
        try:
            self._connection = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s, check_same_thread=False
            )
            # Autocommit: each SELECT is its own short read transaction (never a long-lived snapshot).
            self._connection.isolation_level = None
            self._check_schema()
        except sqlite3.DatabaseError as error:
            raise MinerDatabaseError(f"cannot read miner database {self.path}: {error}") from error

    def close(self) -> None:
        self._connection.close()
        if self._arrow is not None:
            self._arrow.close()
            self._arrow = None

    def __enter__(self) -> MinerDatabase:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check_schema(self) -> None:
        columns = {row[1] for row in self._connection.execute(f"PRAGMA table_info({TABLE})")}
        if not columns:
            raise MinerDatabaseError(f"miner database {self.path} has no table {TABLE!r}")
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise MinerDatabaseError(
                f"miner database {self.path}: table {TABLE!r} has no column {', '.join(map(repr, missing))}"
            )
        indexed = any(
            info[2] == "timeBucketId"
            for index in self._connection.execute(f"PRAGMA index_list({TABLE})")
            for info in self._connection.execute(f"PRAGMA index_info({index[1]!r})").fetchall()[:1]
        )
        if not indexed:
            log.warning("%s: no index starts with timeBucketId; every export page is a full table scan", self.path)

    def bucket_counts(self, since: Watermark | None = None) -> list[tuple[int, int]]:
        """``(timeBucketId, rows)`` for every hour bucket at or after the watermark's, from the index alone."""
        first = since.time_bucket_id if since else -(2**62)
        return self._connection.execute(
            f"SELECT timeBucketId, COUNT(*) FROM {TABLE} WHERE timeBucketId >= ? GROUP BY timeBucketId "
            "ORDER BY timeBucketId",
            (first,),
        ).fetchall()

    def bucket_counts_before(self, bucket: int) -> list[tuple[int, int]]:
        """``(timeBucketId, rows)`` for every hour bucket before ``bucket``: one pass over the index only."""
        return self._connection.execute(
            f"SELECT timeBucketId, COUNT(*) FROM {TABLE} WHERE timeBucketId < ? GROUP BY timeBucketId "
            "ORDER BY timeBucketId",
            (bucket,),
        ).fetchall()

    def bucket_uris(self, bucket: int) -> list[str]:
        """The URIs of one hour bucket, from the index alone (a WITHOUT ROWID index carries the key)."""
        return [_text(uri) for (uri,) in self._connection.execute(
            f"SELECT uri FROM {TABLE} WHERE timeBucketId = ?", (bucket,)
        )]

    def iter_rows_by_uri(self, uris: list[str], page_rows: int) -> Iterator[pa.Table]:
        """The rows of these URIs (primary-key lookups), a page at a time; vanished URIs are left out."""
        for start in range(0, len(uris), page_rows):
            page = self._arrow_table(
                f"SELECT {PAGE_COLUMNS} FROM {TABLE} AS e WHERE e.uri IN (SELECT value FROM json_each(?)) "
                "ORDER BY e.uri",
                [json.dumps(uris[start : start + page_rows])],
                page_rows,
            )
            if page.num_rows:
                yield page

    def total_rows(self) -> int:
        """Rows in the table (counted on the smallest index, not the content)."""
        return self._connection.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

    def last_in_bucket(self, bucket: int) -> str | None:
        """The greatest datetime text of one hour bucket: the upper bound of an export ending there.

        Only texts shaped like a date count: one stray value such as "yesterday" sorts after every
        real datetime and, as the watermark, would end all later exports. Such rows are left to the
        late-row check, which skips them by name.
        """
        row = self._connection.execute(
            f"SELECT MAX(datetime) FROM {TABLE} WHERE timeBucketId = ? AND datetime GLOB ?", (bucket, _DATE_SHAPE)
        ).fetchone()
        return _text(row[0]) if row and row[0] is not None else None

    def iter_index_pages(
        self, since: Watermark | None, upper: str, last_bucket: int, page_rows: int
    ) -> Iterator[pa.Table]:
        """Pages in (datetime, uri) order through the hour-bucket index: cheap for a few new rows.

        Consecutive hour buckets are grouped so that each query returns about one page; a bucket
        bigger than a page is read in several keyset pages, so memory stays bounded either way.
        Each row costs a primary-key lookup (~15 us), so a large export uses ``iter_scan_pages``.
        """
        ranges: list[tuple[int, int]] = []
        start, previous, total = None, 0, 0
        for bucket, rows in self.bucket_counts(since):
            if bucket > last_bucket:
                break
            if start is not None and total + rows > page_rows:
                ranges.append((start, previous))
                start, total = None, 0
            if start is None:
                start = bucket
            total += rows
            previous = bucket
        if start is not None:
            ranges.append((start, previous))
        for first, last in ranges:
            where = "e.timeBucketId BETWEEN ? AND ?"
            params: list[Param] = [first, last]
            while True:
                page = self._query(where, params, since, upper, "e.datetime, e.uri", page_rows)
                if page.num_rows:
                    yield page
                if page.num_rows < page_rows:
                    break
                text, uri = _last(page, "datetime"), _last(page, "uri")
                where = "e.timeBucketId BETWEEN ? AND ? AND (e.datetime > ? OR (e.datetime = ? AND e.uri > ?))"
                params = [first, last, text, text, uri]

    def iter_scan_pages(self, since: Watermark | None, upper: str, page_rows: int) -> Iterator[pa.Table]:
        """Pages in primary-key order: one sequential pass over the table, ~7x cheaper per row than lookups.

        Each page is its own query (keyset on ``uri``), so no read transaction outlives a page. URIs
        start with the source's host, so a page in uri order holds one source, or two runs of them.
        """
        last_uri = ""
        while True:
            # "+timeBucketId" keeps the planner on the primary key instead of the bucket index.
            params: list[Param] = [last_uri, -(2**62)]
            page = self._query("e.uri > ? AND +e.timeBucketId >= ?", params, since, upper, "e.uri", page_rows)
            if page.num_rows:
                yield page
                last_uri = _last(page, "uri")
            if page.num_rows < page_rows:
                break

    def _query(
        self,
        where: str,
        params: list[Param],
        since: Watermark | None,
        upper: str,
        order: str,
        limit: int,
    ) -> pa.Table:
        sql = f"SELECT {PAGE_COLUMNS} FROM {TABLE} AS e WHERE {where}"
        if since is not None:
            sql += " AND (e.datetime > ? OR (e.datetime = ? AND e.uri NOT IN (SELECT value FROM json_each(?))))"
            params = params + [since.text, since.text, since.uris_json()]
        sql += f" AND e.datetime <= ? ORDER BY {order} LIMIT ?"
        return self._arrow_table(sql, params + [upper, limit], limit)

    def _arrow_table(self, sql: str, params: list[Param], batch_rows: int) -> pa.Table:
        """A query through the Arrow connection (opened on first use); its errors name the database."""
        try:
            if self._arrow is None:
                self._arrow = ArrowQueries(self.path, busy_timeout_s=self._busy_timeout_s)
            return self._arrow.table(sql, params, batch_rows=batch_rows)
        except adbc_driver_manager.Error as error:
            raise MinerDatabaseError(f"cannot read miner database {self.path}: {error}") from error


#: The columns of a page, each pinned to one type (see ``arrow_queries``); the table is aliased ``e``
#: because these names shadow its columns in ORDER BY. ``label`` is the text "NULL" when there is none.
#: Each content gets a trailing newline, so the content column's values buffer is already JSON lines
#: for Arrow's reader (SQLite appends it while copying the value out anyway).
PAGE_COLUMNS = (
    "CAST(e.uri AS TEXT) AS uri, CAST(e.datetime AS TEXT) AS datetime, CAST(e.source AS INTEGER) AS source, "
    "CAST(COALESCE(e.label, 'NULL') AS TEXT) AS label, CAST(e.content || X'0A' AS BLOB) AS content, "
    "CAST(e.contentSizeBytes AS INTEGER) AS content_size_bytes, CAST(e.timeBucketId AS INTEGER) AS bucket"
)


#: A GLOB for the start of an ISO 8601 date (YYYY-MM-DD).
_DATE_SHAPE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def _last(page: pa.Table, column: str) -> str:
    return str(page.column(column)[page.num_rows - 1].as_py())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
