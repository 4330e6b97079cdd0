"""Write, describe and verify content-addressed parquet chunks (the unit every backend stores)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage_core.errors import InvalidBatchError
from storage_core.layout import check_hotkey
from storage_core.schema import SCHEMA_VERSION, schema_for, schema_problem
from storage_core.values import StagedFile, UploadBatch

#: Rows per row group: small enough that a checker's range reads of the uri column stay cheap.
ROW_GROUP_ROWS = 8_192
#: The default parquet codec: snappy, as pandas and the subnet's HuggingFace uploads use. zstd makes
#: files ~30% smaller for ~2.5x the encoding CPU (measured: ~1.5 vs ~3 s per million posts on one core);
#: a miner short of bandwidth rather than CPU picks it with ``ExportOptions(compression="zstd")``.
COMPRESSION = "snappy"
COMPRESSIONS = ("snappy", "zstd")
#: Columns with few distinct values per row group: dictionary encoding pays for these only (trying it
#: on text, URIs and ids costs time and falls back to plain anyway).
DICTIONARY_COLUMNS = ("source", "label", "username", "community_name", "data_type")
#: The columns whose min/max statistics a checker relies on (storage_core.verify): every row group
#: must carry them. Statistics of the other columns (free text, profile fields, counts) help nobody and
#: would swell every footer a check reads: with the 37 columns of schema v2, fourfold.
STATISTICS_COLUMNS = ("uri", "datetime", "source", "content_size_bytes")


def leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's column paths for ``schema``: a list column's values live at ``name.list.element``
    (per-column writer settings keyed by the bare name would miss them)."""
    return [f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name for field in schema]


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read into one reused buffer (never the whole file in memory)."""
    with open(path, "rb", buffering=0) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_chunk(table: pa.Table, source: str, directory: Path, compression: str = COMPRESSION) -> StagedFile:
    """Write ``table`` (rows of one source and one UTC day) as a content-addressed chunk in ``directory``.

    The file is written to a temporary name, fsynced, then renamed to ``{sha256}.parquet``, so a crash
    never leaves a half-written chunk under a final name.
    """
    if table.num_rows == 0:
        raise InvalidBatchError("refusing to write an empty chunk")
    table = table.cast(schema_for(source))
    chunk = ChunkFile(source, directory, compression)
    try:
        chunk.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        chunk.close()
    except BaseException:
        chunk.abort()
        raise
    return seal_chunk(chunk, directory)


#: Bytes gathered before each write to a chunk file: parquet writes each page and page header on its
#: own, some thirty small writes per row group. Small, as an export keeps one chunk open per day.
SINK_BUFFER_BYTES = 64 << 10
#: Bytes read at a time when hashing what was written (one reused buffer per thread).
_HASH_READ_BYTES = 256 << 10
_hash_buffers = threading.local()


class ChunkFile:
    """A chunk being written to a temporary file in ``directory``: row groups go in through ``writer``.

    ``close()`` once the rows are in, then ``seal_chunk``. ``hash_written()`` hashes what has reached
    the file so far, read back while it is still in the page cache, so that sealing the last chunks of
    an export (all at once) has little left to hash. Temporary names start with ".tmp-", so a spool's
    recovery removes them after a crash.
    """

    def __init__(self, source: str, directory: Path, compression: str = COMPRESSION) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown chunk compression {compression!r} (known: {', '.join(COMPRESSIONS)})")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        self._sha256 = hashlib.sha256()
        self._hashed = 0
        schema = schema_for(source)
        self._sink = pa.output_stream(str(self.path), buffer_size=SINK_BUFFER_BYTES)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)  # hashing, writeback and the final fsync
        except OSError:
            self._sink.close()
            self.path.unlink(missing_ok=True)
            raise
        try:
            self.writer = pq.ParquetWriter(
                self._sink,
                schema,
                # The uri column is what a validator reads most (one row group per claimed URI): zstd halves
                # it (sorted URIs share long prefixes) for little CPU, as it is ~50 bytes of a ~1.4 kB row.
                compression={path: "zstd" if path == "uri" else compression for path in leaf_paths(schema)},
                use_dictionary=[name for name in DICTIONARY_COLUMNS if name in schema.names],
                write_statistics=list(STATISTICS_COLUMNS),
                # No serialized Arrow schema in the footer: parquet's own types read back as the same Arrow
                # schema (tested), and every footer a validator reads is ~3 KiB (about a third) smaller.
                store_schema=False,
            )
            self._metadata = {key.decode(): value.decode() for key, value in (schema.metadata or {}).items()}
        except BaseException:
            self._sink.close()
            self.release(sync=False)
            self.path.unlink(missing_ok=True)
            raise

    @property
    def written_bytes(self) -> int:
        """Bytes that have reached the file so far."""
        return os.fstat(self._fd).st_size

    @property
    def unhashed_bytes(self) -> int:
        """Bytes that reached the file since ``hash_written`` last ran."""
        return self.written_bytes - self._hashed

    def fileno(self) -> int:
        return self._fd

    def hash_written(self) -> None:
        """Hash the bytes that reached the file since the last call."""
        buffer = getattr(_hash_buffers, "buffer", None)
        if buffer is None:
            buffer = _hash_buffers.buffer = bytearray(_HASH_READ_BYTES)
        view = memoryview(buffer)
        end = self.written_bytes
        while self._hashed < end:
            read = os.preadv(self._fd, [view[: min(len(view), end - self._hashed)]], self._hashed)
            if read <= 0:
                raise OSError(f"{self.path}: could not read back bytes {self._hashed}-{end} to hash them")
            self._sha256.update(view[:read])
            self._hashed += read

    def close(self) -> None:
        """Write the footer, hand every byte to the operating system and finish the hash."""
        self.writer.add_key_value_metadata(self._metadata)  # the schema's metadata, as plain parquet key-values
        self.writer.close()
        self._sink.close()
        self.hash_written()

    @property
    def sha256(self) -> str:
        """The sha256 of the whole file; only complete after ``close``."""
        return self._sha256.hexdigest()

    def release(self, *, sync: bool) -> None:
        """Let go of the file, fsyncing it first when ``sync``."""
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        """Close everything quietly and remove the temporary file (after an error)."""
        for step in (self.writer.close, self._sink.close):
            try:
                step()
            except (pa.ArrowException, OSError, ValueError):
                pass
        try:
            self.release(sync=False)
        except OSError:
            pass
        self.path.unlink(missing_ok=True)


def seal_chunk(chunk: ChunkFile, directory: Path) -> StagedFile:
    """fsync a closed chunk, rename it to ``{sha256}.parquet`` and describe it."""
    chunk.release(sync=True)
    digest = chunk.sha256
    final = directory / f"{digest}.parquet"
    os.replace(chunk.path, final)
    return describe_chunk(final, digest)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def describe_chunk(path: Path, sha256: str | None = None) -> StagedFile:
    """Build the StagedFile of an existing chunk from its parquet footer and statistics."""
    parquet = pq.ParquetFile(path)
    problem = schema_problem(parquet.schema_arrow)
    if problem:
        raise InvalidBatchError(f"{path.name}: {problem}")
    source = parquet.schema_arrow.metadata[b"storage_core.source"].decode()
    column = parquet.schema_arrow.get_field_index("datetime")
    unit = json.loads(parquet.schema.column(column).logical_type.to_json()).get("timeUnit")
    if unit != "microseconds":  # what the schema's timestamp[us, UTC] is stored as
        raise InvalidBatchError(f"{path.name}: datetime column is stored in {unit}, not microseconds")
    lows, highs = [], []
    for index in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(index).column(column).statistics
        if stats is None or not stats.has_min_max:
            raise InvalidBatchError(f"{path.name}: row group {index} has no datetime statistics")
        # The raw integers, not stats.min: converting through a pyarrow scalar imports pandas (~28 MB).
        lows.append(stats.min_raw)
        highs.append(stats.max_raw)
    low, high = _EPOCH + timedelta(microseconds=min(lows)), _EPOCH + timedelta(microseconds=max(highs))
    if low.date() != high.date():
        raise InvalidBatchError(f"{path.name}: rows span {low.date()} to {high.date()}; a chunk holds one day")
    return StagedFile(
        path=path,
        sha256=sha256 or sha256_file(path),
        size_bytes=path.stat().st_size,
        rows=parquet.metadata.num_rows,
        source=source,
        date=low.date().isoformat(),
        min_datetime=low,
        max_datetime=high,
        schema_version=SCHEMA_VERSION,
    )


def verify_staged_file(staged: StagedFile) -> None:
    """Raise InvalidBatchError naming the file when it is missing or differs from its description."""
    path = staged.path
    if not path.is_file():
        raise InvalidBatchError(f"staged file {path} does not exist")
    size = path.stat().st_size
    if size != staged.size_bytes:
        raise InvalidBatchError(f"staged file {path.name}: size is {size} bytes, batch says {staged.size_bytes}")
    digest = sha256_file(path)
    if digest != staged.sha256:
        raise InvalidBatchError(f"staged file {path.name}: sha256 is {digest}, batch says {staged.sha256}")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidBatchError(f"staged file {path.name} is not a parquet file: {error}") from error
    problem = schema_problem(schema)
    if problem:
        raise InvalidBatchError(f"staged file {path.name}: {problem}")


def verify_batch(batch: UploadBatch) -> None:
    """Check a whole batch before any byte is sent: hotkey, files, checksums, schemas, no duplicates."""
    try:
        check_hotkey(batch.miner_hotkey)
    except ValueError as error:
        raise InvalidBatchError(str(error)) from error
    seen: set[str] = set()
    for staged in batch.files:
        if staged.sha256 in seen:
            raise InvalidBatchError(f"chunk {staged.sha256} appears twice in the batch")
        seen.add(staged.sha256)
        verify_staged_file(staged)


def read_uris(paths: Iterable[Path]) -> set[str]:
    """All URIs in the given chunks, reading only the uri column."""
    uris: set[str] = set()
    for path in paths:
        # ParquetFile, not read_table: pyarrow 17 would read the key=value path segments as hive partitions
        uris.update(pq.ParquetFile(path).read(columns=["uri"]).column("uri").to_pylist())
    return uris
