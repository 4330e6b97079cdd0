"""Manifests as any miner can write them (honest or not), from the objects it stores: for tests.

The uploader writes manifests from its spool (:class:`storage_core.manifest.ManifestBook`); a cheater
writes whatever it likes. :func:`signed_manifest` builds one from the bytes of a miner's objects,
signed with the miner's own key, so that a planted file is listed like an honest one and what must
catch it is the check it is aimed at. ``edit`` and ``edit_section`` let a test forge the rest.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_core.layout import manifest_key, parse_key, parse_manifest_key
from storage_core.manifest.document import ChunkEntry, Manifest, ManifestLimits, encode_manifest
from storage_core.manifest.uri_index import build_index
from storage_core.manifest.uri_hashes import encode_sample, sampled, uri_hashes
from storage_core.schema import SCHEMA_VERSION


def describe(key: str, data: bytes, seq: int = 0, claims: Sequence[str] | None = None) -> tuple[ChunkEntry, np.ndarray]:
    """The manifest entry and URI hashes of one stored object (an unreadable one gets a plausible entry).

    ``claims``: the URIs the miner says the object holds, for its filter and sample (default: what it holds).
    """
    name = parse_key(key)
    assert name is not None, key
    limits = ManifestLimits()
    sha256 = hashlib.sha256(data).hexdigest()
    rows, low, high = 1, "", ""
    try:  # what the footer claims, as a cheater lists it: the manifest agrees with the file it describes
        metadata = pq.ParquetFile(io.BytesIO(data)).metadata
        rows = metadata.num_rows
        column = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index("uri")
        stats = [metadata.row_group(g).column(column).statistics for g in range(metadata.num_row_groups)]
        low = min(str(s.min) for s in stats if s is not None and s.has_min_max)
        high = max(str(s.max) for s in stats if s is not None and s.has_min_max)
    except Exception:  # a damaged file or footer: its cheater lists it all the same
        pass
    try:
        if not 0 < rows <= limits.max_chunk_rows or len(data) > limits.max_chunk_bytes:
            raise ValueError("a footer no reader should believe")  # reading it could allocate without bound
        uris = pq.ParquetFile(io.BytesIO(data)).read(columns=["uri"]).column("uri")
        hashes = uri_hashes(uris.to_pylist())
        if not low:
            bounds = pc.min_max(uris)
            low, high, rows = bounds["min"].as_py(), bounds["max"].as_py(), len(uris)
    except Exception:
        hashes = uri_hashes([])
    if claims is not None:
        hashes = uri_hashes(claims)
        low, high = low or min(claims, default=""), high or max(claims, default="")
    footer = int.from_bytes(data[-8:-4], "little") if len(data) >= 12 else 1
    entry = ChunkEntry(sha256=sha256, size=len(data), rows=max(1, min(rows, limits.max_chunk_rows)), source=name.source,
                       date=name.date, uri_min=low, uri_max=high, round=seq, sample=encode_sample(sampled(hashes)),
                       footer=footer if 0 < footer < min(len(data), limits.max_footer_bytes) else 1)
    return entry, hashes


def _fit(entry: ChunkEntry, hashes: np.ndarray) -> np.ndarray:
    """One index entry per row the entry claims, as a cheater agreeing with its own footer would write:
    the URIs it holds (or claims), padded with made-up ones or cut to the row count."""
    if len(hashes) >= entry.rows:
        return hashes[: entry.rows]
    padding = uri_hashes(f"{entry.sha256}#{n}" for n in range(entry.rows - len(hashes)))
    return np.concatenate([hashes.reshape(-1, 2), padding])


def signed_manifest(objects: Mapping[str, bytes], hotkey: str, signer: Any, backend: str, *, seq: int = 0,
                    previous: str | None = None, edit: Callable[[Manifest], Manifest] | None = None,
                    edit_section: Callable[[bytes], bytes] | None = None,
                    claims: Mapping[str, Sequence[str]] | None = None) -> tuple[str, bytes]:
    """``(key, bytes)`` of a manifest listing the miner's parquet objects among ``objects`` (``claims``: the
    URIs the miner says some of them hold, by key, when that is not what they hold)."""
    described = [describe(key, data, seq, (claims or {}).get(key)) for key, data in sorted(objects.items())
                 if (name := parse_key(key)) is not None and name.hotkey == hotkey]
    entries = [entry for entry, _ in described]
    layout, section, digests = build_index([_fit(entry, hashes) for entry, hashes in described])
    manifest = Manifest(
        hotkey=hotkey, backend=backend, seq=seq, previous=previous,
        round_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), schema_version=SCHEMA_VERSION,
        chunks=tuple(entries), index=layout, digests=digests,
    )
    if edit is not None:
        manifest = edit(manifest)
    if edit_section is not None:
        section = edit_section(section)
    data = encode_manifest(manifest, section, signer)
    return manifest_key(hotkey, manifest.seq, hashlib.sha256(data).hexdigest()), data


def next_manifest(objects: Mapping[str, bytes], hotkey: str, signer: Any, backend: str,
                  **options: Any) -> tuple[str, bytes]:
    """The miner's next manifest after the latest one in ``objects`` (chained to it), listing every chunk."""
    latest = max(((name.seq, key) for key in objects if (name := parse_manifest_key(key)) and name.hotkey == hotkey),
                 default=None)
    if latest is None:
        return signed_manifest(objects, hotkey, signer, backend, **options)
    seq, key = latest
    return signed_manifest(objects, hotkey, signer, backend, seq=seq + 1,
                           previous=hashlib.sha256(objects[key]).hexdigest(), **options)
