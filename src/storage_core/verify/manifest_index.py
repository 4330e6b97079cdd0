"""The check's view of a miner's latest round manifest: believed only after its checks, then used as an index.

:func:`load_manifest` finds the newest manifest in a listing, checks its chain link against the
listing, reads its header (one or two range reads) and decodes it (caps, structure, the hotkey's
signature). :class:`ManifestIndex` then answers "which chunk holds this URI" by reading one bucket
of the URI index per distinct bucket and the table entries of the chunks named, each checked against
its digest in the signed header: what a check reads of a manifest grows with its claims, not with
the chunks the miner holds. Anything wrong is a ``ManifestError``: the miner wrote it, so the miner's
claims on this backend fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from storage_core.layout import ManifestName, parse_key, parse_manifest_key
from storage_core.manifest.document import PREFIX_BYTES, ChunkEntry, Manifest, ManifestError, ManifestHeader, \
    ManifestLimits, decode_manifest, header_length
from storage_core.manifest.uri_index import DIGEST_BYTES, ENTRY, bucket_digest, bucket_of, lookup
from storage_core.manifest.uri_hashes import decode_sample, sampled, uri_hashes
from storage_core.verify.store import ListedObject, ObjectError, ObjectStore

FIRST_READ_BYTES = 4 * 1024  # a small miner's header fits; a longer one costs one more read of exactly the rest
#: An honest index names one chunk per URI (two on a rare fingerprint collision; more only for a URI the
#: miner stored twice). More than this for one URI is an index stuffed to make checks read every chunk.
MAX_CHUNKS_PER_URI = 4
#: Entries of the chunk table this close (in bytes) are fetched in one range read: only neighbours, as entries
#: are a few hundred bytes and a check names chunks scattered over the table.
ENTRY_READ_GAP = 0


class ManifestIndex:
    """A checked manifest header, and the entry and bucket reads made through it (cached per check)."""

    def __init__(self, store: ObjectStore, listed: ListedObject, header: ManifestHeader, table_start: int,
                 limits: ManifestLimits = ManifestLimits()) -> None:
        self.store = store
        self.listed = listed
        self.manifest = header
        self.limits = limits
        self.table_start = table_start
        self.section_start = table_start + header.table_bytes
        self.buckets: dict[int, bytes] = {}
        self._entries: dict[int, ChunkEntry] = {}

    @property
    def key(self) -> str:
        return self.listed.key

    def _read(self, start: int, end: int, what: str) -> bytes:
        try:
            data = self.store.read_range(self.key, start, end)
        except ObjectError as error:
            raise ManifestError(f"{what} cannot be read: {error.problem}") from None
        if len(data) != end - start:
            raise ManifestError(f"short read of {what}")
        return data

    # -- the chunk table ---------------------------------------------------------------------------

    def position_of(self, key: str) -> int | None:
        """Where the manifest lists the object ``key`` (by its name hash), None when it does not."""
        name = parse_key(key)
        return None if name is None else self.manifest.position_of(name.name_hash)

    def entries(self, positions: Iterable[int]) -> dict[int, ChunkEntry]:
        """The entries at ``positions``, each checked; neighbours within ``ENTRY_READ_GAP`` share one read."""
        positions = list(positions)
        wanted = sorted(set(positions) - set(self._entries))
        runs: list[list[int]] = []
        for position in wanted:
            if runs and self.manifest.span(position)[0] - self.manifest.span(runs[-1][-1])[1] <= ENTRY_READ_GAP:
                runs[-1].append(position)
            else:
                runs.append([position])
        for run in runs:
            start, end = self.manifest.span(run[0])[0], self.manifest.span(run[-1])[1]
            data = self._read(self.table_start + start, self.table_start + end, f"chunk entries {run[0]}-{run[-1]}")
            for position in run:
                low, high = self.manifest.span(position)
                self._entries[position] = self.manifest.entry(position, data[low - start:high - start], self.limits)
        return {position: self._entries[position] for position in positions}

    def entry(self, position: int) -> ChunkEntry:
        return self.entries([position])[position]

    def whole(self) -> Manifest:
        """Every entry, in one read of the chunk table (the audit's view)."""
        try:
            table = self._read(self.table_start, self.section_start, "the chunk table")
            return self.manifest.entries(table, self.limits)
        except ManifestError as error:
            raise ManifestError(f"manifest {self.key}: {error}") from None

    # -- the URI index -----------------------------------------------------------------------------

    def _bucket(self, index: int) -> bytes:
        if index not in self.buckets:
            start, end = self.manifest.index.span(index)
            data = self._read(self.section_start + start, self.section_start + end, f"index bucket {index}")
            digest = self.manifest.digests[index * DIGEST_BYTES:(index + 1) * DIGEST_BYTES]
            if bucket_digest(data) != digest:
                raise ManifestError(f"index bucket {index} does not match its digest in the signed header")
            chunks = np.frombuffer(data, dtype=ENTRY)["chunk"]
            if len(chunks) and int(chunks.max()) >= self.manifest.chunk_count:
                raise ManifestError(f"index bucket {index} names a chunk the manifest does not list")
            self.buckets[index] = data
        return self.buckets[index]

    def candidates(self, uris: Sequence[str]) -> dict[str, dict[int, ChunkEntry]]:
        """For each URI, the chunks the index says hold it (position -> entry)."""
        hashes = uri_hashes(uris)
        buckets = bucket_of(hashes, self.manifest.index.buckets)
        named: dict[str, list[int]] = {}
        for uri, bucket, row in zip(uris, buckets.tolist(), hashes, strict=True):
            chosen = lookup(self._bucket(bucket), row)
            if len(chosen) > MAX_CHUNKS_PER_URI:
                raise ManifestError(f"the index names {len(chosen)} chunks for one URI (stuffed)")
            named[uri] = chosen
        entries = self.entries(position for chosen in named.values() for position in chosen)
        return {uri: {position: entries[position] for position in chosen} for uri, chosen in named.items()}

    def check_described(self, position: int, uris: Sequence[str]) -> None:
        """Hold one chunk's manifest entry to its whole uri column: count, range, sample, and the index
        buckets this check already read (a URI left out of the index would hide a duplicate)."""
        entry = self.entry(position)
        name = entry.sha256[:12]
        if len(uris) != entry.rows:
            raise ManifestError(f"chunk {name} holds {len(uris)} rows, the manifest says {entry.rows}")
        if uris and (min(uris) != entry.uri_min or max(uris) != entry.uri_max):
            raise ManifestError(f"chunk {name}: the manifest's URI range is not the chunk's")
        hashes = uri_hashes(uris)
        if not np.array_equal(sampled(hashes), np.sort(decode_sample(entry.sample))):
            raise ManifestError(f"chunk {name}: the manifest's URI sample is not the chunk's")
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
    if listed.size > limits.max_object_bytes:
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
    described = end + manifest.table_bytes + manifest.index.section_bytes
    if listed.size != described:
        raise ManifestError(f"object is {listed.size} bytes; its header describes {described}")
    if manifest.previous is not None:  # None starts a chain (a new miner, or one that lost its state)
        before = {n.name_hash for n in names if n is not None and n.hotkey == hotkey and n.seq < manifest.seq}
        if manifest.previous[:len(name.name_hash)] not in before:
            raise ManifestError(f"chain broken: the previous manifest {manifest.previous[:12]} is not in the store")
    return ManifestIndex(store, listed, manifest, end, limits)
