"""The ledger: which chunk must go to which backend, who has acknowledged it, and the export watermark.

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
    PRIMARY KEY (sha256, backend)
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (uri TEXT PRIMARY KEY, reason TEXT NOT NULL, round_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (bucket INTEGER PRIMARY KEY, rows INTEGER NOT NULL, digests BLOB NOT NULL);
"""

#: ``state`` entry present once every hour bucket behind the watermark has a record in ``buckets``
#: (from the first export on, or from the baseline taken when a ledger older than this table is opened).
_TRACKED = "buckets_tracked"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@attrs.frozen
class ChunkTarget:
    """One backend that must hold one chunk, and whether (and through whom) it acknowledged it."""

    sha256: str
    backend: str
    acked_at: str | None
    acked_via: str | None


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
        self._db.executescript(_SCHEMA)
        # Digest frames of one commit, grouped by bucket on disk rather than in memory.
        self._db.execute("CREATE TEMP TABLE incoming (bucket INTEGER NOT NULL, digests BLOB NOT NULL)")
        self._db.execute("CREATE INDEX temp.incoming_bucket ON incoming (bucket)")

    def close(self) -> None:
        self._db.close()

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
            for staged in files:
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

    def pending(self) -> dict[str, frozenset[str]]:
        """For every chunk with a backend still to acknowledge it: those backends."""
        pending: dict[str, set[str]] = {}
        for sha, backend in self._db.execute(
            "SELECT sha256, backend FROM targets WHERE acked_at IS NULL ORDER BY sha256, backend"
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
