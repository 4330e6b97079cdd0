"""Compact records of which URIs of an hour bucket are done, to find rows stored late behind the watermark.

A URI is recorded as an 8-byte digest; a bucket's record is one sorted blob of them (8 bytes per row:
~8 MB per million rows in the ledger). Two URIs of one bucket colliding is a 2^-64-per-pair event, so
a collision would hide one late row, never duplicate one.

The digest (scheme ``uri64-v1``) is computed for a whole page at once in a few numpy operations,
because the export digests every row it reads: a ``hashlib`` call per URI cost ~0.5 s per million
rows, all of it holding the GIL that the decoder and the chunk writer need. The UTF-8 URI is
left-padded with zero bytes to a multiple of 8 and read as little-endian 64-bit words; each word is
mixed as in MurmurHash3 (x64), the mixed words are summed with weights ``P**i`` (``i`` counted from
the last word, so padding words add nothing), and the sum, xor the length and a seed, goes through
MurmurHash3's 64-bit finaliser. ``uri_digest`` is the one-URI reference; the tests hold the two equal.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage_core.export.arrow_values import booleans, one_array

DIGEST_BYTES = 8
#: The digest scheme of this code (the only one a ledger has ever held).
SCHEME = "uri64-v1"

_MASK = (1 << 64) - 1
_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F  # MurmurHash3 x64 word-mixing constants
_F1, _F2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64 constants
_P = 0x9E3779B97F4A7C15  # 2**64 / golden ratio (odd): the position weight
_SEED = 0x2545F4914F6CDD1D
#: URIs up to this many bytes are digested by the vectorised path (a page pads every URI to its longest).
_VECTOR_BYTES = 512
_WORDS = _VECTOR_BYTES // 8
_U = np.uint64
_WEIGHTS = np.array([pow(_P, _WORDS - 1 - index, 1 << 64) for index in range(_WORDS)], dtype=np.uint64)


def _mix(word: int) -> int:
    word = (word * _C1) & _MASK
    word = ((word << 31) | (word >> 33)) & _MASK
    return (word * _C2) & _MASK


def _finish(value: int) -> int:
    value ^= value >> 33
    value = (value * _F1) & _MASK
    value ^= value >> 33
    value = (value * _F2) & _MASK
    return value ^ (value >> 33)


def uri_digest(uri: str) -> bytes:
    """The 8-byte digest of one URI (the reference for ``uri_digests``)."""
    data = uri.encode()
    words = [word for (word,) in struct.iter_unpack("<Q", bytes(-len(data) % 8) + data)]
    total = 0
    for position, word in enumerate(reversed(words)):
        total = (total + _mix(word) * pow(_P, position, 1 << 64)) & _MASK
    return _finish(total ^ len(data) ^ _SEED).to_bytes(DIGEST_BYTES, "little")


def uri_digests(uris: pa.Array | pa.ChunkedArray) -> bytes:
    """The digests of ``uris`` (strings, no nulls), concatenated in order."""
    return digest_array(uris).tobytes()


def digest_array(uris: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The digests of ``uris`` (strings, no nulls) as little-endian uint64s, in order."""
    values = one_array(uris)
    if values.type != pa.string():
        values = values.cast(pa.string())
    if values.null_count:
        raise ValueError("cannot digest a null URI")
    if len(values) == 0:
        return np.empty(0, dtype="<u8")
    lengths = np.diff(np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1,
                                    offset=values.offset * 4))
    long = lengths > _VECTOR_BYTES
    if not long.any():
        return _vector_digests(values, lengths)
    # Rare: a few very long URIs would pad the whole page to their length; digest them one by one.
    out = np.empty(len(values), dtype="<u8")
    short = ~long
    if short.any():
        out[short] = _vector_digests(values.filter(booleans(short.tolist())), lengths[short])
    for index in np.flatnonzero(long).tolist():
        out[index] = int.from_bytes(uri_digest(values[index].as_py()), "little")
    return out


def _vector_digests(values: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """``uri_digest`` of every value, as little-endian uint64s: a few numpy calls per page."""
    rows = len(values)
    words = max(1, (int(lengths.max()) + 7) // 8)
    # Right-aligned in a rows x words matrix (zero bytes on the left): Arrow pads, numpy views it.
    padded = pc.ascii_lpad(values, width=words * 8, padding="\0")
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=rows + 1, offset=padded.offset * 4)
    if int(offsets[-1]) - int(offsets[0]) != rows * words * 8:
        raise AssertionError("ascii_lpad did not pad every URI to the same byte width")
    matrix = np.frombuffer(padded.buffers()[2], dtype="<u8", count=rows * words, offset=int(offsets[0]))
    mixed = matrix.reshape(rows, words) * _U(_C1)
    mixed = (mixed << _U(31)) | (mixed >> _U(33))
    mixed *= _U(_C2)
    mixed *= _WEIGHTS[_WORDS - words:]
    total = mixed.sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64, as the reference
    total ^= lengths.astype(np.uint64)
    total ^= _U(_SEED)
    total ^= total >> _U(33)
    total *= _U(_F1)
    total ^= total >> _U(33)
    total *= _U(_F2)
    total ^= total >> _U(33)
    return total.astype("<u8", copy=False)


def split(blob: bytes) -> set[bytes]:
    """The digests held in a blob."""
    return {blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)}


def join(digests: Iterable[bytes]) -> bytes:
    """One sorted, duplicate-free blob (sorted so that equal sets store equal bytes)."""
    return b"".join(sorted(set(digests)))


_FRAME = struct.Struct("<qI")  # bucket, blob length


@attrs.frozen(eq=False)
class PageDigests:
    """The digest of every URI of a page, beside its hour bucket (row order, not grouped yet)."""

    buckets: np.ndarray  # int64
    digests: np.ndarray  # little-endian uint64

    def __len__(self) -> int:
        return len(self.digests)

    def grouped(self) -> dict[int, bytes]:
        """The digests concatenated per hour bucket."""
        return dict(_grouped(self.buckets, self.digests))


def page_digests(uris: pa.Array | pa.ChunkedArray, buckets: pa.Array | pa.ChunkedArray) -> PageDigests:
    """The digests of a page's URIs and their buckets; grouping waits for ``DigestLog`` (once per many pages).

    A page in primary-key order spans most hour buckets of the export: grouping each page on its own
    cost a Python step per bucket per page, more than the digests themselves.
    """
    bucket_values = one_array(buckets)
    if bucket_values.null_count:
        raise ValueError("cannot file a digest under a null hour bucket")
    # A copy: a view would keep the buffer, and with it the whole page read through ADBC, alive.
    bucket_array = bucket_values.cast(pa.int64()).to_numpy().copy()
    return PageDigests(bucket_array, digest_array(uris))


def _grouped(buckets: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """``(bucket, digest blob)`` per distinct bucket, each blob in the rows' order (a stable sort)."""
    if not len(values):
        return
    low = int(buckets.min())
    # Buckets are hours: a log's span nearly always fits 16 bits, which numpy sorts by radix (~5x faster).
    keys = (buckets - low).astype(np.uint16) if int(buckets.max()) - low < 1 << 16 else buckets
    order = np.argsort(keys, kind="stable")
    sorted_buckets = buckets[order]
    blob = values[order].tobytes()
    starts = [0, *(np.flatnonzero(sorted_buckets[1:] != sorted_buckets[:-1]) + 1).tolist()]
    ends = [*starts[1:], len(values)]
    for bucket, start, end in zip(sorted_buckets[starts].tolist(), starts, ends):
        yield bucket, blob[start * DIGEST_BYTES : end * DIGEST_BYTES]


class DigestLog:
    """The digests of the rows one export read, per hour bucket, in bounded memory.

    Pages are kept as they come (16 bytes a row) and grouped by bucket only when spilled or read.
    Past ``memory_bytes`` they are appended as frames to an unnamed temporary file beside the chunks
    (it disappears when closed, or with the process after a crash), so a 4M-row export holds a few
    MiB of digests instead of 64 MiB. ``frames()`` may name a bucket several times.
    """

    def __init__(self, directory: Path | None = None, memory_bytes: int = 2 * 2**20) -> None:
        self._directory = directory
        self._limit = memory_bytes
        self._pages: list[PageDigests] = []
        self._held = 0
        self._file: IO[bytes] | None = None
        self.rows = 0

    def add_digests(self, page: PageDigests) -> None:
        """Add a page's digests as made by ``page_digests`` (which may run on another thread)."""
        self._pages.append(page)
        self.rows += len(page)
        self._held += page.buckets.nbytes + page.digests.nbytes
        if self._held >= self._limit:
            self._spill()

    def _in_memory(self) -> Iterator[tuple[int, bytes]]:
        if not self._pages:
            return iter(())
        buckets = np.concatenate([page.buckets for page in self._pages])
        values = np.concatenate([page.digests for page in self._pages])
        return _grouped(buckets, values)

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._directory, prefix=".digests-")
        for bucket, blob in self._in_memory():
            self._file.write(_FRAME.pack(bucket, len(blob)))
            self._file.write(blob)
        self._pages.clear()
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
        yield from self._in_memory()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pages.clear()
