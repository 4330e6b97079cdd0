"""Route decoded rows into one-source, one-day chunks with bounded memory.

Rows arrive in any order (the fastest read of the miner table is in primary-key order, which mixes
days). Each source's rows are buffered in Arrow; when the buffers pass the memory budget they are cut
by UTC day and appended to one temporary Arrow IPC file per (source, day) next to the spool (a plain
copy of the buffers), and dropped. At the end each (source, day) is read back at most ``chunk_rows``
at a time, sorted by ``uri`` (so a checker's row-group statistics on ``uri`` skip most of a file) and
written as a content-addressed chunk. Memory holds about twice the budget, plus the pieces being
written; never a whole day or a whole export.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from storage_core.chunks import write_chunk
from storage_core.values import StagedFile

log = logging.getLogger(__name__)


def _load_malloc_trim() -> Callable[[], None]:
    """glibc keeps freed memory in per-thread arenas; ``malloc_trim`` hands it back (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


release_free_memory = _load_malloc_trim()


def _by_day(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """Slices of ``table``, one per UTC day of its ``datetime`` column (one sort, one take)."""
    days = pc.cast(table.column("datetime"), pa.date32())
    bounds = pc.min_max(days)
    if bounds["min"] == bounds["max"]:
        yield bounds["min"].as_py().isoformat(), table
        return
    order = pc.sort_indices(days)
    table = table.take(order)
    start = 0
    for entry in pc.value_counts(days.take(order)).to_pylist():
        yield entry["values"].isoformat(), table.slice(start, entry["counts"])
        start += entry["counts"]


class _Spill:
    __slots__ = ("path", "writer", "rows")

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.writer = pa.ipc.new_file(str(path), schema)
        self.rows = 0


class Partitioner:
    """Collect tables of one source each; ``finish()`` writes the chunks and returns them."""

    def __init__(self, directory: Path, *, chunk_rows: int, memory_bytes: int, writers: int = 2) -> None:
        self.directory = Path(directory)
        self.chunk_rows = chunk_rows
        self.memory_bytes = memory_bytes
        self.writers = writers
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self._spills: dict[tuple[str, str], _Spill] = {}
        self._temporary = self.directory / f".partition-{uuid.uuid4().hex}"

    def add(self, source: str, table: pa.Table) -> None:
        """Add rows of ``source`` (any days, any order)."""
        self._buffers.setdefault(source, []).append(table)
        self._buffered += table.nbytes
        if self._buffered > self.memory_bytes:
            self._spill()

    def _spill(self) -> None:
        """Append every buffered row to its (source, day) temporary file and drop the buffers."""
        self._temporary.mkdir(parents=True, exist_ok=True)
        for source, tables in self._buffers.items():
            for day, part in _by_day(pa.concat_tables(tables)):
                spill = self._spills.get((source, day))
                if spill is None:
                    spill = self._spills[(source, day)] = _Spill(
                        self._temporary / f"{source}-{day}.arrow", part.schema
                    )
                spill.writer.write_table(part)
                spill.rows += part.num_rows
        self._buffers.clear()
        self._buffered = 0
        release_free_memory()

    def _piece_size(self, rows: int) -> int:
        """Even pieces of at most ``chunk_rows`` rows (never a 3-row tail chunk)."""
        pieces = max(1, -(-rows // self.chunk_rows))
        return max(1, -(-rows // pieces))

    def _pieces(self) -> Iterator[tuple[str, pa.Table]]:
        """``(source, rows)`` pieces in (source, day) order, each at most ``chunk_rows`` rows."""
        if not self._spills:  # everything fit in memory: no temporary files at all
            groups: dict[tuple[str, str], list[pa.Table]] = {}
            for source, tables in self._buffers.items():
                for day, part in _by_day(pa.concat_tables(tables)):
                    groups.setdefault((source, day), []).append(part)
            self._buffers.clear()
            for (source, _day), parts in sorted(groups.items()):
                table = pa.concat_tables(parts)
                size = self._piece_size(table.num_rows)
                for start in range(0, table.num_rows, size):
                    yield source, table.slice(start, size)
            return
        self._spill()
        for (source, _day), spill in sorted(self._spills.items()):
            spill.writer.close()
            size = self._piece_size(spill.rows)
            with pa.OSFile(str(spill.path)) as handle:  # read a piece at a time, never the whole day
                reader = pa.ipc.open_file(handle)
                pending: list[pa.RecordBatch] = []
                count = 0
                for index in range(reader.num_record_batches):
                    batch = reader.get_batch(index)
                    pending.append(batch)
                    count += batch.num_rows
                    while count >= size:
                        table = pa.Table.from_batches(pending)
                        yield source, table.slice(0, size)
                        rest = table.slice(size)
                        pending, count = rest.to_batches(), rest.num_rows
                        del table, rest
                if count:
                    yield source, pa.Table.from_batches(pending)
            os.unlink(spill.path)

    def finish(self) -> list[StagedFile]:
        """Write every (source, day) as chunks and remove the temporary files."""
        futures: list[Future[StagedFile]] = []
        # Parquet encoding releases the GIL: two writers keep both cores busy, and at most
        # ``writers`` pieces (plus the one being prepared) are in memory at once.
        slots = threading.Semaphore(self.writers)

        def write(piece: pa.Table, source: str) -> StagedFile:
            try:
                return write_chunk(piece, source, self.directory)
            finally:
                del piece
                release_free_memory()  # the writer threads' malloc arenas would otherwise keep ~60 MB
                slots.release()

        try:
            if self.writers <= 1:  # one piece in memory at a time: the lowest peak
                staged = []
                for source, piece in self._pieces():
                    staged.append(write_chunk(piece.sort_by("uri"), source, self.directory))
                    del piece
                    release_free_memory()
                return staged
            with ThreadPoolExecutor(self.writers, thread_name_prefix="storage-core-chunk-writer") as pool:
                for source, piece in self._pieces():
                    slots.acquire()
                    futures.append(pool.submit(write, piece.sort_by("uri"), source))
                    del piece
            return [future.result() for future in futures]
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop buffers and temporary files (after an error or when done)."""
        for spill in self._spills.values():
            try:
                spill.writer.close()  # a second close is harmless or raises; either way the file goes
            except (pa.ArrowException, OSError):
                pass
        self._spills.clear()
        self._buffers.clear()
        self._buffered = 0
        shutil.rmtree(self._temporary, ignore_errors=True)
