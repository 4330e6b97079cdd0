"""The subnet-wide audit: every miner's listing and latest manifest per backend, never a chunk body.

For each (backend, miner) the audit lists the miner's objects (with the store's own times), loads and
checks its latest manifest (signature, chain link, caps), then compares all miners at once
(:mod:`storage_core.audit.copies`). What it reports per miner: chunks, rows and bytes, an estimate of
URIs stored twice in its own chunks, the manifest round or why it is refused, and the chunks it copied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from storage_core.audit.copies import Copy, MinerHoldings, find_copies, own_duplicates
from storage_core.layout import parse_key, parse_manifest_key
from storage_core.manifest.document import ManifestError
from storage_core.verify.manifest_index import load_manifest
from storage_core.verify.store import ObjectStore

log = logging.getLogger(__name__)

StoreOpener = Callable[[str, str], ObjectStore]  # (backend, miner hotkey) -> the miner's objects there


@attrs.frozen
class MinerAudit:
    """One miner on one backend, as the audit saw it."""

    backend: str
    hotkey: str
    chunks: int = 0
    rows: int = 0
    bytes: int = 0
    duplicate_uris: int = 0  # estimated from the manifest's samples
    manifest_round: int | None = None
    problem: str | None = None  # a refused manifest, a broken chain, no manifest, or a store that failed
    copied_chunks: int = 0

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class AuditReport:
    miners: tuple[MinerAudit, ...]
    copies: tuple[Copy, ...]
    requests: int
    bytes_read: int
    elapsed_s: float

    def as_json(self) -> dict[str, Any]:
        return {"miners": [m.as_json() for m in self.miners], "copies": [attrs.asdict(c) for c in self.copies],
                "requests": self.requests, "bytes_read": self.bytes_read, "elapsed_s": round(self.elapsed_s, 3)}


def _timed_listing(store: ObjectStore) -> list[Any]:
    """A listing with the store's times: ``list_objects_timed`` where a store has a costlier timed listing."""
    timed = getattr(store, "list_objects_timed", None)
    return list(timed() if callable(timed) else store.list_objects())


def holdings_of(store: ObjectStore, backend: str, hotkey: str) -> MinerHoldings:
    """One miner's data objects and believed manifest on one backend (the listing, and the manifest without its URI index)."""
    listing = _timed_listing(store)
    objects = tuple(listed for listed in listing
                    if (name := parse_key(listed.key)) is not None and name.hotkey == hotkey)
    try:
        index = load_manifest(store, listing, hotkey, backend)
        manifest = index.whole() if index is not None else None
    except ManifestError as error:
        return MinerHoldings(hotkey, backend, objects, None, str(error))
    if manifest is None:
        return MinerHoldings(hotkey, backend, objects, None, "no round manifest" if objects else None)
    rounds = [parse_manifest_key(listed.key) for listed in listing]
    older = [r for r in rounds if r is not None and r.hotkey == hotkey and r.seq < manifest.seq]
    if manifest.previous is None and older:  # believed, but its history does not link up: say so
        return MinerHoldings(hotkey, backend, objects, manifest,
                             f"chain restarted at round {manifest.seq}: {len(older)} older manifests unlinked")
    return MinerHoldings(hotkey, backend, objects, manifest)


def run_audit(open_store: StoreOpener, backends: Sequence[str], hotkeys: Sequence[str],
              concurrency: int = 8) -> AuditReport:
    """Audit ``hotkeys`` on ``backends``; one failing store is that miner's problem line, never the audit's."""
    started = time.monotonic()
    meters: list[Any] = []
    failures: dict[tuple[str, str], str] = {}

    def one(job: tuple[str, str]) -> MinerHoldings | None:
        backend, hotkey = job
        try:
            store = open_store(backend, hotkey)
            meters.append(store.meter)
            try:
                return holdings_of(store, backend, hotkey)
            finally:
                store.close()
        except Exception as error:  # the backend could not answer for this miner
            log.warning("audit: %s on %s: %s", hotkey, backend, error)
            failures[job] = f"could not audit: {type(error).__name__}: {error}"
            return None

    jobs = [(backend, hotkey) for backend in backends for hotkey in hotkeys]
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="audit") as pool:
        holdings = [h for h in pool.map(one, jobs) if h is not None]
    copies = find_copies(holdings)
    copied: dict[tuple[str, str], int] = {}
    for copy in copies:
        copied[(copy.backend, copy.copier)] = copied.get((copy.backend, copy.copier), 0) + 1
    miners = []
    for holding in holdings:
        manifest = holding.manifest
        miners.append(MinerAudit(
            backend=holding.backend, hotkey=holding.hotkey, chunks=len(holding.objects),
            rows=sum(entry.rows for entry in manifest.chunks) if manifest else 0,
            bytes=sum(listed.size for listed in holding.objects),
            duplicate_uris=own_duplicates(manifest) if manifest else 0,
            manifest_round=manifest.seq if manifest else None, problem=holding.manifest_problem,
            copied_chunks=copied.get((holding.backend, holding.hotkey), 0)))
    miners += [MinerAudit(backend=b, hotkey=h, problem=why) for (b, h), why in failures.items()]
    miners.sort(key=lambda m: (m.backend, m.hotkey))
    return AuditReport(tuple(miners), tuple(copies), sum(m.requests for m in meters),
                       sum(m.bytes_read for m in meters), time.monotonic() - started)
