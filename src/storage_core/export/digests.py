"""Compact records of which URIs of an hour bucket are done, to find rows stored late behind the watermark.

A URI is recorded as the first 8 bytes of its BLAKE2b hash; a bucket's record is one sorted blob of
them (8 bytes per row: ~8 MB per million rows in the ledger). Two URIs of one bucket colliding is a
2^-64-per-pair event, so a collision would hide one late row, never duplicate one.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

DIGEST_BYTES = 8


def uri_digest(uri: str) -> bytes:
    return hashlib.blake2b(uri.encode(), digest_size=DIGEST_BYTES).digest()


def split(blob: bytes) -> set[bytes]:
    """The digests held in a blob."""
    return {blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)}


def join(digests: Iterable[bytes]) -> bytes:
    """One sorted, duplicate-free blob (sorted so that equal sets store equal bytes)."""
    return b"".join(sorted(set(digests)))


_FRAME = struct.Struct("<qI")  # bucket, blob length


def page_digests(uris: pa.Array | pa.ChunkedArray, buckets: pa.Array | pa.ChunkedArray) -> dict[int, bytes]:
    """The digests of a page's URIs, concatenated per hour bucket (rows grouped by bucket in Arrow)."""
    order = pc.sort_indices(buckets)
    values = pc.take(uris, order).cast(pa.binary()).to_pylist()
    digest = hashlib.blake2b
    blob = b"".join([digest(value, digest_size=DIGEST_BYTES).digest() for value in values])
    grouped: dict[int, bytes] = {}
    start = 0
    for entry in pc.value_counts(pc.take(buckets, order)).to_pylist():
        end = start + entry["counts"] * DIGEST_BYTES
        grouped[entry["values"]] = blob[start:end]
        start = end
    return grouped


class DigestLog:
    """The digests of the rows one export read, per hour bucket, in bounded memory.

    Past ``memory_bytes`` the buffers are appended as frames to an unnamed temporary file beside the
    chunks (it disappears when closed, or with the process after a crash), so a 4M-row export holds a
    few MiB of digests instead of 32 MiB. ``frames()`` may name a bucket several times.
    """

    def __init__(self, directory: Path | None = None, memory_bytes: int = 4 * 2**20) -> None:
        self._directory = directory
        self._limit = memory_bytes
        self._buffers: dict[int, bytearray] = {}
        self._held = 0
        self._file: IO[bytes] | None = None
        self.rows = 0

    def add_digests(self, digests: Mapping[int, bytes], rows: int) -> None:
        """Add a page's digests as made by ``page_digests`` (which may run on another thread)."""
        for bucket, blob in digests.items():
            buffer = self._buffers.get(bucket)
            if buffer is None:
                self._buffers[bucket] = bytearray(blob)
            else:
                buffer += blob
        self.rows += rows
        self._held += rows * DIGEST_BYTES
        if self._held >= self._limit:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._directory, prefix=".digests-")
        for bucket, buffer in self._buffers.items():
            self._file.write(_FRAME.pack(bucket, len(buffer)))
            self._file.write(buffer)
        self._buffers.clear()
        self._held = 0

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """``(bucket, digest blob)`` pairs: the spilled frames, then what is still in memory."""
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            while header := self._file.read(_FRAME.size):
                bucket, size = _FRAME.unpack(header)
                yield bucket, self._file.read(size)
            self._file.seek(0, 2)
        for bucket, buffer in self._buffers.items():
            yield bucket, bytes(buffer)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffers.clear()
