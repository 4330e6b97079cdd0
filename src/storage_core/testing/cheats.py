"""Files a dishonest miner makes, for planted-miner tests and the conformance kit's integrity tests.

Each function takes an honest table of one source and day (``make_table``) and returns a ``Planted``:
the bytes the cheater stores, the key it stores them under, and the URIs it will claim. Every file is
named by its real sha256 (so the name check passes) unless the cheat is about the name: what must
catch it is the deeper check the cheat is aimed at.
"""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_core.chunks import ROW_GROUP_ROWS
from storage_core.layout import object_key


@attrs.frozen
class Planted:
    """What a cheater stores (``data`` under ``key``) and the URIs it claims from it."""

    key: str
    data: bytes
    claims: tuple[str, ...]
    cheat: str
    also: tuple[tuple[str, bytes], ...] = ()  # other objects the cheat stores first (key, bytes)


def parquet_bytes(table: pa.Table, row_group_size: int = ROW_GROUP_ROWS, **options: Any) -> bytes:
    """``table`` (schema and metadata as given) as a snappy parquet file, with writer ``options``."""
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size, compression="snappy", **options)
    return sink.getvalue()


def _day(table: pa.Table) -> str:
    return pc.min(table.column("datetime")).as_py().date().isoformat()


def _source(table: pa.Table) -> str:
    return (table.schema.metadata or {})[b"storage_core.source"].decode()


def planted(hotkey: str, table: pa.Table, data: bytes, cheat: str, *, source: str | None = None,
            date: str | None = None) -> Planted:
    """``data`` named by its sha256 under ``hotkey``'s layout key, claiming every URI of ``table``."""
    key = object_key(hotkey, source or _source(table), date or _day(table), hashlib.sha256(data).hexdigest())
    return Planted(key, data, tuple(table.column("uri").to_pylist()), cheat)


def honest(hotkey: str, table: pa.Table) -> Planted:
    return planted(hotkey, table, parquet_bytes(table), "honest")


def uri_shells(hotkey: str, table: pa.Table) -> Planted:
    """Right URIs, empty content: every text column blanked."""
    columns = {name: table.column(name) for name in table.column_names}
    for name in ("text", "body", "title", "username", "id"):
        if name in columns:
            columns[name] = pa.array([""] * table.num_rows, pa.string())
    shells = pa.table(columns, schema=table.schema)
    return planted(hotkey, table, parquet_bytes(shells), "uri shells")


def inflated_sizes(hotkey: str, table: pa.Table) -> Planted:
    """``content_size_bytes`` (what SN13 rewards) multiplied by 50."""
    sizes = pc.multiply(table.column("content_size_bytes"), 50)
    inflated = table.set_column(table.schema.get_field_index("content_size_bytes"), "content_size_bytes",
                                sizes).cast(table.schema)
    return planted(hotkey, table, parquet_bytes(inflated), "inflated content_size_bytes")


def shifted_datetimes(hotkey: str, table: pa.Table, days: int) -> Planted:
    """Every datetime (and content timestamp) moved by ``days``, stored under the honest day's partition."""
    shift = pa.scalar(timedelta(days=days), pa.duration("us"))
    changed = table
    for name in ("datetime", "timestamp", "created_at"):
        index = changed.schema.get_field_index(name)
        if index >= 0:
            changed = changed.set_column(index, name, pc.add(changed.column(name), shift))
    changed = changed.cast(table.schema)
    return planted(hotkey, table, parquet_bytes(changed), f"datetimes shifted by {days} days")


def stale_relabelled(hotkey: str, table: pa.Table, freshness_days: int = 30) -> Planted:
    """Rows from before the freshness window, stored under today's fresh date partition."""
    old = shifted_datetimes(hotkey, table, -(freshness_days + 10))
    return attrs.evolve(old, cheat="stale rows relabelled as fresh")


def stale(hotkey: str, table: pa.Table, freshness_days: int = 30) -> Planted:
    """Honest rows from before the freshness window, under their own (old) date partition."""
    old = shifted_datetimes(hotkey, table, -(freshness_days + 10))
    changed = pq.read_table(io.BytesIO(old.data))
    return planted(hotkey, changed, old.data, "stale rows")


def wrong_source(hotkey: str, table: pa.Table) -> Planted:
    """An X file stored under ``source=reddit``."""
    return planted(hotkey, table, parquet_bytes(table), "X file under source=reddit",
                   source="reddit" if _source(table) == "x" else "x")


def duplicate_rows(hotkey: str, table: pa.Table, copies: int = 3) -> Planted:
    """Every row stored ``copies`` times in one file (sorted, so row-group statistics stay honest)."""
    repeated = pa.concat_tables([table] * copies).sort_by("uri")
    return planted(hotkey, table, parquet_bytes(repeated), f"each row {copies} times in one file")


def duplicate_file(hotkey: str, table: pa.Table) -> Planted:
    """The same rows as an honest file, re-encoded into new bytes (one more metadata key), as a second file."""
    metadata = {**(table.schema.metadata or {}), b"padding": b"a second copy"}
    copy = table.replace_schema_metadata(metadata)
    first = honest(hotkey, table)
    return attrs.evolve(planted(hotkey, table, parquet_bytes(copy), "the same rows in a second file"),
                        also=((first.key, first.data),))


def lying_row_counts(hotkey: str, table: pa.Table) -> Planted:
    """A footer whose row counts (file, row group, column chunks) all say one row more than the data holds."""
    data = parquet_bytes(table, row_group_size=table.num_rows)
    footer_length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_length
    footer = data[start:-8]
    honest_count, lie = _zigzag(table.num_rows), _zigzag(table.num_rows + 1)
    if len(honest_count) != len(lie) or honest_count not in footer:
        raise ValueError(f"pick a row count whose varint keeps its length (got {table.num_rows})")
    patched = data[:start] + footer.replace(honest_count, lie) + data[-8:]
    return planted(hotkey, table, patched, "footer row counts that disagree with the data")


def lying_statistics(hotkey: str, table: pa.Table) -> Planted:
    """A footer whose uri statistics claim a range that leaves out most of the file's URIs."""
    ordered = table.sort_by("uri")
    data = parquet_bytes(ordered, row_group_size=table.num_rows)
    uris = ordered.column("uri").to_pylist()
    high, fake_high = uris[-1].encode(), uris[1].encode()  # claims the file ends at its second URI
    tail = data[-8 - int.from_bytes(data[-8:-4], "little"):]
    if len(fake_high) != len(high) or high not in tail:
        raise ValueError("pick URIs of equal length for this cheat")
    patched = data[: len(data) - len(tail)] + tail.replace(high, fake_high)
    return planted(hotkey, table, patched, "uri statistics that lie")


def no_statistics_many_groups(hotkey: str, table: pa.Table) -> Planted:
    """One-row row groups and no statistics: a file made to run a checker past its time limit."""
    data = parquet_bytes(table, row_group_size=1, write_statistics=False)
    return planted(hotkey, table, data, "one-row row groups without statistics")


def corrupt_content_pages(hotkey: str, table: pa.Table) -> Planted:
    """The ``uri`` column reads fine; the pages of the text columns do not decode (named by the new bytes)."""
    data = bytearray(parquet_bytes(table))
    metadata = pq.read_metadata(pa.BufferReader(bytes(data)))
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    for group in range(metadata.num_row_groups):
        for name in ("text", "body"):
            if name not in paths:
                continue
            chunk = metadata.row_group(group).column(paths.index(name))
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            for offset in range(start + 24, start + chunk.total_compressed_size - 4, 7):  # past the page header
                data[offset] ^= 0xA5
    return planted(hotkey, table, bytes(data), "content pages that do not decode")


def damaged(planted_file: Planted) -> Planted:
    """An honest file with bytes flipped in the middle of its data pages (name kept: the store's copy rots)."""
    data = bytearray(planted_file.data)
    middle = len(data) // 3
    for offset in range(middle, min(middle + 64, len(data) - 8)):
        data[offset] ^= 0x5A
    return attrs.evolve(planted_file, data=bytes(data), cheat="damaged object")


def truncated_name(planted_file: Planted) -> Planted:
    """An honest file under a name that is not its content hash."""
    key = planted_file.key.rsplit("/", 1)[0] + "/" + "0" * 32 + ".parquet"
    return attrs.evolve(planted_file, key=key, cheat="name is not the content hash")


def _zigzag(value: int) -> bytes:
    """The Thrift compact protocol's zigzag varint of an i64."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
