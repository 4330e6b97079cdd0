"""Compact records of which URIs of an hour bucket are done, to find rows stored late behind the watermark.

A URI is recorded as the first 8 bytes of its BLAKE2b hash; a bucket's record is one sorted blob of
them (8 bytes per row: ~8 MB per million rows in the ledger). Two URIs of one bucket colliding is a
2^-64-per-pair event, so a collision would hide one late row, never duplicate one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

DIGEST_BYTES = 8


def uri_digest(uri: str) -> bytes:
    return hashlib.blake2b(uri.encode(), digest_size=DIGEST_BYTES).digest()


def split(blob: bytes) -> set[bytes]:
    """The digests held in a blob."""
    return {blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)}


def join(digests: Iterable[bytes]) -> bytes:
    """One sorted, duplicate-free blob (sorted so that equal sets store equal bytes)."""
    return b"".join(sorted(set(digests)))
