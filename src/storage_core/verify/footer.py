"""Open one of a miner's objects for checking: its name, its checksum and its parquet footer, with caps.

A hostile miner controls every byte of its files, footer included, so nothing in a footer is believed
before it is checked, and a file that cannot be checked within bounded work is invalid (the miner made
it), never "could not validate". Every refusal is an ``ObjectError`` naming the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_core.errors import BackendError
from storage_core.layout import ObjectName
from storage_core.schema import METADATA_SOURCE_KEY, schema_problem
from storage_core.verify.rangefile import RangeFile
from storage_core.verify.store import ListedObject, ObjectError, ObjectStore

#: Bytes read from an object's end in the first request: storage-core footers are a few KiB.
TAIL_READ_BYTES = 16 * 1024


#: What decoding a miner's bytes can raise: pyarrow's errors, and plain Python ones for malformed values.
DECODE_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, IndexError, OverflowError, TypeError)


@contextmanager
def miner_bytes(key: str, what: str) -> Iterator[None]:
    """Turn a failure to decode what the miner stored into that object's ``ObjectError``.

    A store's own failure (``BackendError``) passes through untouched, even when pyarrow raised it from
    inside a read: it is the backend that could not answer, not the miner's file that is bad.
    """
    try:
        yield
    except (BackendError, ObjectError):
        raise
    except DECODE_ERRORS as error:  # UnicodeDecodeError is a ValueError
        raise ObjectError(key, f"{what}: {type(error).__name__}: {error}") from None


@attrs.frozen
class Limits:
    """How much work one object may cost a checker; past any of these the object is invalid."""

    max_object_bytes: int = 256 * 1024 * 1024
    max_footer_bytes: int = 1024 * 1024
    max_row_groups: int = 1024
    #: Fewer rows per row group on average than this, over more than ``small_file_row_groups`` groups, is a
    #: file made to be slow. A file of a few groups is cheap whatever their size: an honest export of a
    #: small day can cut a handful of tiny groups (memory pressure flushes every open day at once).
    min_average_group_rows: int = 32
    small_file_row_groups: int = 16
    max_rows: int = 262_144


@attrs.frozen
class RowGroup:
    """What a checked footer says of one row group: its rows and the range of its ``uri`` values."""

    index: int
    rows: int
    uri_min: str
    uri_max: str

    def may_hold(self, uri: str) -> bool:
        return self.uri_min <= uri <= self.uri_max


@attrs.frozen
class OpenedFile:
    """An object whose name, checksum, schema and footer passed: ready for column reads."""

    listed: ListedObject
    name: ObjectName
    parquet: pq.ParquetFile = attrs.field(eq=False, repr=False)
    row_groups: tuple[RowGroup, ...]
    footer_bytes: int = 0

    @property
    def key(self) -> str:
        return self.listed.key


def open_object(store: ObjectStore, listed: ListedObject, name: ObjectName, limits: Limits,
                tail_bytes: int = TAIL_READ_BYTES) -> OpenedFile:
    """Read and check one object's tail and footer; raise ``ObjectError`` for anything the miner got wrong.

    ``tail_bytes``: how much to read from the end first (a manifest says how long each chunk's footer is).
    """
    key = listed.key
    if listed.size < 12:
        raise ObjectError(key, f"object is {listed.size} bytes: too small to be parquet")
    if listed.size > limits.max_object_bytes:
        raise ObjectError(key, f"object is {listed.size} bytes, over the {limits.max_object_bytes}-byte cap")
    tail = store.read_tail(key, min(listed.size, max(12, min(tail_bytes, limits.max_footer_bytes + 8))))
    if tail.size != listed.size:
        raise ObjectError(key, f"object is {tail.size} bytes but was listed with {listed.size}")
    _check_checksum(store, listed, name, tail.sha256 or listed.sha256)
    data = _complete_tail(store, key, listed.size, tail.data, limits)
    with miner_bytes(key, "unreadable parquet footer"):
        metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + data[-(int.from_bytes(data[-8:-4], "little") + 8):]))
        parquet = pq.ParquetFile(RangeFile(store, key, listed.size, data), metadata=metadata, pre_buffer=False)
        schema = parquet.schema_arrow
        problem = schema_problem(schema)
        if problem:
            raise ObjectError(key, f"schema: {problem}")
        declared = (schema.metadata or {}).get(METADATA_SOURCE_KEY, b"").decode("utf-8", "replace")
        if declared != name.source:
            raise ObjectError(key, f"file holds source {declared!r} but is stored under source={name.source}")
        return OpenedFile(listed, name, parquet, _row_groups(key, metadata, listed.size, limits),
                          int.from_bytes(data[-8:-4], "little"))


def _check_checksum(store: ObjectStore, listed: ListedObject, name: ObjectName, recorded: str | None) -> None:
    """The object's sha256 must start with the hash in its name: hashed here when the store recorded none."""
    if recorded is None:
        digest = hashlib.sha256()
        for start in range(0, listed.size, 1 << 20):
            digest.update(store.read_range(listed.key, start, min(listed.size, start + (1 << 20))))
        recorded = digest.hexdigest()
    if not recorded.lower().startswith(name.name_hash):
        raise ObjectError(listed.key, f"content sha256 {recorded} does not match the name {name.name_hash}")


def _complete_tail(store: ObjectStore, key: str, size: int, tail: bytes, limits: Limits) -> bytes:
    """``tail`` extended (one more range read) until it holds the whole footer, within the footer cap."""
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ObjectError(key, "not a parquet file (no PAR1 magic at the end)")
    footer_length = int.from_bytes(tail[-8:-4], "little")
    if footer_length > limits.max_footer_bytes:
        raise ObjectError(key, f"footer of {footer_length} bytes is over the {limits.max_footer_bytes}-byte cap")
    needed = footer_length + 8
    if needed + 4 > size:
        raise ObjectError(key, f"footer length {footer_length} does not fit a {size}-byte file")
    if needed > len(tail):
        extra = store.read_range(key, size - needed, size - len(tail))
        if len(extra) != size - len(tail) - (size - needed):
            raise ObjectError(key, "short read of the footer")
        tail = extra + tail
    return tail


def _text(value: object) -> str:
    """A string statistic as text; bytes that are not UTF-8 make the footer invalid (``miner_bytes``)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _row_groups(key: str, metadata: pq.FileMetaData, size: int, limits: Limits) -> tuple[RowGroup, ...]:
    """Check the footer's counts and ``uri`` statistics; each row group as the checks may rely on it."""
    if metadata.num_row_groups > limits.max_row_groups:
        raise ObjectError(key, f"{metadata.num_row_groups} row groups, over the cap of {limits.max_row_groups}: "
                               "cannot be checked within bounded work")
    if metadata.num_rows > limits.max_rows or metadata.num_rows < 1:
        raise ObjectError(key, f"footer claims {metadata.num_rows} rows (allowed: 1 to {limits.max_rows})")
    if metadata.num_row_groups > limits.small_file_row_groups and \
            metadata.num_rows < limits.min_average_group_rows * metadata.num_row_groups:
        raise ObjectError(key, f"{metadata.num_row_groups} row groups for {metadata.num_rows} rows: fewer than "
                               f"{limits.min_average_group_rows} rows a group cannot be checked within bounded work")
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    uri = paths.index("uri")
    flat = [i for i, path in enumerate(paths) if "." not in path]  # list columns hold more values than rows
    groups: list[RowGroup] = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        rows = group.num_rows
        for column in flat:
            chunk = group.column(column)
            if chunk.num_values != rows:
                raise ObjectError(key, f"row group {index}: column {paths[column]} holds {chunk.num_values} values "
                                       f"for {rows} rows: lying footer")
            # Never read ``chunk.compression`` here: pyarrow 26 aborts the whole process (an uncaught C++
            # exception) on a codec value it does not know, so one hostile footer would stop a validator.
            # A bad codec is found safely when the column is read (an OSError, the object's problem).
        chunk = group.column(uri)
        compressed = chunk.total_compressed_size
        if compressed < 0 or compressed > size or rows > 8 * max(compressed, 1):
            raise ObjectError(key, f"row group {index} claims {rows} rows in {compressed} bytes of uri: implausible")
        statistics = chunk.statistics
        if statistics is None or not statistics.has_min_max:
            raise ObjectError(key, f"row group {index} has no uri statistics: cannot be checked within bounded work")
        if statistics.has_null_count and statistics.null_count:
            raise ObjectError(key, f"row group {index} has {statistics.null_count} rows without a uri")
        groups.append(RowGroup(index, rows, _text(statistics.min_raw), _text(statistics.max_raw)))
    if sum(group.rows for group in groups) != metadata.num_rows:
        raise ObjectError(key, f"footer claims {metadata.num_rows} rows but its row groups hold "
                               f"{sum(group.rows for group in groups)}: lying footer")
    return tuple(groups)


def read_columns(opened: OpenedFile, group: RowGroup, columns: Sequence[str] | None) -> pa.Table:
    """Columns of one row group, checked against the footer: its row count and its ``uri`` statistics."""
    key = opened.key
    with miner_bytes(key, f"row group {group.index} does not decode"):
        table = opened.parquet.read_row_group(group.index, columns=list(columns) if columns else None,
                                              use_threads=False)
    if table.num_rows != group.rows:
        raise ObjectError(key, f"row group {group.index} decodes to {table.num_rows} rows, footer says {group.rows}")
    uris = table.column("uri")
    if uris.null_count:
        raise ObjectError(key, f"row group {group.index} has rows without a uri")
    if table.num_rows:
        bounds = pc.min_max(uris)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low < group.uri_min or high > group.uri_max:
            raise ObjectError(key, f"row group {group.index}: uri statistics lie (footer says {group.uri_min!r}.."
                                   f"{group.uri_max!r}, data holds {low!r}..{high!r})")
    return table
