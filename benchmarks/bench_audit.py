"""What the subnet-wide audit costs: 256 miners, 30 days of two-hourly rounds, listings and manifests only.

Each miner holds 30 days x 12 rounds x 2 sources = 720 chunks (listed with S3-like sizes and store
times) and its latest round manifest, built by the core's own code (``storage_core.manifest``) over the
miner's URIs. Eight miners store byte copies of another miner's chunks and eight store re-encoded copies
(the same URIs in new bytes); the audit must name exactly those. The stores are in memory: what is
measured is the audit (``storage_core.audit.run_audit``: listing, manifest header, comparison), whose
requests and bytes are what a real store would serve.

Figures: seconds for the whole audit and per miner, bytes read per miner, against the baseline of
reading every chunk's footer (what an audit without manifests would need at the least, 16 KiB each).

Usage: python -m benchmarks audit [--quick]
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import result  # noqa: E402
from storage_core.audit import run_audit  # noqa: E402
from storage_core.chain.keys import new_keypair  # noqa: E402
from storage_core.layout import manifest_key, object_key  # noqa: E402
from storage_core.manifest.document import ChunkEntry, Manifest, encode_manifest  # noqa: E402
from storage_core.manifest.uri_hashes import encode_sample, sampled, uri_hashes  # noqa: E402
from storage_core.manifest.uri_index import build_index  # noqa: E402
from storage_core.schema import SCHEMA_VERSION  # noqa: E402
from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectTail  # noqa: E402

BACKEND = "s3"
DAYS, ROUNDS, SOURCES = 30, 12, ("x", "reddit")
BYTES_PER_ROW = 430
FOOTER_READ = 16 * 1024
NOW = datetime.now(UTC)


class ListingStore:
    """A miner's listing (keys, sizes, store times) and its manifest's bytes; chunk bodies are never read."""

    def __init__(self, listed: list[ListedObject], manifests: dict[str, bytes]) -> None:
        self.listed = listed
        self.manifests = manifests
        self.meter = Meter()

    def list_objects(self) -> Iterator[ListedObject]:
        self.meter.add(requests=1 + len(self.listed) // 1000, bytes_read=200 * len(self.listed))  # XML pages
        yield from self.listed

    def read_tail(self, key: str, length: int) -> ObjectTail:
        raise ObjectError(key, "the audit never reads a chunk")

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if key not in self.manifests:
            raise ObjectError(key, "the audit never reads a chunk")
        data = self.manifests[key][start:end]
        self.meter.add(requests=1, bytes_read=len(data))
        return data

    def close(self) -> None:
        pass


def _miner(index: int, rows_per_chunk: int, copy_of: tuple[list[str], str] | None = None
           ) -> tuple[str, ListedObject, list[ListedObject], dict[str, bytes], list[list[str]]]:
    signer = new_keypair()
    hotkey = signer.ss58_address
    entries, listed, hashes, uri_sets = [], [], [], []
    for chunk in range(DAYS * ROUNDS * len(SOURCES)):
        day, rnd, source = chunk // (ROUNDS * 2), (chunk // 2) % ROUNDS, SOURCES[chunk % 2]
        when = NOW - timedelta(days=DAYS - day, hours=-2 * rnd)
        if copy_of is not None:
            uris = copy_of[0][chunk]
        else:
            uris = [f"https://x.com/m{index}/status/{chunk}{n:05d}" if source == "x" else
                    f"https://www.reddit.com/r/m{index}/comments/{chunk}{n:05d}/" for n in range(rows_per_chunk)]
        uri_sets.append(uris)
        kind = copy_of[1] if copy_of else "own"  # a byte copy has the original's bytes, so its name
        sha = hashlib.sha256(f"{'re-encoded' if kind == 're-encoded' else 'own'}:{uris[0]}".encode()).hexdigest()
        h = uri_hashes(uris)
        hashes.append(h)
        date = when.date().isoformat()
        size = rows_per_chunk * BYTES_PER_ROW
        entries.append(ChunkEntry(sha256=sha, size=size, rows=len(uris), source=source, date=date,
                                  uri_min=min(uris), uri_max=max(uris), round=int(when.timestamp() * 1000),
                                  sample=encode_sample(sampled(h)), footer=min(8000, size // 2)))
        stored = when + (timedelta(hours=1) if copy_of else timedelta())
        listed.append(ListedObject(object_key(hotkey, source, date, sha), size, sha, stored))
    layout, section, digests = build_index(hashes)
    manifest = Manifest(hotkey=hotkey, backend=BACKEND, seq=int(NOW.timestamp() * 1000), previous=None,
                        round_time=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), schema_version=SCHEMA_VERSION,
                        chunks=tuple(entries), index=layout, digests=digests)
    data = encode_manifest(manifest, section, signer)
    key = manifest_key(hotkey, manifest.seq, hashlib.sha256(data).hexdigest())
    return hotkey, ListedObject(key, len(data), None, NOW), listed, {key: data}, uri_sets


def run(quick: bool = False) -> list[dict]:
    miners, rows_per_chunk = (32, 8) if quick else (256, 28)  # 256 x 720 x 28 = 5.2M rows in all
    copiers = 4 if quick else 8
    stores: dict[str, ListingStore] = {}
    originals: list[list[list[str]]] = []
    expected: dict[str, str] = {}
    for index in range(miners - 2 * copiers):
        hotkey, manifest, listed, data, uri_sets = _miner(index, rows_per_chunk)
        stores[hotkey] = ListingStore([*listed, manifest], data)
        originals.append(uri_sets)
    for number in range(2 * copiers):
        kind = "byte" if number < copiers else "re-encoded"
        hotkey, manifest, listed, data, _ = _miner(10_000 + number, rows_per_chunk, (originals[number], kind))
        stores[hotkey] = ListingStore([*listed, manifest], data)
        expected[hotkey] = kind
    started = time.perf_counter()
    report = run_audit(lambda backend, hotkey: stores[hotkey], [BACKEND], sorted(stores))
    elapsed = time.perf_counter() - started
    found = {copy.copier: copy.kind for copy in report.copies}
    problems = [m.problem for m in report.miners if m.problem]
    assert found == expected and not problems, (len(found), len(expected), problems[:2])
    chunks = sum(len(store.listed) - 1 for store in stores.values())
    label = f"{miners} miners x {DAYS} days x {ROUNDS} rounds x {len(SOURCES)} sources"
    return [
        result(f"audit seconds, whole subnet ({label})", elapsed, "s", "target: well under a minute", 60.0,
               higher_is_better=False),
        result(f"audit bytes read per miner ({label})", report.bytes_read / miners, "bytes",
               "one 16 KiB footer read per chunk", chunks * FOOTER_READ / miners, higher_is_better=False),
        result(f"audit requests per miner ({label})", report.requests / miners, "requests",
               "one footer read per chunk", chunks / miners, higher_is_better=False),
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
