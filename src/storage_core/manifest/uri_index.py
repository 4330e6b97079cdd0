"""Which chunk holds a URI: an exact index over all of a miner's chunks, read one small bucket per URI.

The index section of a manifest is a hash table on storage. Every URI of every listed chunk has one
4-byte entry (a 16-bit fingerprint of the URI, the 16-bit position of its chunk in the manifest),
in bucket ``h0 % buckets``; buckets are stored one after the other, each sorted. The signed header
holds each bucket's entry count and digest, so a validator reads exactly one bucket (about
``TARGET_BUCKET_ENTRIES`` entries, 1 KiB) per claimed URI and checks it without reading the rest.
A lookup names the chunk that holds the URI, and another only on a fingerprint collision (about 0.4% of
lookups): the cost of a check does not grow with the number of chunks, as a per-chunk filter's does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import cached_property

import attrs
import numpy as np

ENTRY = np.dtype([("fingerprint", "<u2"), ("chunk", "<u2")])
TARGET_BUCKET_ENTRIES = 256
#: Chunk positions are 16-bit: a manifest lists at most this many chunks.
MAX_CHUNKS = 65_535
DIGEST_BYTES = 4  # a bucket's digest in the header: integrity of what was read, not a secret


@attrs.frozen
class IndexLayout:
    """How many entries each bucket holds, in bucket order."""

    counts: tuple[int, ...]

    @property
    def buckets(self) -> int:
        return len(self.counts)

    @cached_property
    def starts(self) -> tuple[int, ...]:
        """Byte offset of each bucket in the section."""
        return tuple(int(x) * ENTRY.itemsize for x in np.concatenate([[0], np.cumsum(self.counts)[:-1]]))

    @property
    def section_bytes(self) -> int:
        return sum(self.counts) * ENTRY.itemsize

    def span(self, bucket: int) -> tuple[int, int]:
        start = self.starts[bucket]
        return start, start + self.counts[bucket] * ENTRY.itemsize


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    return (hashes[:, 0] % np.uint64(buckets)).astype(np.int64)


def fingerprint_of(hashes: np.ndarray) -> np.ndarray:
    return (hashes[:, 1] & np.uint64(0xFFFF)).astype(np.uint16)


def bucket_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def build_index(chunk_hashes: Sequence[np.ndarray]) -> tuple[IndexLayout, bytes, bytes]:
    """``(layout, section, digests)`` for the chunks' URI hashes, in manifest order."""
    if len(chunk_hashes) > MAX_CHUNKS:
        raise ValueError(f"{len(chunk_hashes)} chunks: a manifest lists at most {MAX_CHUNKS}")
    total = sum(len(h) for h in chunk_hashes)
    buckets = max(1, math.ceil(total / TARGET_BUCKET_ENTRIES))
    hashes = np.concatenate([h.reshape(-1, 2) for h in chunk_hashes]) if total else np.zeros((0, 2), np.uint64)
    chunks = np.repeat(np.arange(len(chunk_hashes), dtype=np.uint16), [len(h) for h in chunk_hashes])
    bucket, fingerprint = bucket_of(hashes, buckets), fingerprint_of(hashes)
    order = np.lexsort((chunks, fingerprint, bucket))
    entries = np.empty(total, dtype=ENTRY)
    entries["fingerprint"], entries["chunk"] = fingerprint[order], chunks[order]
    counts = np.bincount(bucket, minlength=buckets)
    layout = IndexLayout(tuple(int(c) for c in counts))
    section = entries.tobytes()
    digests = b"".join(bucket_digest(section[slice(*layout.span(b))]) for b in range(buckets))
    return layout, section, digests


def lookup(bucket: bytes, uri_hash: np.ndarray) -> list[int]:
    """Positions of the chunks whose entries in ``bucket`` (the URI's bucket) match the URI."""
    entries = np.frombuffer(bucket, dtype=ENTRY)
    matched = entries["chunk"][entries["fingerprint"] == fingerprint_of(uri_hash.reshape(1, 2))[0]]
    return sorted({int(position) for position in matched})
