"""Route decoded rows into one-source, one-day chunks with bounded memory.

Rows arrive in any order (the fastest read of the miner table is in primary-key order, which mixes
days). Each (source, day) group is buffered in Arrow; when the buffers together pass the memory
budget, the largest groups are appended to temporary Arrow IPC files next to the spool (a plain copy
of the buffers, read back through a memory map).
At the end every group is read back at most ``chunk_rows`` at a time, sorted by ``uri`` (so a
checker's row-group statistics on ``uri`` skip most of a file) and written as a content-addressed chunk.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from storage_core.chunks import write_chunk
from storage_core.values import StagedFile

log = logging.getLogger(__name__)


class _Group:
    __slots__ = ("source", "day", "tables", "rows", "nbytes", "spill_path", "spill_writer", "spilled_rows")

    def __init__(self, source: str, day: str) -> None:
        self.source, self.day = source, day
        self.tables: list[pa.Table] = []
        self.rows = self.nbytes = self.spilled_rows = 0
        self.spill_path: Path | None = None
        self.spill_writer: pa.ipc.RecordBatchFileWriter | None = None


class Partitioner:
    """Collect tables of one source each; ``finish()`` writes the chunks and returns them."""

    def __init__(self, directory: Path, *, chunk_rows: int, memory_bytes: int, writers: int = 2) -> None:
        self.directory = Path(directory)
        self.writers = writers
        self.chunk_rows = chunk_rows
        self.memory_bytes = memory_bytes
        self._groups: dict[tuple[str, str], _Group] = {}
        self._buffered = 0
        self._temporary = self.directory / f".partition-{uuid.uuid4().hex}"

    def add(self, source: str, table: pa.Table) -> None:
        """Add rows of ``source`` (any days, any order)."""
        days = pc.cast(table.column("datetime"), pa.date32())
        if pc.min_max(days)["min"] == pc.min_max(days)["max"]:
            self._append(source, days[0].as_py().isoformat(), table)
        else:
            # One sort and one take per page, then a zero-copy slice per day.
            order = pc.sort_indices(days)
            table = table.take(order)
            start = 0
            for entry in pc.value_counts(days.take(order)).to_pylist():
                count = entry["counts"]
                self._append(source, entry["values"].isoformat(), table.slice(start, count))
                start += count
        if self._buffered > self.memory_bytes:
            self._spill()

    def _append(self, source: str, day: str, table: pa.Table) -> None:
        group = self._groups.get((source, day))
        if group is None:
            group = self._groups[(source, day)] = _Group(source, day)
        group.tables.append(table)
        group.rows += table.num_rows
        group.nbytes += table.nbytes
        self._buffered += table.nbytes

    def _spill(self) -> None:
        """Append the biggest buffers to their group's temporary file until half the budget is free."""
        for group in sorted(self._groups.values(), key=lambda g: g.nbytes, reverse=True):
            if self._buffered <= self.memory_bytes // 2:
                break
            if not group.tables:
                continue
            if group.spill_writer is None:
                self._temporary.mkdir(parents=True, exist_ok=True)
                group.spill_path = self._temporary / f"{group.source}-{group.day}.arrow"
                group.spill_writer = pa.ipc.new_file(group.spill_path, group.tables[0].schema)
            group.spill_writer.write_table(pa.concat_tables(group.tables))
            group.spilled_rows += group.rows
            self._buffered -= group.nbytes
            group.tables, group.rows, group.nbytes = [], 0, 0

    def _pieces(self, group: _Group) -> Iterator[pa.Table]:
        """The group's rows, at most ``chunk_rows`` at a time, each piece sorted by uri."""
        if group.spill_writer is not None:
            if group.tables:
                group.spill_writer.write_table(pa.concat_tables(group.tables))
                group.tables = []
            group.spill_writer.close()
            group.spill_writer = None
            with pa.memory_map(str(group.spill_path)) as mapped:
                table = pa.ipc.open_file(mapped).read_all()  # zero-copy: pages are read as they are used
                yield from self._split(table)
                del table
            os.unlink(group.spill_path)
        else:
            table = pa.concat_tables(group.tables)
            group.tables = []
            yield from self._split(table)

    def _split(self, table: pa.Table) -> Iterator[pa.Table]:
        """Even pieces of at most ``chunk_rows`` rows (never a 3-row tail chunk)."""
        pieces = max(1, -(-table.num_rows // self.chunk_rows))
        size = -(-table.num_rows // pieces)
        for start in range(0, table.num_rows, size):
            yield table.slice(start, size)

    def finish(self) -> list[StagedFile]:
        """Write every group as chunks (in source, day order) and remove the temporary files."""
        futures: list[Future[StagedFile]] = []
        # Parquet encoding releases the GIL: two writers keep both cores busy, and at most
        # two pieces (plus the one being prepared) are in memory at once.
        slots = threading.Semaphore(self.writers + 1)

        def write(piece: pa.Table, source: str) -> StagedFile:
            try:
                return write_chunk(piece, source, self.directory)
            finally:
                slots.release()

        try:
            with ThreadPoolExecutor(self.writers, thread_name_prefix="storage-core-chunk-writer") as pool:
                for key in sorted(self._groups):
                    group = self._groups.pop(key)
                    self._buffered -= group.nbytes
                    for piece in self._pieces(group):
                        slots.acquire()
                        futures.append(pool.submit(write, piece.sort_by("uri").combine_chunks(), group.source))
            return [future.result() for future in futures]
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop buffers and temporary files (after an error or when done)."""
        for group in self._groups.values():
            if group.spill_writer is not None:
                group.spill_writer.close()
        self._groups.clear()
        self._buffered = 0
        if self._temporary.exists():
            for path in self._temporary.iterdir():
                path.unlink()
            self._temporary.rmdir()
