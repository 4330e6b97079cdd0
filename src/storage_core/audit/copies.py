"""Copies across miners, from listings and manifests only (no chunk bodies).

* **Byte copies.** Chunk names are content hashes, so one chunk under two miners shows in their
  listings. It belongs to the miner whose object the store recorded first (``stored_at``: S3's
  LastModified, the Hub's commit time; never a time a miner wrote); every later holder copied it.
* **Re-encoded copies.** The same rows written into new bytes get a new hash, but not new URIs. Every
  manifest entry carries the chunk's URI sample (the URIs whose hash falls in a fixed 1/32 of the hash
  space, :mod:`storage_core.manifest.uri_hashes`), so two miners' samples overlap exactly where their
  URI sets do. A chunk is a copy of miner N's when at least ``threshold`` of its sampled URIs are in N's
  chunks stored before it (judged per chunk when the chunk has ``min_sample`` sampled URIs, else over all
  of the miner's small chunks together). Miners scrape some of the same posts, so small overlaps are
  normal: two honest miners sharing 5% of their URIs are far below the default threshold of one half.

A check that is given the result (``CheckSettings.copies``) rejects every claim stored in a copied chunk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import attrs

from storage_core.layout import parse_key
from storage_core.manifest.document import Manifest
from storage_core.manifest.uri_hashes import SAMPLE_SHIFT, decode_sample
from storage_core.verify.store import ListedObject

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SAMPLE = 8


@attrs.frozen
class MinerHoldings:
    """One miner's data objects on one backend (with store times) and its believed latest manifest."""

    hotkey: str
    backend: str
    objects: tuple[ListedObject, ...]
    manifest: Manifest | None = None
    manifest_problem: str | None = None


@attrs.frozen
class Copy:
    """One chunk of ``copier`` found to be a copy of ``original``'s data."""

    backend: str
    copier: str
    key: str
    original: str
    original_key: str
    kind: str  # "byte" or "re-encoded"
    share: float  # of the chunk's sampled URIs found in the original's earlier chunks (1.0 for byte copies)

    def reason(self) -> str:
        if self.kind == "byte":
            return f"copy: the same bytes were stored earlier by {self.original} ({self.original_key})"
        return (f"copy: {self.share:.0%} of its sampled URIs were stored earlier by {self.original} "
                f"(re-encoded copy of {self.original_key})")


def byte_copies(holdings: Sequence[MinerHoldings]) -> list[Copy]:
    """Chunks whose content hash is held by more than one miner on a backend: every holder but the first."""
    by_hash: dict[tuple[str, str], list[tuple[MinerHoldings, ListedObject]]] = defaultdict(list)
    for holding in holdings:
        for listed in holding.objects:
            name = parse_key(listed.key)
            if name is not None and name.hotkey == holding.hotkey:
                by_hash[(holding.backend, name.name_hash)].append((holding, listed))
    found = []
    for (backend, _name), holders in by_hash.items():
        if len({holding.hotkey for holding, _ in holders}) < 2:
            continue
        timed = [item for item in holders if item[1].stored_at is not None]
        if len(timed) < len(holders):
            continue  # a store without times cannot say who was first
        first_holding, first = min(timed, key=lambda item: (item[1].stored_at, item[0].hotkey))
        for holding, listed in timed:
            if holding.hotkey != first_holding.hotkey:
                found.append(Copy(backend, holding.hotkey, listed.key, first_holding.hotkey, first.key, "byte", 1.0))
    return found


def reencoded_copies(holdings: Sequence[MinerHoldings], threshold: float = DEFAULT_THRESHOLD,
                     min_sample: int = DEFAULT_MIN_SAMPLE, skip: Iterable[str] = ()) -> list[Copy]:
    """Chunks most of whose sampled URIs another miner stored earlier (see the module docstring)."""
    skipped = set(skip)
    # sample value -> (hotkey, key, stored_at) of each chunk holding it, per backend
    holders: dict[tuple[str, int], list[tuple[str, str, datetime]]] = defaultdict(list)
    chunks: list[tuple[MinerHoldings, str, datetime, list[int]]] = []
    for holding in holdings:
        if holding.manifest is None:
            continue
        times = {listed.key: listed.stored_at for listed in holding.objects}
        for entry in holding.manifest.chunks:
            key = entry.key(holding.hotkey)
            when = times.get(key)
            if when is None:
                continue  # not in the store (or no time): nothing to date it by
            values = [int(v) for v in decode_sample(entry.sample)]
            chunks.append((holding, key, when, values))
            for value in values:
                holders[(holding.backend, value)].append((holding.hotkey, key, when))
    found: list[Copy] = []
    small: dict[tuple[str, str, str], list[tuple[str, int, int, str]]] = defaultdict(list)
    small_total: dict[tuple[str, str], int] = defaultdict(int)
    for holding, key, when, values in chunks:
        if key in skipped or not values:
            continue
        hits: dict[str, int] = defaultdict(int)
        first: dict[str, tuple[datetime, str]] = {}  # other miner -> its earliest chunk holding these URIs
        for value in values:
            earlier = [(hotkey, other, at) for hotkey, other, at in holders[(holding.backend, value)]
                       if hotkey != holding.hotkey and at < when and other not in skipped]
            for hotkey, other, at in earlier:
                first[hotkey] = min(first.get(hotkey, (at, other)), (at, other))
            for hotkey in {hotkey for hotkey, _, _ in earlier}:
                hits[hotkey] += 1
        if len(values) >= min_sample:
            over = [hotkey for hotkey, count in hits.items() if count / len(values) >= threshold]
            if over:  # the earliest of the miners it overlaps with is the one it copied
                original = min(over, key=lambda hotkey: first[hotkey])
                found.append(Copy(holding.backend, holding.hotkey, key, original, first[original][1], "re-encoded",
                                  hits[original] / len(values)))
        else:
            small_total[(holding.backend, holding.hotkey)] += len(values)
            for original, count in hits.items():
                small[(holding.backend, holding.hotkey, original)].append((key, count, len(values), first[original][1]))
    flagged = {copy.key for copy in found}
    for (backend, copier, original), items in small.items():
        # over all of the copier's small chunks, not only those that share a URI with this miner
        total_hits, total = sum(i[1] for i in items), small_total[(backend, copier)]
        if total >= min_sample and total_hits / total >= threshold:
            found.extend(Copy(backend, copier, key, original, other, "re-encoded", count / size)
                         for key, count, size, other in items if count and key not in flagged)
    return found


def find_copies(holdings: Sequence[MinerHoldings], threshold: float = DEFAULT_THRESHOLD,
                min_sample: int = DEFAULT_MIN_SAMPLE) -> list[Copy]:
    """Byte copies first; then re-encoded copies among the chunks that are not byte copies."""
    exact = byte_copies(holdings)
    return exact + reencoded_copies(holdings, threshold, min_sample, skip={copy.key for copy in exact})


def own_duplicates(manifest: Manifest) -> int:
    """An estimate of the URIs a miner stores in more than one of its own chunks (from the samples)."""
    seen: dict[int, int] = defaultdict(int)
    for entry in manifest.chunks:
        for value in set(int(v) for v in decode_sample(entry.sample)):
            seen[value] += 1
    return sum(count - 1 for count in seen.values() if count > 1) << SAMPLE_SHIFT


def copy_verdicts(copies: Iterable[Copy]) -> Mapping[str, str]:
    """What a check takes (``CheckSettings.copies``): the copied object's key -> why."""
    return {copy.key: copy.reason() for copy in copies}


COPIES_FORMAT = "storage-core-copies/1"


def copies_document(copies: Iterable[Copy]) -> dict[str, object]:
    """What ``storage-core audit --copies-out`` writes and ``validate --copies`` reads."""
    return {"format": COPIES_FORMAT, "copies": copy_verdicts(copies)}


def load_copies(document: Mapping[str, object]) -> Mapping[str, str]:
    """The object key -> reason mapping of a copies document; ValueError naming what is wrong."""
    if document.get("format") != COPIES_FORMAT:
        raise ValueError(f"not a copies file (format is {document.get('format')!r}, want {COPIES_FORMAT})")
    copies = document.get("copies")
    if not isinstance(copies, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in copies.items()):
        raise ValueError("'copies' must map object keys to reasons")
    return dict(copies)
