"""The partitioner: every row once, one source and day per chunk, bounded row groups, no leftovers on error."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage_core.export.partition as partition
from storage_core.chunks import verify_staged_file
from storage_core.export.partition import Partitioner
from storage_core.schema import schema_for
from storage_core.testing.data import make_table


def _pages(days: int = 5, per_day: int = 120, page_rows: int = 50) -> list[pa.Table]:
    """Rows of several days for one source, shuffled by uri order across pages (as a primary-key scan)."""
    whole = pa.concat_tables(
        [make_table(per_day, "x", seed=day, day=date(2026, 11, 1 + day)).cast(schema_for("x")) for day in range(days)]
    ).sort_by("uri")
    return [whole.slice(start, page_rows) for start in range(0, whole.num_rows, page_rows)]


@pytest.mark.parametrize("memory_bytes", [1, 20_000, 64 * 2**20])
def test_every_row_lands_once_in_a_chunk_of_its_day(tmp_path, memory_bytes):
    pages = _pages()
    partitioner = Partitioner(tmp_path, chunk_rows=100, memory_bytes=memory_bytes, row_group_rows=32)
    for page in pages:
        partitioner.add("x", page)
    files = partitioner.finish()
    seen: Counter = Counter()
    for staged in files:
        verify_staged_file(staged)
        metadata = pq.ParquetFile(staged.path).metadata
        assert staged.rows <= 100
        assert all(metadata.row_group(i).num_rows <= 32 for i in range(metadata.num_row_groups))
        table = pq.read_table(staged.path)
        assert {d.date().isoformat() for d in table.column("datetime").to_pylist()} == {staged.date}
        uris = table.column("uri").to_pylist()
        assert uris == sorted(uris)
        seen.update(uris)
    expected = [uri for page in pages for uri in page.column("uri").to_pylist()]
    assert sorted(seen) == sorted(expected) and max(seen.values()) == 1
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_a_tight_budget_writes_small_row_groups_and_copies_small_streams(tmp_path, monkeypatch):
    compacted = []
    original = Partitioner._compact
    monkeypatch.setattr(Partitioner, "_compact", lambda self, stream: (compacted.append(stream.rows),
                                                                        original(self, stream)))
    partitioner = Partitioner(tmp_path, chunk_rows=1_000, memory_bytes=1, row_group_rows=64)
    for page in _pages(days=20, per_day=30, page_rows=40):  # ~2 rows of each day per page
        partitioner.add("x", page)
    files = partitioner.finish()
    assert compacted and all(rows < 64 // 16 for rows in compacted)  # only streams under a 16th of a row group
    groups = sum(pq.ParquetFile(f.path).metadata.num_row_groups for f in files)
    assert groups > len(files)  # memory, not size, cut the row groups


def test_a_writer_error_surfaces_and_leaves_no_partial_chunk(tmp_path, monkeypatch):
    opened = []
    original = partition.ChunkFile

    def failing_open(source, directory, compression):
        if opened:
            raise OSError("disk full (simulated)")
        opened.append(1)
        return original(source, directory, compression)

    monkeypatch.setattr(partition, "ChunkFile", failing_open)
    partitioner = Partitioner(tmp_path, chunk_rows=1_000, memory_bytes=1, row_group_rows=16)
    with pytest.raises(OSError, match="disk full"):
        for page in _pages(days=3):
            partitioner.add("x", page)
        partitioner.finish()
    partitioner.discard()
    assert not list(tmp_path.glob(".tmp-*"))  # the one chunk that was open is gone; nothing half-written stays


def test_discard_removes_open_chunks(tmp_path):
    partitioner = Partitioner(tmp_path, chunk_rows=1_000, memory_bytes=1, row_group_rows=16)
    for page in _pages(days=2):
        partitioner.add("x", page)
    partitioner.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_compacted_stream_is_not_copied_again_and_too_many_small_ones_are_written(tmp_path, monkeypatch):
    compacted_owned = []
    original = Partitioner._compact
    monkeypatch.setattr(Partitioner, "_compact", lambda self, stream: (compacted_owned.append(stream.owned),
                                                                        original(self, stream)))
    pages = _pages(days=28, per_day=6, page_rows=28)  # one row of each day a page: every stream stays small
    for budget in (30_000, 1):
        partitioner = Partitioner(tmp_path / str(budget), chunk_rows=1_000, memory_bytes=budget, row_group_rows=1_024)
        for page in pages:
            partitioner.add("x", page)
            assert partitioner._held <= budget  # after every page, whatever the shape of the data
        files = partitioner.finish()
        assert sum(f.rows for f in files) == sum(page.num_rows for page in pages)
    assert compacted_owned and not any(compacted_owned)


def test_the_writer_backlog_is_bounded_by_bytes_and_takes_a_burst_without_waiting(tmp_path, monkeypatch):
    release = threading.Event()
    original = partition._ChunkWriter._write
    monkeypatch.setattr(partition._ChunkWriter, "_write", lambda self, key, table: (release.wait(10),
                                                                                    original(self, key, table)))
    page = _pages(days=1, per_day=400, page_rows=400)[0]
    groups = [page.slice(start, 50) for start in range(0, 400, 50)]
    writer = partition._ChunkWriter(tmp_path, 1_000, 50, "snappy", backlog_bytes=sum(g.nbytes for g in groups[:4]))
    for group in groups[:4]:  # a burst up to the bound goes in while the writer is stuck
        writer.put(("x", "2026-11-01"), group, group.nbytes)
    fifth = threading.Thread(target=writer.put, args=(("x", "2026-11-01"), groups[4], groups[4].nbytes))
    fifth.start()
    fifth.join(0.5)
    assert fifth.is_alive()  # past the bound: back-pressure
    release.set()
    fifth.join(10)
    assert not fifth.is_alive()
    for group in groups[5:]:
        writer.put(("x", "2026-11-01"), group, group.nbytes)
    (staged,) = writer.close()
    assert staged.rows == 400 and pq.read_table(staged.path).column("uri").to_pylist() == page.column("uri").to_pylist()


def test_a_compacted_copy_holds_only_its_rows_in_buffers_of_its_own():
    from storage_core.export.arrow_values import owned_copy

    table = make_table(40, "x")
    parts = pa.concat_tables([table.slice(3, 5), table.slice(20, 7)])
    copy = owned_copy(parts)
    assert copy.equals(parts) and copy.schema == table.schema
    original = {buffer.address for column in table.columns for chunk in column.chunks
                for buffer in chunk.buffers() if buffer is not None}
    for column in copy.columns:
        assert column.num_chunks == 1
        assert not {buffer.address for buffer in column.chunk(0).buffers() if buffer is not None} & original
    assert copy.get_total_buffer_size() < table.get_total_buffer_size()


def test_full_chunks_are_sealed_off_the_writer_thread_while_rows_still_arrive(tmp_path, monkeypatch):
    sealed_on: list[str] = []
    original = partition.seal_chunk

    def recording_seal(chunk, directory):
        sealed_on.append(threading.current_thread().name)
        return original(chunk, directory)

    monkeypatch.setattr(partition, "seal_chunk", recording_seal)
    partitioner = Partitioner(tmp_path, chunk_rows=40, memory_bytes=64 * 2**20, row_group_rows=16)
    pages = _pages(days=2, per_day=120)
    for page in pages:
        partitioner.add("x", page)
    files = partitioner.finish()
    assert sum(f.rows for f in files) == sum(page.num_rows for page in pages)
    assert len(files) == len(sealed_on) >= 6
    assert all(name.startswith("storage-core-chunk-seal") for name in sealed_on)
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_seal_that_fails_mid_export_surfaces_and_keeps_the_chunks_already_sealed(tmp_path, monkeypatch):
    original = partition.seal_chunk
    calls: list[int] = []

    def failing_seal(chunk, directory):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("fsync failed (simulated)")
        return original(chunk, directory)

    monkeypatch.setattr(partition, "seal_chunk", failing_seal)
    partitioner = Partitioner(tmp_path, chunk_rows=40, memory_bytes=64 * 2**20, row_group_rows=16)
    with pytest.raises(OSError, match="fsync failed"):
        for page in _pages(days=2, per_day=120):
            partitioner.add("x", page)
        partitioner.finish()
    partitioner.discard()
    kept = list(tmp_path.glob("*.parquet"))
    assert kept  # sealed before the failure: complete, content-addressed, kept
    for path in kept:
        assert pq.ParquetFile(path).metadata.num_rows <= 40


def test_the_writer_backlog_is_the_budget_or_half_of_it_with_field_encoding(tmp_path):
    from cryptography.fernet import Fernet

    from storage_core.export import ExportOptions, FieldEncoder

    assert ExportOptions(memory_bytes=16).backlog_bytes() == 16
    encoder = FieldEncoder.from_keys(url=Fernet.generate_key())
    assert ExportOptions(memory_bytes=16, encoder=encoder).backlog_bytes() == 8
    assert ExportOptions(memory_bytes=16, encoder=encoder, writer_backlog_bytes=5).backlog_bytes() == 5
    partitioner = Partitioner(tmp_path, chunk_rows=10, memory_bytes=100, backlog_bytes=7)
    assert partitioner._writer.backlog_bytes == 7
    partitioner.discard()


def test_one_array_takes_a_lone_chunk_as_it_is_and_joins_several():
    from storage_core.export.arrow_values import one_array

    values = pa.array(["a", "bb", "ccc"])
    lone = one_array(pa.chunked_array([values]))
    assert lone.buffers()[2].address == values.buffers()[2].address  # no copy
    assert one_array(pa.chunked_array([values, values])).to_pylist() == ["a", "bb", "ccc"] * 2
    assert one_array(pa.chunked_array([], pa.string())).to_pylist() == []
    assert one_array(values) is values


def test_the_writer_is_told_the_bytes_its_row_groups_hold(tmp_path, monkeypatch):
    sizes: list[tuple[int, int]] = []
    original = partition._ChunkWriter.put
    monkeypatch.setattr(partition._ChunkWriter, "put", lambda self, key, table, size: (
        sizes.append((size, table.nbytes)), original(self, key, table, size)))
    partitioner = Partitioner(tmp_path, chunk_rows=10_000, memory_bytes=1 << 30, row_group_rows=256)
    for page in _pages(days=3, per_day=600, page_rows=300):
        partitioner.add("x", page)
    partitioner.finish()
    assert len(sizes) > 3
    for estimate, exact in sizes:  # an estimate from the page's bytes per row, not Table.nbytes of slices
        assert 0.8 * exact <= estimate <= 1.25 * exact
