"""Rows stored late behind the watermark: found per hour bucket, exported once, recorded with the chunks.

The watermark is a post's datetime, not the time the miner stored the row, so a late-scraped older
post lands behind it and the incremental export never reads it. The ledger therefore keeps, per hour
bucket behind the watermark, the digests of the rows already exported (``digests``). Each round:

1. one ``GROUP BY timeBucketId`` over the miner's bucket index (no table reads) for the buckets before
   the watermark's, compared with the recorded counts: when nothing is late this is the whole cost;
2. for a bucket whose count differs, its URIs (index-only), minus the recorded digests: the late rows;
3. those rows by primary key, through the same decode/partition path as every export;
4. one ledger transaction: the chunks, their backends and the buckets' new records (deleted rows
   pruned, late rows added). A crash before it leaves unknown chunk files (removed by ``recover``)
   and the same rows still late, exported again into the same content-addressed files.

The watermark's own bucket is left to the incremental export until the watermark moves past it (a
late row there waits a round or two). A ledger written before bucket records existed is baselined on
first sight: what the miner holds behind the watermark then counts as done. A ledger whose records
use the digest scheme before ``digests.SCHEME`` is migrated exactly (``migrate_digests``) first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from storage_core.export import digests
from storage_core.export.arrow_values import booleans, strings
from storage_core.export.decode import parse_datetime
from storage_core.export.exporter import (
    ExportOptions,
    ExportResult,
    _returning_memory_pool,
    convert_pages,
    read_pages,
)
from storage_core.export.ledger import Ledger
from storage_core.export.sqlite_source import MinerDatabase
from storage_core.export.watermark import Watermark

log = logging.getLogger(__name__)

#: Most late rows one pass reads (their URIs are held in memory); the round runs passes until done.
ROWS_PER_PASS = 100_000
#: Most bytes of kept digests (the buckets' pruned records) one pass holds before it stops.
KEEP_BYTES_PER_PASS = 8 * 2**20
#: Digests baselined per ledger transaction when an older ledger is first opened.
BASELINE_ROWS_PER_COMMIT = 200_000


def export_late_rows(
    db_path: Path,
    directory: Path,
    ledger: Ledger,
    since: Watermark | None,
    options: ExportOptions = ExportOptions(),
) -> ExportResult:
    """Write the rows behind ``since`` that the ledger has no record of as chunks in ``directory``.

    The result keeps the watermark as it is and carries the buckets' new records, for
    ``Spool.commit_export``. ``complete`` is False when ``options.max_rows`` (or ``ROWS_PER_PASS``)
    stopped the pass early: call again after committing. Only a ledger without records (older than
    this check) is written here, by the baseline.
    """
    started = time.monotonic()
    if since is None:  # nothing exported yet: nothing can be behind
        return _nothing(since, started)
    limit = min(options.max_rows or ROWS_PER_PASS, ROWS_PER_PASS)
    with _returning_memory_pool(), MinerDatabase(Path(db_path)) as database:
        if not ledger.buckets_tracked():
            _baseline(database, ledger, since.time_bucket_id)
            return _nothing(since, started)
        current = dict(database.bucket_counts_before(since.time_bucket_id))
        recorded = ledger.bucket_counts()
        changed = sorted(
            bucket
            for bucket in set(current) | {b for b in recorded if b < since.time_bucket_id}
            if current.get(bucket, 0) != recorded.get(bucket, 0)
        )
        if not changed:
            return _nothing(since, started)
        keep: dict[int, bytes] = {}
        late: list[str] = []
        complete = True
        held = 0
        for bucket in changed:
            if (late and len(late) >= limit) or held >= KEEP_BYTES_PER_PASS:
                complete = False
                break
            known = ledger.bucket_digests(bucket)
            present: set[bytes] = set()
            for uri, digest in _digested(database.bucket_uris(bucket)):
                if digest in known:
                    present.add(digest)
                else:
                    late.append(uri)
            keep[bucket] = digests.join(present)
            held += len(keep[bucket])
        log.info("late rows: %d hour buckets changed behind the watermark, %d rows not exported yet",
                 len(keep), len(late))
        converted = convert_pages(
            read_pages(_behind(database.iter_rows_by_uri(late, options.page_rows), since)), Path(directory), options
        )
    elapsed = time.monotonic() - started
    if converted.rows_read:
        log.warning("late rows: exported %d rows stored after the watermark had passed them (%d chunks)",
                    converted.rows, len(converted.files))
    return converted.result(since, since, complete, "late", elapsed, bucket_keep=keep)


def _behind(pages: Iterator[pa.Table], since: Watermark) -> Iterator[pa.Table]:
    """Only rows the incremental export will not read (a bucket id at odds with its datetime is left to it).

    A datetime that is not a date at all is never read by the incremental export (see
    ``MinerDatabase.last_in_bucket``): it is kept here, so that it is skipped by name and recorded.
    """
    for page in pages:
        texts = page.column("datetime").to_pylist()
        uris = page.column("uri").to_pylist()
        mask = [text < since.text or (text == since.text and uri in since.uris) or parse_datetime(text) is None
                for text, uri in zip(texts, uris)]
        kept = page.filter(booleans(mask))
        if kept.num_rows:
            yield kept


def _baseline(database: MinerDatabase, ledger: Ledger, watermark_bucket: int) -> None:
    """Record everything the miner holds up to the watermark's bucket as done (a ledger from before records).

    The watermark's own bucket is included: its rows after the watermark are still exported by the
    incremental export (which reads by datetime, not by record), and recording them early is harmless.
    """
    buckets = [bucket for bucket, _rows in database.bucket_counts_before(watermark_bucket + 1)]
    pending: dict[int, bytes] = {}
    held = 0
    for bucket in buckets:
        pending[bucket] = digests.join(digest for _uri, digest in _digested(database.bucket_uris(bucket)))
        held += len(pending[bucket]) // digests.DIGEST_BYTES
        if held >= BASELINE_ROWS_PER_COMMIT:
            ledger.baseline_buckets(pending, done=False)
            pending, held = {}, 0
    ledger.baseline_buckets(pending, done=True)
    log.warning("late rows: ledger had no per-bucket records; baselined %d hour buckets up to the watermark "
                "(rows stored late before this upgrade are not recovered)", len(buckets))


def _digested(uris: list[str]) -> Iterator[tuple[str, bytes]]:
    """``(uri, digest)`` pairs, digested in one vectorised call."""
    if not uris:
        return iter(())
    blob = digests.uri_digests(strings(uris))
    size = digests.DIGEST_BYTES
    return ((uri, blob[index * size : (index + 1) * size]) for index, uri in enumerate(uris))


def _nothing(since: Watermark | None, started: float) -> ExportResult:
    return ExportResult((), since, since, 0, 0, 0, (), True, "none", time.monotonic() - started)
