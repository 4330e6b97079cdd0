"""The one hash of a URI that manifests use: for the URI index and for the copy-detection sample.

``blake2b`` with a 16-byte digest, read as two little-endian 64-bit words: ``h0`` picks the index
bucket and is the value a sample keeps; ``h1`` gives the index's fingerprint and decides sampling. A URI
is sampled when the top ``SAMPLE_SHIFT`` bits of ``h1`` are zero, so every miner samples the same
URIs: two miners' samples overlap exactly where their URI sets do, whatever their chunk sizes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import numpy as np

#: One URI in 32 is sampled: a 1,024-row chunk keeps ~32 sample values (8 bytes each), and a copier of a few
#: hundred rows has enough for the audit to judge (``storage_core.audit.copies``: at least 8 a miner). One in
#: 128 left copiers of under ~1,000 rows unjudged: many small hotkeys could each copy a little.
SAMPLE_SHIFT = 5
SAMPLE_RATE = 1 / (1 << SAMPLE_SHIFT)


def uri_hashes(uris: Iterable[str]) -> np.ndarray:
    """An ``(n, 2)`` uint64 array: ``h0, h1`` of each URI, in order."""
    raw = b"".join(hashlib.blake2b(uri.encode("utf-8"), digest_size=16).digest() for uri in uris)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2).astype(np.uint64)


def sampled(hashes: np.ndarray) -> np.ndarray:
    """The sorted, distinct ``h0`` of the sampled URIs of ``hashes``."""
    if not len(hashes):
        return np.zeros(0, dtype=np.uint64)
    chosen = hashes[(hashes[:, 1] >> np.uint64(64 - SAMPLE_SHIFT)) == 0, 0]
    return np.unique(chosen)


def encode_sample(values: np.ndarray) -> str:
    """A sample as text for a manifest: base64 of the little-endian words."""
    return base64.b64encode(np.asarray(values, dtype="<u8").tobytes()).decode("ascii")


def decode_sample(text: str) -> np.ndarray:
    """The inverse of :func:`encode_sample`; ValueError for text that is not a whole number of words."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 8:
        raise ValueError("sample is not a whole number of 8-byte values")
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)
