"""Backfill: a backend newly selected for a miner gets the miner's rows within the freshness window.

The export is incremental, so a backend selected in round *k* receives the rows exported from round *k*
on. Its backfill sends it the rest, the rows the ledger recorded as exported *before* round *k*:

1. **Start** (``start_backfills``, at the top of round *k*, before its exports): a selected backend the
   ledger never owed anything (``Ledger.owed_backends``) gets a backfill record and a copy of the
   ledger's per-hour-bucket row digests for the hour buckets of the freshness window up to the
   watermark (``Ledger.start_backfill``). Rows recorded after that copy (late rows, new rows) go to the
   backend through the round's own exports, so the copy is exactly what it lacks and no row is sent
   twice. A miner's very first round has no watermark: its first export covers everything, and no
   backfill starts. A ledger written before this module existed takes the backends its next round
   selects as already holding the history (nobody recorded who was owed what).
2. **Each round, after the new rows are published** (``export_backfill_pass``, run by the round): hour
   buckets newest first (the rows that stay in the window longest), the bucket's URIs from the miner's
   index kept when their digest is in the copy, at most ``max_rows`` per pass; those rows read by primary
   key and converted through the one export path (``convert_pages``); then one ledger transaction
   (``Ledger.record_backfill``) records the chunks, owed to that backend alone, and the rows still to
   send. That is the cursor: a crash before it leaves unknown chunk files (``Spool.recover`` removes
   them) and the same rows still to send; after it, they are never exported again. Buckets that left
   the freshness window meanwhile are dropped unsent.

The round bounds the backfill per backend (``BackfillOptions``): rows and chunk bytes per round,
counting chunks an earlier round left owed, and none at all while the backend is failing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from storage_core.export import digests
from storage_core.export.exporter import ExportOptions, _returning_memory_pool, convert_pages, read_pages
from storage_core.export.late import ROWS_PER_PASS, _behind, _digested
from storage_core.export.ledger import BackfillRecord, Ledger
from storage_core.export.sqlite_source import MinerDatabase
from storage_core.values import StagedFile

log = logging.getLogger(__name__)

#: Backfill rows per backend per round by default: ~75 MB of snappy chunks of ~1 KB posts, a small share of
#: a round every 2 h; a month of a busy miner's rows (a few million) is sent within a day or two.
DEFAULT_MAX_ROWS = 250_000
#: Backfill chunk bytes per backend per round by default.
DEFAULT_MAX_BYTES = 256 * 2**20


@attrs.frozen
class BackfillOptions:
    """How much backfill a round may send each backend, and how far back the window reaches."""

    max_rows: int = attrs.field(default=DEFAULT_MAX_ROWS, validator=attrs.validators.ge(0))  # 0 pauses it
    max_bytes: int = attrs.field(default=DEFAULT_MAX_BYTES, validator=attrs.validators.ge(0))
    freshness_days: int = attrs.field(default=30, validator=attrs.validators.ge(1))


@attrs.frozen
class BackfillPass:
    """What one pass wrote; ``remaining`` and the counts go to ``Ledger.record_backfill`` with the chunks."""

    backend: str
    files: tuple[StagedFile, ...]
    rows: int  # rows written into chunks
    taken: int  # rows taken off the backfill (written, skipped as undecodable, or left to the incremental export)
    dropped: int  # rows no longer sent: deleted by the miner or out of the freshness window
    remaining: dict[int, bytes]
    cursor: int | None

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def window_start_bucket(freshness_days: int, now: datetime | None = None) -> int:
    """The first hour bucket inside the freshness window."""
    now = now or datetime.now(UTC)
    return int((now - timedelta(days=freshness_days)).timestamp() // 3600)


def start_backfills(ledger: Ledger, selected: tuple[str, ...], freshness_days: int,
                    now: datetime | None = None) -> list[BackfillRecord]:
    """Start a backfill for each selected backend the ledger never owed anything; return those started."""
    if not selected:
        return []
    if ledger.baseline_backends(selected):
        log.warning("backfill: the ledger predates backfills; %s taken to hold this miner's history already",
                    ", ".join(selected))
        return []
    watermark = ledger.watermark()
    new = [backend for backend in selected if backend not in ledger.owed_backends()]
    if not new or watermark is None:  # first round: the first export covers every row, for every backend
        return []
    if not ledger.buckets_tracked():  # the late-row check baselines the records this round; start next round
        log.info("backfill: %s waits a round for the ledger's row records", ", ".join(new))
        return []
    started = []
    for backend in new:
        record = ledger.start_backfill(backend, window_start_bucket(freshness_days, now), watermark)
        log.warning("backfill: %s is newly selected; it gets the %d rows of the last %d days exported before it "
                    "joined, over the next rounds", backend, record.rows_total, freshness_days)
        started.append(record)
    return started


def export_backfill_pass(
    db_path: Path,
    directory: Path,
    ledger: Ledger,
    backend: str,
    max_rows: int,
    freshness_days: int,
    options: ExportOptions = ExportOptions(),
    now: datetime | None = None,
) -> BackfillPass:
    """Write up to ``max_rows`` of ``backend``'s backfill as chunks in ``directory``; nothing is recorded."""
    record = ledger.backfill(backend)
    if record is None or record.complete:
        return BackfillPass(backend, (), 0, 0, 0, {}, None)
    limit = max(1, min(max_rows, ROWS_PER_PASS))
    first = window_start_bucket(freshness_days, now)
    remaining: dict[int, bytes] = {}
    taken: list[str] = []
    dropped = 0
    cursor: int | None = None
    started = time.monotonic()
    with _returning_memory_pool(), MinerDatabase(Path(db_path)) as database:
        for bucket in ledger.backfill_buckets(backend):
            if len(taken) >= limit:
                break
            wanted = ledger.backfill_digests(backend, bucket)
            if bucket < first:  # out of the window now: validators no longer ask for these rows
                remaining[bucket] = b""
                dropped += len(wanted)
                continue
            cursor = bucket
            present = sorted((uri, digest) for uri, digest in _digested(database.bucket_uris(bucket))
                             if digest in wanted)
            dropped += len(wanted) - len(present)  # deleted by the miner since
            room = limit - len(taken)
            taken.extend(uri for uri, _digest in present[:room])
            remaining[bucket] = digests.join(digest for _uri, digest in present[room:])
        converted = convert_pages(
            read_pages(_behind(database.iter_rows_by_uri(taken, options.page_rows), record.upper)),
            Path(directory), options,
        )
    converted.bucket_digests.close()  # these rows are recorded already
    log.info("backfill %s: %d rows in %d chunks (%.1f s), %d dropped", backend, converted.rows,
             len(converted.files), time.monotonic() - started, dropped)
    return BackfillPass(backend, tuple(converted.files), converted.rows, len(taken), dropped, remaining, cursor)
