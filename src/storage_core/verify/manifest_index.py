"""The check's view of a miner's latest round manifest: believed only after its checks, then used as an index.

:func:`load_manifest` finds the newest manifest in a listing, checks its chain link against the
listing, reads its header (one or two range reads) and decodes it (caps, structure, the hotkey's
signature). :class:`ManifestIndex` then answers "which chunk holds this URI" by reading one bucket
of the URI index per distinct bucket, each checked against the digest in the signed header.
Anything wrong is a ``ManifestError``: the miner wrote it, so the miner's claims on this backend fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from storage_core.layout import ManifestName, parse_manifest_key
from storage_core.manifest.document import PREFIX_BYTES, ChunkEntry, Manifest, ManifestError, ManifestLimits, \
    decode_manifest, header_length
from storage_core.manifest.uri_index import DIGEST_BYTES, ENTRY, bucket_digest, bucket_of, lookup
from storage_core.manifest.uri_hashes import decode_sample, sampled, uri_hashes
from storage_core.verify.store import ListedObject, ObjectError, ObjectStore

FIRST_READ_BYTES = 16 * 1024  # most headers fit; a longer one costs one more read of exactly the rest
#: An honest index names one chunk per URI (two on a rare fingerprint collision; more only for a URI the
#: miner stored twice). More than this for one URI is an index stuffed to make checks read every chunk.
MAX_CHUNKS_PER_URI = 4


class ManifestIndex:
    """A checked manifest and the filter reads made through it."""

    def __init__(self, store: ObjectStore, listed: ListedObject, manifest: Manifest, section_start: int) -> None:
        self.store = store
        self.listed = listed
        self.manifest = manifest
        self.entries = manifest.by_key()  # object key -> entry
        self.section_start = section_start
        self.buckets: dict[int, bytes] = {}

    @property
    def key(self) -> str:
        return self.listed.key

    def _bucket(self, index: int) -> bytes:
        if index not in self.buckets:
            start, end = self.manifest.index.span(index)
            try:
                data = self.store.read_range(self.key, self.section_start + start, self.section_start + end)
            except ObjectError as error:
                raise ManifestError(f"index bucket {index} cannot be read: {error.problem}") from None
            digest = self.manifest.digests[index * DIGEST_BYTES:(index + 1) * DIGEST_BYTES]
            if len(data) != end - start or bucket_digest(data) != digest:
                raise ManifestError(f"index bucket {index} does not match its digest in the signed header")
            chunks = np.frombuffer(data, dtype=ENTRY)["chunk"]
            if len(chunks) and int(chunks.max()) >= len(self.manifest.chunks):
                raise ManifestError(f"index bucket {index} names a chunk the manifest does not list")
            self.buckets[index] = data
        return self.buckets[index]

    def candidates(self, uris: Sequence[str]) -> dict[str, list[ChunkEntry]]:
        """For each URI, the chunks the index says hold it."""
        hashes = uri_hashes(uris)
        buckets = bucket_of(hashes, self.manifest.index.buckets)
        found: dict[str, list[ChunkEntry]] = {}
        for uri, bucket, row in zip(uris, buckets.tolist(), hashes, strict=True):
            chosen = lookup(self._bucket(bucket), row)
            if len(chosen) > MAX_CHUNKS_PER_URI:
                raise ManifestError(f"the index names {len(chosen)} chunks for one URI (stuffed)")
            found[uri] = [self.manifest.chunks[i] for i in chosen]
        return found

    def check_described(self, entry: ChunkEntry, uris: Sequence[str]) -> None:
        """Hold one chunk's manifest entry to its whole uri column: count, range, sample, and the index
        buckets this check already read (a URI left out of the index would hide a duplicate)."""
        name = entry.sha256[:12]
        if len(uris) != entry.rows:
            raise ManifestError(f"chunk {name} holds {len(uris)} rows, the manifest says {entry.rows}")
        if uris and (min(uris) != entry.uri_min or max(uris) != entry.uri_max):
            raise ManifestError(f"chunk {name}: the manifest's URI range is not the chunk's")
        hashes = uri_hashes(uris)
        if not np.array_equal(sampled(hashes), np.sort(decode_sample(entry.sample))):
            raise ManifestError(f"chunk {name}: the manifest's URI sample is not the chunk's")
        position = self.manifest.chunks.index(entry)  # once per check
        buckets = bucket_of(hashes, self.manifest.index.buckets)
        for bucket, row in zip(buckets.tolist(), hashes, strict=True):
            if bucket in self.buckets and position not in lookup(self.buckets[bucket], row):
                raise ManifestError(f"chunk {name}: the manifest's index leaves out some of its URIs")


def latest_manifest(listing: Sequence[ListedObject], hotkey: str) -> tuple[ListedObject, ManifestName] | None:
    named = [(listed, parse_manifest_key(listed.key)) for listed in listing]
    mine = [(listed, name) for listed, name in named if name is not None and name.hotkey == hotkey]
    return max(mine, key=lambda item: item[1].seq) if mine else None


def load_manifest(store: ObjectStore, listing: Sequence[ListedObject], hotkey: str, backend: str,
                  limits: ManifestLimits = ManifestLimits()) -> ManifestIndex | None:
    """The checked latest manifest of ``hotkey`` in ``listing``, None when there is none; ManifestError
    (naming the manifest) when it cannot be believed."""
    latest = latest_manifest(listing, hotkey)
    if latest is None:
        return None
    listed, name = latest
    try:
        return _load(store, listing, listed, name, hotkey, backend, limits)
    except ManifestError as error:
        raise ManifestError(f"manifest {listed.key}: {error}") from None
    except ObjectError as error:
        raise ManifestError(f"manifest {listed.key}: {error.problem}") from None


def _load(store: ObjectStore, listing: Sequence[ListedObject], listed: ListedObject, name: ManifestName,
          hotkey: str, backend: str, limits: ManifestLimits) -> ManifestIndex:
    names = [parse_manifest_key(other.key) for other in listing]
    same_round = [n for n in names if n is not None and n.hotkey == hotkey and n.seq == name.seq]
    if len(same_round) > 1:
        raise ManifestError(f"{len(same_round)} manifests claim round {name.seq}")
    if listed.sha256 is not None and not listed.sha256.startswith(name.name_hash):
        raise ManifestError(f"content sha256 {listed.sha256} does not match the name")
    if listed.size > PREFIX_BYTES + limits.max_header_bytes + limits.max_section_bytes:
        raise ManifestError(f"{listed.size} bytes, over the cap of a manifest")
    first = store.read_range(listed.key, 0, min(listed.size, FIRST_READ_BYTES))
    length = header_length(first[:PREFIX_BYTES], limits)
    end = PREFIX_BYTES + length
    if end > listed.size:
        raise ManifestError(f"header of {length} bytes does not fit a {listed.size}-byte object")
    header = first[PREFIX_BYTES:end] if end <= len(first) else \
        first[PREFIX_BYTES:] + store.read_range(listed.key, len(first), end)
    if len(header) != length:
        raise ManifestError("short read of the header")
    manifest = decode_manifest(header, hotkey, limits)
    if manifest.seq != name.seq:
        raise ManifestError(f"says round {manifest.seq} but is stored as round {name.seq}")
    if manifest.backend != backend:
        raise ManifestError(f"was written for backend {manifest.backend!r}, not {backend!r}")
    if listed.size != end + manifest.index.section_bytes:
        raise ManifestError(f"object is {listed.size} bytes; its header describes {end + manifest.index.section_bytes}")
    if manifest.previous is not None:  # None starts a chain (a new miner, or one that lost its state)
        before = {n.name_hash for n in names if n is not None and n.hotkey == hotkey and n.seq < manifest.seq}
        if manifest.previous[:len(name.name_hash)] not in before:
            raise ManifestError(f"chain broken: the previous manifest {manifest.previous[:12]} is not in the store")
    return ManifestIndex(store, listed, manifest, end)

