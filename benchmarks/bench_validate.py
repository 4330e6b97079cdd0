"""What a validation reads: bytes per claimed URI of the core's check, on honest miners of growing size.

Each miner is a generated SN13 database (30 days, X and Reddit) exported by the real export into
content-addressed chunks (about 1,000 files at 1M rows). The chunks sit in an in-memory store that records each
object's sha256, as S3 (single-part uploads) and the Hub (LFS) do, so what is measured is the core's
checking path (``storage_core.verify.check_claims``) and nothing of a transport. A check claims 50 URIs
drawn from the whole database and samples 5 of them for full-row checks.

Figures: bytes per claimed URI for the whole check (listing, footers, uri columns, full rows); bytes per
full-row check (the check with 5 sampled URIs minus the same check with none, over 5); against the
baseline of downloading the whole file that holds each claimed URI.

Usage: python -m benchmarks validate [--quick]
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import result  # noqa: E402
from storage_core.chain.keys import keypair_from_uri  # noqa: E402
from storage_core.export import export  # noqa: E402
from storage_core.manifest import ManifestBook  # noqa: E402
from storage_core.layout import key_for  # noqa: E402
from storage_core.testing.memory_store import MemoryStore  # noqa: E402
from storage_core.testing.minerdb import DEFAULT_END, create_miner_db  # noqa: E402
from storage_core.verify import CheckSettings, ListedObject, check_claims  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
CLAIMS = 50
FULL_CHECKS = 5


class ChecksummedStore(MemoryStore):
    """A memory store whose listing carries each object's sha256, as the Hub's LFS listing does."""

    def list_objects(self) -> Iterator[ListedObject]:
        for listed in super().list_objects():
            yield ListedObject(listed.key, listed.size, hashlib.sha256(self.objects[listed.key]).hexdigest())


def _database(rows: int) -> Path:
    """A cached 30-day miner database (generated once per day it is used: its dates follow today)."""
    path = DATA / f"validate-v2-{rows}-{DEFAULT_END.date().isoformat()}.sqlite"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        for old in DATA.glob(f"validate-*{rows}-*.sqlite*"):
            old.unlink()
        partial = path.with_name(path.name + ".tmp")
        create_miner_db(partial, rows, seed=7, days=30)
        partial.rename(path)
    return path


def _measure(rows: int) -> list[dict]:
    db = _database(rows)
    with tempfile.TemporaryDirectory() as out:
        files = export(db, Path(out) / "chunks").files
        objects = {key_for(HOTKEY, staged): staged.path.read_bytes() for staged in files}
        book = ManifestBook(Path(out) / "manifests", HOTKEY, freshness_days=31)
        book.add("memory", files)
        manifest = book.build("memory", keypair_from_uri("//Alice"), now=DEFAULT_END)
    indexed = {**objects, manifest.key: manifest.data}
    holder = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        uris = [uri for (uri,) in connection.execute("SELECT uri FROM DataEntity")]
    claims = random.Random(rows).sample(uris, CLAIMS)
    import pyarrow.parquet as pq
    import io

    wanted = set(claims)
    for key, data in objects.items():
        for uri in wanted.intersection(pq.read_table(io.BytesIO(data), columns=["uri"]).column("uri").to_pylist()):
            holder[uri] = len(data)
    now = DEFAULT_END + timedelta(minutes=1)

    def check(full_checks: int, stored: dict[str, bytes] = indexed) -> tuple[int, int, float]:
        store = ChecksummedStore(stored, HOTKEY)
        settings = CheckSettings(freshness_days=31, full_checks=full_checks, seed="bench", now=now)
        started = time.perf_counter()
        outcome = check_claims(store, "memory", HOTKEY, claims, settings)
        elapsed = time.perf_counter() - started
        assert outcome.found == frozenset(claims) and not outcome.problems, (outcome.rejected, outcome.problems)
        return outcome.bytes_read, outcome.requests, elapsed

    with_rows, requests, elapsed = check(FULL_CHECKS)
    without_rows, presence_requests, _ = check(0)
    by_listing, listing_requests, _ = check(0, objects)
    whole_files = sum(holder[uri] for uri in claims) / CLAIMS
    label = f"{rows:,} rows, {len(objects)} files, {CLAIMS} URIs"
    per_full_check = max(0, with_rows - without_rows) / FULL_CHECKS
    return [
        result(f"validate bytes per claimed URI, presence only ({label}, manifest of {len(manifest.data):,} bytes)",
               without_rows / CLAIMS, "bytes/URI", "the same check without a manifest (listing every file)",
               by_listing / CLAIMS, higher_is_better=False),
        result(f"validate bytes per claimed URI ({label}, {FULL_CHECKS} full-row checks)", with_rows / CLAIMS,
               "bytes/URI", "download the whole file holding each URI", whole_files, higher_is_better=False),
        result(f"validate bytes per full-row check ({label})", per_full_check, "bytes",
               "download the whole file holding the row", whole_files, higher_is_better=False),
        result(f"validate requests per check ({label})", requests, "requests", "one GET per claimed URI",
               CLAIMS, higher_is_better=False),
        result(f"validate seconds per check ({label})", elapsed, "s", "target 10 s", 10.0, higher_is_better=False),
    ]


def run(quick: bool = False) -> list[dict]:
    sizes = (20_000, 100_000) if quick else (20_000, 200_000, 1_000_000)
    rows: list[dict] = []
    for size in sizes:
        rows += _measure(size)
    first = rows[0]["value"]
    last = rows[-5]["value"]
    rows.append(result(f"validate bytes per URI at {sizes[-1]:,} rows over {sizes[0]:,} rows", last, "bytes/URI",
                       f"the figure at {sizes[0]:,} rows", first, higher_is_better=False))
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
