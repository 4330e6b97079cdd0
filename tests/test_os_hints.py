"""The export's hints to the OS are best-effort: they never fail an export nor change a file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow.parquet as pq

import storage_core.chunks as chunks
import storage_core.export.partition as partition
from storage_core.export.os_hints import release_free_memory, start_writeback
from storage_core.export.partition import Partitioner
from storage_core.testing.data import make_table


def test_writeback_of_a_written_file_leaves_it_unchanged(tmp_path):
    path = tmp_path / "chunk.bin"
    data = bytes(range(256)) * 8_192
    path.write_bytes(data)
    with open(path, "rb") as handle:
        start_writeback(handle.fileno())
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_writeback_of_a_closed_descriptor_and_a_memory_trim_do_nothing_harmful(tmp_path):
    with open(tmp_path / "gone.parquet", "wb") as handle:
        fd = handle.fileno()
    start_writeback(fd)  # closed: the call fails quietly
    release_free_memory()


def test_the_chunk_writer_starts_writeback_about_once_per_written_mebibyte(tmp_path, monkeypatch):
    started: list[str] = []
    monkeypatch.setattr(partition, "start_writeback", lambda fd: started.append(os.readlink(f"/proc/self/fd/{fd}")))
    monkeypatch.setattr(partition, "WRITEBACK_BYTES", 64 * 1024)
    monkeypatch.setattr(chunks, "SINK_BUFFER_BYTES", 16 * 1024)  # bytes reach the file in 16 KiB steps
    partitioner = Partitioner(tmp_path, chunk_rows=100_000, memory_bytes=64 * 2**20, row_group_rows=500)
    partitioner.add("x", make_table(6_000, "x"))
    files = partitioner.finish()
    assert len(files) == 1 and pq.ParquetFile(files[0].path).metadata.num_rows == 6_000
    written = files[0].size_bytes
    assert 1 <= len(started) <= written // (64 * 1024)
    assert all(Path(name).name.startswith(".tmp-") for name in started)  # while the chunk was still being written
