"""Export the miner's new rows (after a watermark) as content-addressed parquet chunks.

One export covers the rows after the watermark ``since`` up to ``upper``, the last datetime of an hour
bucket chosen before reading starts: rows the miner writes meanwhile with later timestamps wait for
the next export. The new watermark is ``upper`` plus the URIs exported at exactly ``upper``.

Reading picks the cheaper of two plans: a few new rows go through the miner's hour-bucket index; many
go through one sequential pass in primary-key order. Pages are read straight into Arrow
(``arrow_queries``) by a reader thread, which also digests their URIs, while this thread decodes the
previous page and a writer thread encodes chunks: the three overlap, and memory stays bounded by the
page size, the partitioner's budget and the writer's queue.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from storage_core.chunks import COMPRESSION, COMPRESSIONS, ROW_GROUP_ROWS
from storage_core.export.arrow_values import int_scalar, one_array, text_scalar
from storage_core.export.decode import SkippedRow, count_extra, decode_page, source_name
from storage_core.export.digests import DigestLog, PageDigests, page_digests
from storage_core.export.encoding import FieldEncoder
from storage_core.export.os_hints import release_free_memory
from storage_core.export.partition import Partitioner
from storage_core.export.sqlite_source import MinerDatabase
from storage_core.export.watermark import Watermark
from storage_core.values import StagedFile

log = logging.getLogger(__name__)

#: ``progress(rows_read, rows_expected)``; rows_expected is an estimate from the hour-bucket index.
ExportProgress = Callable[[int, int], None]
T = TypeVar("T")


@attrs.frozen
class ExportOptions:
    """Knobs of one export; the defaults keep peak memory well under 256 MiB."""

    page_rows: int = 4_096  # rows per SQLite query (one short read transaction each; ~4 MB of posts)
    #: Most rows in one chunk file. A validator reads a chunk's whole footer to find one URI in it, and a
    #: footer grows with its row groups (~2.5 kB each for X's 37 columns; a busy export cuts a group every
    #: few hundred rows): at 4,096 rows a check read 15.9 kB of footers per claimed URI at 1M rows, at 1,024
    #: 6.5 kB, for four times the objects (~1,000 per million rows). Measured in benchmarks/bench_validate.
    chunk_rows: int = 1_024
    row_group_rows: int = ROW_GROUP_ROWS  # most rows in one row group (fewer when memory is short)
    compression: str = attrs.field(default=COMPRESSION, validator=attrs.validators.in_(COMPRESSIONS))  # parquet codec
    memory_bytes: int = 16 * 2**20  # decoded rows buffered across all (source, day) streams
    encoder: FieldEncoder | None = None  # optional Fernet encoding of url / username
    max_rows: int | None = None  # stop at the hour bucket where this many rows are reached (back-pressure)
    scan_fraction: float = 0.1  # above this share of the table, one sequential scan beats index lookups
    max_reported_skips: int = 1_000  # URIs of undecodable rows kept in the result (all are counted)
    digest_memory_bytes: int = 2 * 2**20  # row digests (16 bytes each, with the bucket) held before spilling to a file
    #: Row groups waiting for the chunk writer; None: ``memory_bytes``, or half of it with field encoding
    #: (encrypted rows are ~40% larger: a whole budget of them put the 1M-row peak at 242-256.5 MiB, half at 231-247).
    writer_backlog_bytes: int | None = None

    def backlog_bytes(self) -> int:
        """The bound on row groups waiting for the chunk writer (see ``writer_backlog_bytes``)."""
        if self.writer_backlog_bytes is not None:
            return self.writer_backlog_bytes
        return self.memory_bytes // 2 if self.encoder is not None else self.memory_bytes


@attrs.frozen
class ExportResult:
    """What one export wrote; ``watermark`` is where the next export starts."""

    files: tuple[StagedFile, ...]
    since: Watermark | None
    watermark: Watermark | None
    rows: int
    rows_read: int
    skipped_count: int
    skipped: tuple[SkippedRow, ...]
    complete: bool  # False when max_rows stopped the export before the newest row
    method: str  # "index", "scan", "late" or "none"
    elapsed_s: float
    #: Rows whose post had keys no column holds: exported, with those keys kept in the ``extra`` column.
    extra_key_rows: int = 0
    #: Digests of every row read, per hour bucket: ``Spool.commit_export`` adds them to the ledger's records.
    bucket_digests: DigestLog = attrs.field(factory=DigestLog, eq=False, repr=False)
    #: Late-row check only: records that replace the buckets' ones before the digests are added.
    bucket_keep: Mapping[int, bytes] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


@attrs.frozen
class ExportPlan:
    """Which rows an export covers, and how it reads them."""

    since: Watermark | None
    upper: str | None
    last_bucket: int | None
    expected_rows: int
    complete: bool
    method: str


def plan_export(database: MinerDatabase, since: Watermark | None, options: ExportOptions) -> ExportPlan:
    """Choose the upper bound (an hour-bucket boundary) and the read method from index counts alone."""
    counts = database.bucket_counts(since)
    if not counts:
        return ExportPlan(since, None, None, 0, True, "none")
    chosen, expected = counts[-1][0], 0
    for bucket, rows in counts:
        if options.max_rows is not None and expected and expected + rows > options.max_rows:
            break
        chosen, expected = bucket, expected + rows
    upper = database.last_in_bucket(chosen)
    if upper is None or (since is not None and upper < since.text):
        return ExportPlan(since, None, None, 0, True, "none")
    # Without a watermark the counts cover the whole table: no second pass over the index to count it.
    total = sum(rows for _bucket, rows in counts) if since is None else database.total_rows()
    method = "scan" if expected > options.scan_fraction * total else "index"
    return ExportPlan(since, upper, chosen, expected, chosen == counts[-1][0], method)


def _prefetch(pages: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Run ``pages`` in a thread, ``depth`` items ahead; errors are re-raised in the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                if stop.is_set():
                    return
                slots.put(page)
            slots.put(done)
        except BaseException as error:  # handed to the consumer
            slots.put(error)

    thread = threading.Thread(target=produce, name="storage-core-export-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


JEMALLOC_DECAY_MS = 100


@contextlib.contextmanager
def _returning_memory_pool() -> Iterator[None]:
    """Run with an Arrow pool that gives freed memory back to the system, then restore the default.

    The export allocates and frees ~1 GB of Arrow buffers per million rows; Arrow's default mimalloc
    pool keeps ~100 MB of freed pages mapped, which alone would break the 256 MiB budget. jemalloc
    returns them after ``JEMALLOC_DECAY_MS``: at zero every freed page is handed back and faulted in
    again a moment later (measured: +2.4 s of kernel time per million rows, once jemalloc's arenas
    actually took the setting); at 100 ms the export runs as fast as with no returning at all and
    peaks ~35 MB lower.
    """
    previous = pa.default_memory_pool()
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(JEMALLOC_DECAY_MS)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        yield
        return
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def export(
    db_path: Path,
    directory: Path,
    since: Watermark | None = None,
    options: ExportOptions = ExportOptions(),
    progress: ExportProgress | None = None,
) -> ExportResult:
    """Write the rows after ``since`` as chunks in ``directory``; nothing is recorded anywhere else.

    Raises ``MinerDatabaseError`` (naming the file, table or column) when the database cannot be read.
    Rows whose content does not decode are left out, counted, and listed (up to a limit) by URI.
    """
    started = time.monotonic()
    with _returning_memory_pool(), MinerDatabase(Path(db_path)) as database:
        plan = plan_export(database, since, options)
        if plan.upper is None:
            return ExportResult((), since, since, 0, 0, 0, (), True, "none", time.monotonic() - started)
        if plan.method == "scan":
            pages = database.iter_scan_pages(since, plan.upper, options.page_rows)
        else:
            assert plan.last_bucket is not None  # set whenever upper is
            pages = database.iter_index_pages(since, plan.upper, plan.last_bucket, options.page_rows)
        at_upper: list[str] = []  # URIs read at exactly the upper datetime: they join the watermark
        upper_text = text_scalar(plan.upper)

        def on_page(page: pa.Table, rows_read: int) -> None:
            # Filter the uri column alone: filtering the page would copy every column, content included.
            at_upper.extend(pc.filter(page.column("uri"), pc.equal(page.column("datetime"), upper_text)).to_pylist())
            if progress is not None:
                progress(rows_read, max(plan.expected_rows, rows_read))

        # Closed before the database: the reader thread must be done with the connection first.
        with contextlib.closing(_prefetch(read_pages(pages), depth=1)) as prefetched:
            converted = convert_pages(prefetched, Path(directory), options, on_page)
    carried = since.uris if since is not None and since.text == plan.upper else ()
    watermark = Watermark(plan.upper, carried + tuple(at_upper))
    elapsed = time.monotonic() - started
    log.info("export: %d rows in %d chunks (%s, %.1f s), watermark %s", converted.rows, len(converted.files),
             plan.method, elapsed, watermark.text)
    return converted.result(since, watermark, plan.complete, plan.method, elapsed)


@attrs.define
class Converted:
    """What ``convert_pages`` wrote and saw: the chunks, the counts, and the digests of every row read."""

    files: list[StagedFile] = attrs.Factory(list)
    rows: int = 0
    rows_read: int = 0
    skipped_count: int = 0
    skipped: list[SkippedRow] = attrs.Factory(list)
    extra_key_rows: int = 0
    bucket_digests: DigestLog = attrs.Factory(DigestLog)

    def result(
        self, since: Watermark | None, watermark: Watermark | None, complete: bool, method: str, elapsed: float,
        bucket_keep: Mapping[int, bytes] | None = None,
    ) -> ExportResult:
        if self.skipped_count:
            log.warning("export: skipped %d rows whose content does not decode (first: %s)", self.skipped_count,
                        self.skipped[0])
        if self.extra_key_rows:
            log.warning("export: %d rows hold keys the schema has no column for; kept in the 'extra' column",
                        self.extra_key_rows)
        return ExportResult(
            files=tuple(self.files),
            since=since,
            watermark=watermark,
            rows=self.rows,
            rows_read=self.rows_read,
            skipped_count=self.skipped_count,
            skipped=tuple(self.skipped),
            complete=complete,
            method=method,
            elapsed_s=elapsed,
            extra_key_rows=self.extra_key_rows,
            bucket_digests=self.bucket_digests,
            bucket_keep=bucket_keep,
        )


@attrs.frozen
class ReadPage:
    """A page as read, with the digests of its URIs (made on the reader's thread)."""

    table: pa.Table
    digests: PageDigests


def read_pages(pages: Iterable[pa.Table]) -> Iterator[ReadPage]:
    """Digest each page's URIs as it is read: the reader thread has time to spare, the decoder has not."""
    for page in pages:
        yield ReadPage(page, page_digests(page.column("uri"), page.column("bucket")))


def convert_pages(
    pages: Iterable[ReadPage],
    directory: Path,
    options: ExportOptions,
    on_page: Callable[[pa.Table, int], None] | None = None,
) -> Converted:
    """Decode and partition pages of rows into chunks in ``directory`` (the one path every export takes).

    Every row read, kept or skipped, has its URI digest noted under its hour bucket: the ledger records
    them so the late-row check neither exports a row twice nor retries an undecodable one forever.
    """
    partitioner = Partitioner(directory, chunk_rows=options.chunk_rows, memory_bytes=options.memory_bytes,
                              row_group_rows=options.row_group_rows, compression=options.compression,
                              backlog_bytes=options.backlog_bytes())
    done = Converted(bucket_digests=DigestLog(directory, options.digest_memory_bytes))
    try:
        for read in pages:
            page = read.table
            decoded = decode_sources(page, options.encoder)
            done.rows_read += page.num_rows
            done.bucket_digests.add_digests(read.digests)
            done.skipped_count += len(decoded.skipped)
            done.skipped.extend(decoded.skipped[: max(0, options.max_reported_skips - len(done.skipped))])
            if on_page is not None:
                on_page(page, done.rows_read)
            tables = decoded.tables
            done.rows += sum(table.num_rows for _source, table in tables)
            done.extra_key_rows += sum(count_extra(table) for _source, table in tables)
            # Let go of the raw page (its content above all) before partitioning, which may wait for
            # the writer; and of each decoded table once the partitioner holds its rows.
            del read, page, decoded
            while tables:
                partitioner.add(*tables.pop(0))
            if done.rows_read // options.page_rows % 32 == 0:
                release_free_memory()  # now and then: freed pages otherwise linger in malloc arenas
        done.files = partitioner.finish()
    except BaseException:
        partitioner.discard()
        done.bucket_digests.close()
        raise
    return done


@attrs.frozen
class DecodedPage:
    """One page made ready for the partitioner: its tables per source and its skipped rows."""

    tables: list[tuple[str, pa.Table]]
    skipped: list[SkippedRow]


def decode_sources(page: pa.Table, encoder: FieldEncoder | None) -> DecodedPage:
    """Decode every source of a page."""
    tables: list[tuple[str, pa.Table]] = []
    skipped: list[SkippedRow] = []
    for source, rows, page_skips in _by_source(page):
        skipped.extend(page_skips)
        if rows is not None:
            table, failures = decode_page(source, rows, encoder)
            skipped.extend(failures)
            if table is not None:
                tables.append((source, table))
    return DecodedPage(tables, skipped)


def _by_source(page: pa.Table) -> Iterator[tuple[str, pa.Table | None, list[SkippedRow]]]:
    """Split a page by source; unknown sources are skipped.

    A scan page is in uri order and URIs start with the source's host, so its sources come in a run
    or two: those are sliced (no copy). A page that mixes them more (the index path) is filtered.
    """
    sources = one_array(page.column("source"))
    runs = pc.run_end_encode(sources)
    ends = runs.run_ends.to_pylist()
    groups: list[tuple[int, pa.Table]]
    if len(ends) <= 4:
        starts = [0, *ends[:-1]]
        groups = [(number, page.slice(start, end - start))
                  for number, start, end in zip(runs.values.to_pylist(), starts, ends)]
    else:
        groups = [(number, page.filter(pc.equal(sources, int_scalar(number))))
                  for number in sorted(pc.unique(sources).to_pylist())]
    for number, rows in groups:
        name = source_name(number)
        if name is None:
            reason = f"unknown DataEntity.source {number}"
            yield "unknown", None, [SkippedRow(uri, reason) for uri in rows.column("uri").to_pylist()]
        else:
            yield name, rows, []
