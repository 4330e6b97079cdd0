"""Route decoded rows into one-source, one-day chunks, written while the rows still arrive.

Rows arrive in any order (the fastest read of the miner table is in primary-key order, which mixes
days). Each (source, UTC day) is a stream with its own chunk file open; a stream's buffered rows are
written as one row group when they reach ``row_group_rows``, or earlier when all buffers together
pass the memory budget (the biggest stream goes first). A writer thread encodes the row groups
(Parquet encoding releases the GIL), so writing overlaps reading and decoding; a chunk is sealed as
soon as it holds ``chunk_rows`` rows. Memory holds the budget for buffered rows plus as much again
for row groups waiting for the writer (a page spans many days, so reaching the budget hands the
writer a burst of row groups at once; decoding goes on while it works through them), never a day.

Row groups are sorted by ``uri``; in a primary-key scan every stream receives its rows in ``uri``
order, so a whole chunk is sorted and a checker's row-group statistics on ``uri`` skip most of it.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from storage_core.chunks import COMPRESSION, ROW_GROUP_ROWS, ChunkFile, seal_chunk
from storage_core.export.arrow_values import owned_copy
from storage_core.export.os_hints import start_writeback
from storage_core.values import StagedFile

log = logging.getLogger(__name__)


def _by_day(table: pa.Table) -> tuple[pa.Table, list[tuple[str, pa.Table]]]:
    """``table`` with its rows grouped by UTC day of ``datetime``, and ``(day, rows)`` slices of it.

    Rows of a day keep their order (the sort is stable). One ``take`` per page: a take per day costs
    a call per column per day, which dominated when a page spans a month.
    """
    days = pc.cast(table.column("datetime"), pa.date32())
    bounds = pc.min_max(days)
    if bounds["min"] == bounds["max"]:
        return table, [(bounds["min"].as_py().isoformat(), table)]
    order = pc.sort_indices(days)
    table = table.take(order)
    parts, start = [], 0
    for entry in pc.value_counts(days.take(order)).to_pylist():
        parts.append((entry["values"].isoformat(), table.slice(start, entry["counts"])))
        start += entry["counts"]
    return table, parts


def _sorted_by_uri(table: pa.Table) -> pa.Table:
    """``table`` sorted by uri (unchanged when it already is, as in a primary-key scan)."""
    uris = table.column("uri")
    rows = table.num_rows
    if rows < 2 or pc.all(pc.less_equal(uris.slice(0, rows - 1), uris.slice(1))).as_py():
        return table
    return table.sort_by("uri")


@attrs.define(eq=False)
class _Held:
    """A table that buffered parts are slices of: its memory is held until the last part is written."""

    nbytes: int
    rows: int
    parts: int = 0

    def bytes_of(self, rows: int) -> int:
        """The share of ``nbytes`` that ``rows`` of it stand for (``Table.nbytes`` of slices is slow)."""
        return self.nbytes * rows // max(1, self.rows)


@attrs.define
class _Stream:
    """The buffered rows of one (source, day): slices of held tables."""

    source: str
    day: str
    parts: list[tuple[pa.Table, _Held]] = attrs.Factory(list)
    rows: int = 0
    owned: bool = False  # the one part is a copy of its own: compacting again would gain nothing


class Partitioner:
    """Collect tables of one source each; ``finish()`` writes what is left and returns every chunk.

    Buffered parts are slices that keep their whole page alive, so memory is counted per page: when
    the pages still referenced pass ``memory_bytes``, every stream lets go of them, the ones with
    rows enough for a row group by writing it, the small ones by copying their few rows.
    """

    def __init__(
        self,
        directory: Path,
        *,
        chunk_rows: int,
        memory_bytes: int,
        row_group_rows: int = ROW_GROUP_ROWS,
        compression: str = COMPRESSION,
        backlog_bytes: int | None = None,
    ) -> None:
        """``backlog_bytes`` bounds the row groups waiting for the writer (default: ``memory_bytes``)."""
        self.memory_bytes = memory_bytes
        self.row_group_rows = max(1, min(row_group_rows, chunk_rows))
        self.small_rows = max(1, self.row_group_rows // 16)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._held = 0
        self._writer = _ChunkWriter(Path(directory), chunk_rows, self.row_group_rows, compression,
                                    backlog_bytes=memory_bytes if backlog_bytes is None else backlog_bytes)

    def add(self, source: str, table: pa.Table) -> None:
        """Add rows of ``source`` (any days, any order); may block while the writer catches up."""
        grouped, parts = _by_day(table)
        del table  # when grouping copied it, the copy is what the slices keep alive
        held = _Held(grouped.nbytes, grouped.num_rows)  # the slices keep all of it alive
        self._held += held.nbytes
        for day, part in parts:
            stream = self._streams.get((source, day))
            if stream is None:
                stream = self._streams[(source, day)] = _Stream(source, day)
            stream.parts.append((part, held))
            stream.rows += part.num_rows
            stream.owned = False
            held.parts += 1
            if stream.rows >= self.row_group_rows:
                self._flush(stream)
        if self._held > self.memory_bytes:
            for stream in self._streams.values():
                if stream.rows >= self.small_rows:
                    self._flush(stream)
                elif stream.parts and not stream.owned:
                    self._compact(stream)
        if self._held > self.memory_bytes:  # so many days that even their few rows each are too much
            for stream in self._streams.values():
                if stream.rows:
                    self._flush(stream)

    def _release(self, stream: _Stream) -> tuple[pa.Table, int]:
        """A stream's buffered rows as one table, and their bytes; lets go of the pages they were slices of."""
        table = pa.concat_tables([part for part, _held in stream.parts])
        size = 0
        for part, held in stream.parts:
            size += held.bytes_of(part.num_rows)
            held.parts -= 1
            if held.parts == 0:
                self._held -= held.nbytes
        stream.parts, stream.rows = [], 0
        return table, size

    def _compact(self, stream: _Stream) -> None:
        """Copy a small stream's rows out of the pages they keep alive."""
        rows = stream.rows
        copy = owned_copy(self._release(stream)[0])
        held = _Held(copy.nbytes, rows, parts=1)
        self._held += held.nbytes
        stream.parts, stream.rows, stream.owned = [(copy, held)], rows, True

    def _flush(self, stream: _Stream) -> None:
        """Hand a stream's buffered rows to the writer, as row groups of at most ``row_group_rows``."""
        table, size = self._release(stream)
        for start in range(0, table.num_rows, self.row_group_rows):
            group = table.slice(start, self.row_group_rows)
            group_bytes = size * group.num_rows // table.num_rows
            self._writer.put((stream.source, stream.day), _sorted_by_uri(group), group_bytes)

    def finish(self) -> list[StagedFile]:
        """Write every buffered row, seal every chunk, and return them in (source, day) order."""
        try:
            for key in sorted(self._streams):
                if self._streams[key].rows:
                    self._flush(self._streams[key])
            self._streams.clear()
            files = self._writer.close()
        except BaseException:
            self.discard()
            raise
        return sorted(files, key=lambda f: (f.source, f.date, f.min_datetime, f.sha256))

    def discard(self) -> None:
        """Drop buffers and unsealed chunk files (after an error)."""
        self._streams.clear()
        self._held = 0
        self._writer.abort()


@attrs.define
class _OpenChunk:
    file: ChunkFile
    rows: int = 0


_STOP = object()
#: Bytes written to a chunk after which they are hashed and the kernel starts writing them back (``os_hints``).
WRITEBACK_BYTES = 1 << 20
#: Threads that fsync and hash the chunks sealed at the end, all at once (both release the GIL). Chunks
#: sealed while rows still arrive take one thread: each thread that allocates gets a glibc arena of its
#: own, and four of them all along raised a 4M-row export's peak by ~10-20 MiB.
FINAL_SEAL_THREADS = 4


class _ChunkWriter:
    """A thread that appends row groups to each stream's open chunk and seals full ones.

    Row groups wait in a queue bounded by bytes, not by count: ``put`` blocks (back-pressure) once
    ``backlog_bytes`` are waiting, but always takes at least one row group. After an error the thread
    keeps draining the queue so that ``put`` never blocks forever.
    """

    def __init__(
        self, directory: Path, chunk_rows: int, row_group_rows: int, compression: str, *, backlog_bytes: int
    ) -> None:
        self.directory = directory
        self.compression = compression
        self.chunk_rows = chunk_rows
        self.row_group_rows = row_group_rows
        self.backlog_bytes = backlog_bytes
        self._jobs: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._room = threading.Condition()
        self._open: dict[tuple[str, str], _OpenChunk] = {}
        self._sealed: list[StagedFile] = []
        self._sealer: ThreadPoolExecutor | None = None
        self._seals: list[Future[StagedFile]] = []
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="storage-core-chunk-writer", daemon=True)
        self._thread.start()

    def put(self, key: tuple[str, str], table: pa.Table, size: int) -> None:
        """Queue ``table`` (``size``: the bytes its slices reference, not the whole pages behind them)."""
        self._raise_error()
        with self._room:
            while self._queued_bytes and self._queued_bytes + size > self.backlog_bytes:
                self._room.wait()
            self._queued_bytes += size
        self._jobs.put((key, table, size))

    def close(self) -> list[StagedFile]:
        """Wait for every row group, seal the open chunks, and return all sealed chunks."""
        self._jobs.put(_STOP)
        self._thread.join()
        self._raise_error()
        return list(self._sealed)

    def abort(self) -> None:
        """Stop, and remove the chunks not sealed yet (sealed ones are content-addressed and complete)."""
        self._aborted = True
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        for chunk in self._open.values():
            chunk.file.abort()
        self._open.clear()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            key, table, size = job
            del job
            if self._error is None and not self._aborted:
                try:
                    # One chunk per column: the slices' pages are let go before encoding starts, and
                    # Parquet encodes one array per column instead of one per page the rows came from
                    # (measured: faster by more than the copy costs, and a few MiB lower at the peak).
                    table = table.combine_chunks()
                    self._write(key, table)
                except BaseException as error:  # handed to the partitioner at its next call
                    self._error = error
            del table
            with self._room:
                self._queued_bytes -= size
                self._room.notify()
        if self._error is None and not self._aborted and self._open:
            self._collect_seals()
            # Most chunks end here: seal them side by side.
            self._sealer = ThreadPoolExecutor(FINAL_SEAL_THREADS, thread_name_prefix="storage-core-chunk-seal")
            for key in sorted(self._open):
                self._seal(key)
        self._collect_seals()

    def _write(self, key: tuple[str, str], table: pa.Table) -> None:
        while table.num_rows:
            chunk = self._open.get(key)
            if chunk is None:
                chunk = self._open[key] = _OpenChunk(ChunkFile(key[0], self.directory, self.compression))
            piece = table.slice(0, self.chunk_rows - chunk.rows)
            chunk.file.writer.write_table(piece, row_group_size=self.row_group_rows)
            chunk.rows += piece.num_rows
            if chunk.file.unhashed_bytes >= WRITEBACK_BYTES:
                chunk.file.hash_written()  # while it is in the page cache, and not in the export's tail
                start_writeback(chunk.file.fileno())
            table = table.slice(piece.num_rows)
            if chunk.rows >= self.chunk_rows:
                self._seal(key)

    def _seal(self, key: tuple[str, str]) -> None:
        """Close a full chunk and hand it to the sealing threads: its fsync and hash never stall encoding.

        A large export seals chunks all along (one per ``chunk_rows`` rows of a day); sealed on this
        thread, each fsync held up every row group behind it (measured: ~25 ms a chunk, ~3 s per 4M rows).
        """
        chunk = self._open.pop(key)
        try:
            chunk.file.close()
        except BaseException:
            chunk.file.abort()
            raise
        if self._sealer is None:
            self._sealer = ThreadPoolExecutor(1, thread_name_prefix="storage-core-chunk-seal")
        future = self._sealer.submit(seal_chunk, chunk.file, self.directory)
        future.add_done_callback(self._note_seal_error)
        self._seals.append(future)

    def _note_seal_error(self, future: Future[StagedFile]) -> None:
        error = future.exception()
        if error is not None and self._error is None:
            self._error = error  # the partitioner raises it at its next call

    def _collect_seals(self) -> None:
        """Wait for every seal; keep the sealed chunks (complete and content-addressed, even after an error)."""
        if self._sealer is not None:
            self._sealer.shutdown(wait=True)
            self._sealer = None
        for future in self._seals:
            if future.exception() is None:
                self._sealed.append(future.result())
        self._seals.clear()
