"""Arrow arrays and scalars built from buffers, in one place: the export's one way to make them.

``pa.array`` and ``pa.scalar`` on Python values make pyarrow import pandas when it is installed
(~50 MB of resident memory, a fifth of the export's budget). Building from buffers does not, and is
as fast for the columns the export makes.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc


def strings(values: Sequence[str]) -> pa.Array:
    """A string array: one joined buffer split by Arrow (a value holding a newline takes ``pa.array``)."""
    if not values:
        return pa.array([], pa.string())
    data = "\n".join(values).encode()
    if data.count(b"\n") != len(values) - 1:
        return pa.array(values, pa.string())
    return pc.split_pattern(_one(pa.string(), data), "\n").flatten()


def optional_strings(values: Sequence[str | None]) -> pa.Array:
    """Like ``strings``, with None as null."""
    base = strings([value or "" for value in values])
    if None not in values:
        return base
    return pa.Array.from_buffers(pa.string(), len(values), [_bits([value is not None for value in values]),
                                                             *base.buffers()[1:]], offset=base.offset)


def int64s(values: Sequence[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values))])


def booleans(values: Sequence[bool]) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, _bits(values)])


def text_scalar(value: str) -> pa.Scalar:
    return _one(pa.string(), value.encode())[0]


def binary_scalar(value: bytes) -> pa.Scalar:
    return _one(pa.binary(), value)[0]


def int_scalar(value: int) -> pa.Scalar:
    return int64s([value])[0]


def one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one array: a lone chunk as it is, without the copy ``combine_chunks`` makes even of one."""
    if isinstance(values, pa.Array):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def owned_copy(table: pa.Table) -> pa.Table:
    """A copy of ``table`` in fresh buffers holding only its rows, one chunk per column.

    ``concat_arrays`` copies even a single sliced chunk, and only the slice's values: one copy, where
    a ``take`` of every row would first concatenate the chunks and then copy them again.
    """
    columns = [pa.concat_arrays(column.chunks) if column.num_chunks else column.combine_chunks()
               for column in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _one(type_: pa.DataType, data: bytes) -> pa.Array:
    """A one-value string or binary array holding ``data``."""
    return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(array("i", [0, len(data)])), pa.py_buffer(data)])


def _bits(values: Sequence[bool]) -> pa.Buffer:
    """A little-endian validity/boolean bitmap."""
    bits = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value:
            bits[index >> 3] |= 1 << (index & 7)
    return pa.py_buffer(bytes(bits))
