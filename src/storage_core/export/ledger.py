"""The ledger: which chunk must go to which backend, who has acknowledged it, and the export watermark.

It also remembers every backend ever owed this miner's chunks (``owed_backends``) and, for a backend
selected later, its backfill (``backfills``, and ``backfill_buckets``: the rows it still lacks, see
``backfill.py``), each changed in the same transaction as the chunks it concerns.

A small SQLite database in WAL mode with ``synchronous=FULL``: recording an export (its chunks, the
backends that must hold them, the skipped rows, the digests of the rows per hour bucket) and moving
the watermark happen in one transaction,
so after a crash either both are there or neither is, and the rows are simply exported again into
the same content-addressed files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import attrs

from storage_core.export import digests
from storage_core.export.decode import SkippedRow
from storage_core.export.watermark import Watermark
from storage_core.values import StagedFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    sha256 TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    source TEXT NOT NULL,
    date TEXT NOT NULL,
    min_datetime TEXT NOT NULL,
    max_datetime TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    round_id TEXT NOT NULL,
    exported_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS targets (
    sha256 TEXT NOT NULL REFERENCES chunks(sha256),
    backend TEXT NOT NULL,
    acked_at TEXT,
    acked_via TEXT,
    backfill INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sha256, backend)
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (uri TEXT PRIMARY KEY, reason TEXT NOT NULL, round_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (bucket INTEGER PRIMARY KEY, rows INTEGER NOT NULL, digests BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS owed_backends (backend TEXT PRIMARY KEY, since TEXT NOT NULL, how TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backfills (
    backend TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    first_bucket INTEGER NOT NULL,
    upper TEXT NOT NULL,
    upper_uris TEXT NOT NULL,
    rows_total INTEGER NOT NULL,
    rows_done INTEGER NOT NULL DEFAULT 0,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    rows_dropped INTEGER NOT NULL DEFAULT 0,
    cursor INTEGER
);
CREATE TABLE IF NOT EXISTS backfill_buckets (
    backend TEXT NOT NULL, bucket INTEGER NOT NULL, digests BLOB NOT NULL, PRIMARY KEY (backend, bucket)
);
"""

#: ``state`` entry present once every hour bucket behind the watermark has a record in ``buckets``
#: (from the first export on, or from the baseline taken when a ledger older than this table is opened).
_TRACKED = "buckets_tracked"
#: ``state`` entry of a ledger older than ``owed_backends``: the backends the next round selects are taken
#: to hold the history already (nobody recorded who was owed what), so none of them is backfilled.
_BASELINE_BACKENDS = "owed_backends_baseline"

#: A backfill still sending rows, or done (every row it covers was sent, or fell out of the window).
BACKFILL_RUNNING = "running"
BACKFILL_COMPLETE = "complete"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@attrs.frozen
class ChunkTarget:
    """One backend that must hold one chunk, and whether (and through whom) it acknowledged it."""

    sha256: str
    backend: str
    acked_at: str | None
    acked_via: str | None


@attrs.frozen
class BackfillRecord:
    """One backend's backfill: the rows it covers (hour buckets from ``first_bucket`` up to ``upper``) and progress.

    ``rows_total`` is the rows recorded in those buckets when it started (an estimate of the work: rows
    the miner deleted since, or that left the freshness window, end up in ``rows_dropped``).
    """

    backend: str
    state: str
    started_at: str
    completed_at: str | None
    first_bucket: int
    upper: Watermark
    rows_total: int
    rows_done: int
    chunks_done: int
    bytes_done: int
    rows_dropped: int
    cursor: int | None  # the hour bucket worked on last (newest first)

    @property
    def complete(self) -> bool:
        return self.state == BACKFILL_COMPLETE

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state, "started_at": self.started_at, "completed_at": self.completed_at,
            "window_start": datetime.fromtimestamp(self.first_bucket * 3600, UTC).isoformat(),
            "upper": self.upper.datetime.isoformat(), "rows_total": self.rows_total, "rows_done": self.rows_done,
            "rows_dropped": self.rows_dropped, "chunks_done": self.chunks_done, "bytes_done": self.bytes_done,
            "cursor": None if self.cursor is None else datetime.fromtimestamp(self.cursor * 3600, UTC).isoformat(),
        }


class Ledger:
    """The spool's bookkeeping; every method is one short transaction."""

    def __init__(self, path: Path, chunk_dir: Path) -> None:
        self.path = Path(path)
        self.chunk_dir = Path(chunk_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        had_owed = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'owed_backends'").fetchone()
        self._db.executescript(_SCHEMA)
        self._migrate(bool(had_owed))
        # Digest frames of one commit, grouped by bucket on disk rather than in memory.
        self._db.execute("CREATE TEMP TABLE incoming (bucket INTEGER NOT NULL, digests BLOB NOT NULL)")
        self._db.execute("CREATE INDEX temp.incoming_bucket ON incoming (bucket)")

    def close(self) -> None:
        self._db.close()

    def _migrate(self, had_owed: bool) -> None:
        """Bring a ledger written before backfills up to date (new columns, and who was owed what)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(targets)")}
        if "backfill" not in columns:
            try:
                self._db.execute("ALTER TABLE targets ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0")
            except sqlite3.OperationalError as error:  # another process (status, a round) added it first
                if "duplicate column" not in str(error):
                    raise
        if had_owed:
            return
        with self._transaction() as db:
            now = _now()
            db.execute("INSERT OR IGNORE INTO owed_backends SELECT DISTINCT backend, ?, 'targets' FROM targets",
                       (now,))
            if db.execute("SELECT 1 FROM state WHERE name = 'watermark'").fetchone() is not None:
                db.execute("INSERT OR IGNORE INTO state VALUES (?, '1')", (_BASELINE_BACKENDS,))

    def _transaction(self):
        return _Transaction(self._db)

    # -- watermark -------------------------------------------------------------------------
    def watermark(self) -> Watermark | None:
        rows = dict(self._db.execute("SELECT name, value FROM state WHERE name IN ('watermark', 'watermark_uris')"))
        if "watermark" not in rows:
            return None
        return Watermark(rows["watermark"], tuple(json.loads(rows.get("watermark_uris", "[]"))))

    # -- exports ---------------------------------------------------------------------------
    def record_export(
        self,
        files: Iterable[StagedFile],
        backends: Iterable[str],
        watermark: Watermark | None,
        skipped: Iterable[SkippedRow] = (),
        round_id: str = "",
        bucket_digests: Iterable[tuple[int, bytes]] | None = None,
        bucket_keep: Mapping[int, bytes] | None = None,
    ) -> None:
        """Atomically: the chunks, who must hold them, the skipped rows, the bucket records, the watermark.

        ``bucket_digests`` (``(bucket, digest blob)`` frames of the rows read, a bucket possibly in several)
        are added to the buckets' records; ``bucket_keep`` first replaces a bucket's record (the late-row
        check prunes deleted rows). The frames pass through a temporary table, so memory stays bounded.
        """
        now = _now()
        backends = tuple(backends)
        with self._transaction() as db:
            fresh = db.execute("SELECT 1 FROM state WHERE name = 'watermark'").fetchone() is None
            db.execute("DELETE FROM incoming")
            db.executemany("INSERT INTO incoming VALUES (?, ?)", bucket_digests or ())
            touched = {bucket for (bucket,) in db.execute("SELECT DISTINCT bucket FROM incoming")}
            for bucket in sorted(touched | set(bucket_keep or {})):
                added = b"".join(
                    blob for (blob,) in db.execute("SELECT digests FROM incoming WHERE bucket = ?", (bucket,))
                )
                _merge_bucket(db, bucket, added, (bucket_keep or {}).get(bucket))
            db.execute("DELETE FROM incoming")
            if bucket_digests is not None and fresh and watermark is not None:
                db.execute("INSERT OR IGNORE INTO state VALUES (?, '1')", (_TRACKED,))
            db.executemany("INSERT OR IGNORE INTO owed_backends VALUES (?, ?, 'export')",
                           [(backend, now) for backend in backends])
            for staged in files:
                _insert_chunk(db, staged, round_id, now)
                db.executemany(
                    "INSERT OR IGNORE INTO targets (sha256, backend) VALUES (?, ?)",
                    [(staged.sha256, backend) for backend in backends],
                )
            db.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?,?,?)", [(row.uri, row.reason, round_id) for row in skipped]
            )
            if watermark is not None:
                db.execute("INSERT OR REPLACE INTO state VALUES ('watermark', ?)", (watermark.text,))
                db.execute("INSERT OR REPLACE INTO state VALUES ('watermark_uris', ?)", (watermark.uris_json(),))

    # -- late-row records ------------------------------------------------------------------
    def buckets_tracked(self) -> bool:
        """Whether every bucket behind the watermark has a record (else the late-row check baselines)."""
        return self._db.execute("SELECT 1 FROM state WHERE name = ?", (_TRACKED,)).fetchone() is not None

    def bucket_counts(self) -> dict[int, int]:
        """Rows recorded per hour bucket (a bucket without a record has none)."""
        return dict(self._db.execute("SELECT bucket, rows FROM buckets"))

    def bucket_digests(self, bucket: int) -> set[bytes]:
        row = self._db.execute("SELECT digests FROM buckets WHERE bucket = ?", (bucket,)).fetchone()
        return digests.split(row[0]) if row else set()

    def baseline_buckets(self, records: Mapping[int, bytes], *, done: bool) -> None:
        """Replace these buckets' records with what the miner holds now; ``done`` marks the baseline complete."""
        with self._transaction() as db:
            for bucket, blob in records.items():
                _merge_bucket(db, bucket, b"", blob)
            if done:
                db.execute("INSERT OR IGNORE INTO state VALUES (?, '1')", (_TRACKED,))

    # -- reading ---------------------------------------------------------------------------
    def staged(self, sha256: str) -> StagedFile:
        row = self._db.execute("SELECT * FROM chunks WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise KeyError(f"chunk {sha256} is not in the ledger")
        return self._staged(row)

    def _staged(self, row: tuple) -> StagedFile:
        sha, name, size, rows, source, date, low, high, version, _round, _at = row
        return StagedFile(
            path=self.chunk_dir / name,
            sha256=sha,
            size_bytes=size,
            rows=rows,
            source=source,
            date=date,
            min_datetime=datetime.fromisoformat(low),
            max_datetime=datetime.fromisoformat(high),
            schema_version=version,
        )

    def chunks(self) -> list[StagedFile]:
        """Every chunk still in the spool, oldest first."""
        return [self._staged(row) for row in self._db.execute("SELECT * FROM chunks ORDER BY exported_at, sha256")]

    def pending(self, backfill: bool | None = None) -> dict[str, frozenset[str]]:
        """For every chunk with a backend still to acknowledge it: those backends.

        ``backfill`` True: only copies owed by a backfill; False: only the others; None: all.
        """
        where = "" if backfill is None else f" AND backfill = {int(backfill)}"
        pending: dict[str, set[str]] = {}
        for sha, backend in self._db.execute(
            f"SELECT sha256, backend FROM targets WHERE acked_at IS NULL{where} ORDER BY sha256, backend"
        ):
            pending.setdefault(sha, set()).add(backend)
        return {sha: frozenset(backends) for sha, backends in pending.items()}

    def targets(self, sha256: str) -> list[ChunkTarget]:
        return [
            ChunkTarget(*row)
            for row in self._db.execute(
                "SELECT sha256, backend, acked_at, acked_via FROM targets WHERE sha256 = ? ORDER BY backend", (sha256,)
            )
        ]

    def spooled_bytes(self) -> int:
        return self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM chunks").fetchone()[0]

    def bytes_per_row(self) -> float | None:
        """Average chunk bytes per row over the chunks recorded so far (to size the next export)."""
        size, rows = self._db.execute("SELECT SUM(size_bytes), SUM(rows) FROM chunks").fetchone()
        return size / rows if rows else None

    def skipped(self) -> list[SkippedRow]:
        return [SkippedRow(uri, reason) for uri, reason in self._db.execute("SELECT uri, reason FROM skipped")]

    # -- backends owed, and backfills ------------------------------------------------------
    def owed_backends(self) -> set[str]:
        """Every backend ever owed this miner's chunks (or backfilling them): none of them starts a backfill."""
        return {name for (name,) in self._db.execute("SELECT backend FROM owed_backends")}

    def baseline_backends(self, selected: Iterable[str]) -> bool:
        """On a ledger older than ``owed_backends``, record ``selected`` as holding the history; True if it did."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM state WHERE name = ?", (_BASELINE_BACKENDS,)).fetchone() is None:
                return False
            db.executemany("INSERT OR IGNORE INTO owed_backends VALUES (?, ?, 'baseline')",
                           [(backend, _now()) for backend in selected])
            db.execute("DELETE FROM state WHERE name = ?", (_BASELINE_BACKENDS,))
            return True

    def start_backfill(self, backend: str, first_bucket: int, upper: Watermark) -> BackfillRecord:
        """Start ``backend``'s backfill: the rows recorded so far in hour buckets ``first_bucket`` .. ``upper``'s.

        The buckets' records are copied as they are now: rows recorded later reach the backend through
        the round's own exports, so the copy is exactly what it lacks. One transaction, one SQL copy.
        """
        now = _now()
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO owed_backends VALUES (?, ?, 'backfill')", (backend, now))
            db.execute("DELETE FROM backfill_buckets WHERE backend = ?", (backend,))
            db.execute(
                "INSERT INTO backfill_buckets SELECT ?, bucket, digests FROM buckets "
                "WHERE bucket BETWEEN ? AND ? AND rows > 0",
                (backend, first_bucket, upper.time_bucket_id),
            )
            (total,) = db.execute(
                "SELECT COALESCE(SUM(rows), 0) FROM buckets WHERE bucket BETWEEN ? AND ?",
                (first_bucket, upper.time_bucket_id),
            ).fetchone()
            state = BACKFILL_RUNNING if total else BACKFILL_COMPLETE
            db.execute(
                "INSERT OR REPLACE INTO backfills (backend, state, started_at, completed_at, first_bucket, upper, "
                "upper_uris, rows_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (backend, state, now, None if total else now, first_bucket, upper.text, upper.uris_json(), total),
            )
        record = self.backfill(backend)
        assert record is not None
        return record

    def backfill(self, backend: str) -> BackfillRecord | None:
        row = self._db.execute(f"SELECT {_BACKFILL_COLUMNS} FROM backfills WHERE backend = ?", (backend,)).fetchone()
        return _backfill_record(row) if row else None

    def backfills(self) -> list[BackfillRecord]:
        return [_backfill_record(row)
                for row in self._db.execute(f"SELECT {_BACKFILL_COLUMNS} FROM backfills ORDER BY backend")]

    def backfill_buckets(self, backend: str) -> list[int]:
        """The hour buckets ``backend`` still lacks rows of, newest first."""
        return [bucket for (bucket,) in self._db.execute(
            "SELECT bucket FROM backfill_buckets WHERE backend = ? ORDER BY bucket DESC", (backend,))]

    def backfill_digests(self, backend: str, bucket: int) -> set[bytes]:
        row = self._db.execute("SELECT digests FROM backfill_buckets WHERE backend = ? AND bucket = ?",
                               (backend, bucket)).fetchone()
        return digests.split(row[0]) if row else set()

    def record_backfill(
        self,
        backend: str,
        files: Iterable[StagedFile],
        remaining: Mapping[int, bytes],
        *,
        rows: int,
        dropped: int,
        cursor: int | None,
        round_id: str = "",
    ) -> BackfillRecord:
        """Atomically: the chunks (owed to ``backend`` only, as backfill), the buckets' rows still to send, progress.

        ``remaining`` replaces each listed bucket's digests (empty: the bucket is done). The backfill is
        complete once no bucket is left. A crash before this leaves chunk files ``recover`` removes and
        the same rows still to send.
        """
        now = _now()
        files = tuple(files)
        with self._transaction() as db:
            for staged in files:
                _insert_chunk(db, staged, round_id, now)
            db.executemany("INSERT OR IGNORE INTO targets (sha256, backend, backfill) VALUES (?, ?, 1)",
                           [(staged.sha256, backend) for staged in files])
            for bucket, blob in remaining.items():
                if blob:
                    db.execute("INSERT OR REPLACE INTO backfill_buckets VALUES (?, ?, ?)", (backend, bucket, blob))
                else:
                    db.execute("DELETE FROM backfill_buckets WHERE backend = ? AND bucket = ?", (backend, bucket))
            left = db.execute("SELECT 1 FROM backfill_buckets WHERE backend = ? LIMIT 1", (backend,)).fetchone()
            db.execute(
                "UPDATE backfills SET rows_done = rows_done + ?, chunks_done = chunks_done + ?, "
                "bytes_done = bytes_done + ?, rows_dropped = rows_dropped + ?, cursor = COALESCE(?, cursor), "
                "state = ?, completed_at = CASE WHEN ? THEN COALESCE(completed_at, ?) ELSE NULL END "
                "WHERE backend = ?",
                (rows, len(files), sum(f.size_bytes for f in files), dropped, cursor,
                 BACKFILL_RUNNING if left else BACKFILL_COMPLETE, left is None, now, backend),
            )
        record = self.backfill(backend)
        if record is None:
            raise KeyError(f"backend {backend!r} has no backfill")
        return record

    # -- acknowledgements ------------------------------------------------------------------
    def acknowledge(self, sha256s: Iterable[str], backend: str, via: str | None = None) -> int:
        """Mark ``backend``'s copy of these chunks as stored (by ``via`` when a fallback stood in)."""
        now = _now()
        with self._transaction() as db:
            cursor = db.executemany(
                "UPDATE targets SET acked_at = ?, acked_via = ? WHERE sha256 = ? AND backend = ? AND acked_at IS NULL",
                [(now, via or backend, sha, backend) for sha in sha256s],
            )
            return cursor.rowcount

    def retire(self, keep: Iterable[str]) -> dict[str, int]:
        """Drop unacknowledged targets of backends no longer selected (the config no longer asks for them)."""
        keep = tuple(keep)
        marks = ",".join("?" * len(keep)) or "''"
        with self._transaction() as db:
            counts = dict(
                db.execute(
                    f"SELECT backend, COUNT(*) FROM targets WHERE acked_at IS NULL AND backend NOT IN ({marks}) "
                    "GROUP BY backend",
                    keep,
                ).fetchall()
            )
            db.execute(f"DELETE FROM targets WHERE acked_at IS NULL AND backend NOT IN ({marks})", keep)
        return counts

    def completed(self) -> list[StagedFile]:
        """Chunks that every backend that must hold them has acknowledged: they may leave the spool."""
        return [
            self._staged(row)
            for row in self._db.execute(
                "SELECT * FROM chunks WHERE NOT EXISTS "
                "(SELECT 1 FROM targets t WHERE t.sha256 = chunks.sha256 AND t.acked_at IS NULL)"
            )
        ]

    def forget(self, sha256: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM targets WHERE sha256 = ?", (sha256,))
            db.execute("DELETE FROM chunks WHERE sha256 = ?", (sha256,))

    def known_files(self) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT file FROM chunks")}


_BACKFILL_COLUMNS = ("backend, state, started_at, completed_at, first_bucket, upper, upper_uris, rows_total, "
                     "rows_done, chunks_done, bytes_done, rows_dropped, cursor")


def _backfill_record(row: tuple) -> BackfillRecord:
    backend, state, started, completed, first, upper, uris, total, done, chunks, size, dropped, cursor = row
    return BackfillRecord(backend, state, started, completed, first, Watermark(upper, tuple(json.loads(uris))),
                          total, done, chunks, size, dropped, cursor)


def _insert_chunk(db: sqlite3.Connection, staged: StagedFile, round_id: str, now: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            staged.sha256,
            Path(staged.path).name,
            staged.size_bytes,
            staged.rows,
            staged.source,
            staged.date,
            staged.min_datetime.isoformat(),
            staged.max_datetime.isoformat(),
            staged.schema_version,
            round_id,
            now,
        ),
    )


def _merge_bucket(db: sqlite3.Connection, bucket: int, added: bytes, keep: bytes | None) -> None:
    if keep is None:
        row = db.execute("SELECT digests FROM buckets WHERE bucket = ?", (bucket,)).fetchone()
        keep = row[0] if row else b""
    merged = digests.join(digests.split(keep) | digests.split(added)) if added else keep
    db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (bucket, len(merged) // digests.DIGEST_BYTES, merged))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind, _value, _traceback) -> None:
        self._db.execute("ROLLBACK" if kind else "COMMIT")
