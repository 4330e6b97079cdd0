"""Batch schema, content-addressed chunks and object keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_core.chunks import ChunkFile, describe_chunk, seal_chunk, sha256_file, verify_batch, write_chunk
from storage_core.errors import InvalidBatchError
from storage_core.layout import hotkey_of_key, key_for, object_key
from storage_core.schema import SCHEMA_VERSION, schema_for, schema_problem
from storage_core.testing.data import make_batch, make_table, recent_day

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def test_chunk_is_content_addressed_and_described(tmp_path: Path) -> None:
    table = make_table(1000, "x", seed=1)
    staged = write_chunk(table, "x", tmp_path)
    assert staged.path.name == f"{staged.sha256}.parquet"
    assert staged.rows == 1000 and staged.source == "x" and staged.date == recent_day().isoformat()
    assert staged.schema_version == SCHEMA_VERSION
    again = write_chunk(table, "x", tmp_path / "again")
    assert again.sha256 == staged.sha256  # same rows, same bytes, same address
    assert describe_chunk(staged.path) == staged


def test_a_chunk_hashed_as_it_is_written_has_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    table = make_table(30_000, "x", seed=3).sort_by("uri")
    chunk = ChunkFile("x", tmp_path)
    for start in range(0, table.num_rows, 700):  # many row groups, many sink buffers
        chunk.writer.write_table(table.slice(start, 700), row_group_size=700)
    chunk.close()
    staged = seal_chunk(chunk, tmp_path)
    assert staged.size_bytes > 2 * 2**20  # past the sink buffer twice
    assert staged.sha256 == sha256_file(staged.path) and staged.path.name == f"{staged.sha256}.parquet"
    assert pq.read_table(staged.path).column("uri").to_pylist() == table.column("uri").to_pylist()
    assert [path.name for path in tmp_path.iterdir()] == [staged.path.name]


def test_an_aborted_chunk_leaves_no_file(tmp_path: Path) -> None:
    chunk = ChunkFile("x", tmp_path)
    chunk.writer.write_table(make_table(100, "x"), row_group_size=50)
    chunk.abort()
    assert list(tmp_path.iterdir()) == []


def test_chunk_spanning_two_days_is_refused(tmp_path: Path) -> None:
    table = pa.concat_tables([make_table(10, "x", 1), make_table(10, "x", 2, day=datetime(2026, 11, 3).date())])
    staged_path = tmp_path / "two-days.parquet"
    pq.write_table(table, staged_path)
    with pytest.raises(InvalidBatchError, match="one day"):
        describe_chunk(staged_path)


def test_schema_problems_are_named() -> None:
    assert schema_problem(schema_for("reddit")) is None
    assert "missing storage_core.schema_version" in schema_problem(pa.schema([("uri", pa.string())]))
    renamed = schema_for("x").remove(0).insert(0, pa.field("url_", pa.string()))
    assert "missing column 'uri'" in schema_problem(renamed)
    with pytest.raises(ValueError, match="unknown source"):
        schema_for("tiktok")


def test_verify_batch_catches_each_problem(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, HOTKEY, rows=100, chunks=2)
    verify_batch(batch)
    first = batch.files[0]
    with pytest.raises(InvalidBatchError, match="sha256"):
        verify_batch(attrs.evolve(batch, files=(attrs.evolve(first, sha256="f" * 64),)))
    with pytest.raises(InvalidBatchError, match="size"):
        verify_batch(attrs.evolve(batch, files=(attrs.evolve(first, size_bytes=1),)))
    with pytest.raises(InvalidBatchError, match="twice"):
        verify_batch(attrs.evolve(batch, files=(first, first)))
    with pytest.raises(InvalidBatchError, match="ss58"):
        verify_batch(attrs.evolve(batch, miner_hotkey="../../etc"))


def test_object_keys_follow_the_hive_layout(tmp_path: Path) -> None:
    staged = make_batch(tmp_path, HOTKEY, rows=10).files[0]
    key = key_for(HOTKEY, staged)
    assert key == f"hotkey={HOTKEY}/source=x/date={recent_day().isoformat()}/{staged.sha256[:32]}.parquet"
    assert hotkey_of_key(key) == HOTKEY
    for bad in ("../x", "a/b", ""):
        with pytest.raises(ValueError):
            object_key(HOTKEY, bad, "2026-11-01", staged.sha256)
    with pytest.raises(ValueError):
        object_key(HOTKEY, "x", "2026-11-01/../..", staged.sha256)
    assert datetime.combine(recent_day(), datetime.min.time(), UTC) <= staged.min_datetime


def test_a_chunk_whose_writer_cannot_start_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import storage_core.chunks as chunks

    def refusing(*_args: object, **_kwargs: object) -> None:
        raise OSError("no parquet writer (simulated)")

    monkeypatch.setattr(chunks.pq, "ParquetWriter", refusing)
    with pytest.raises(OSError, match="simulated"):
        ChunkFile("x", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["x", "reddit"])
def test_a_chunk_footer_reads_back_the_schema_without_a_serialized_arrow_schema(tmp_path: Path, source: str) -> None:
    """Footers carry parquet's own types and the schema's metadata as key-values, not ``ARROW:schema``
    (a third of every footer a validator reads); the Arrow schema read back has the same types and metadata
    (list items are named ``element``, parquet's compliant name, where Arrow says ``item``)."""
    staged = write_chunk(make_table(300, source, seed=5), source, tmp_path)
    parquet = pq.ParquetFile(staged.path)
    assert b"ARROW:schema" not in (parquet.metadata.metadata or {})
    assert parquet.schema_arrow.equals(schema_for(source))
    assert parquet.schema_arrow.metadata == schema_for(source).metadata
    assert schema_problem(parquet.schema_arrow) is None
