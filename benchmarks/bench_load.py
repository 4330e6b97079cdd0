"""Load on the S3 grant service: 50 miners asking for upload grants and uploading small chunks, and 10
validators asking for read grants and reading, all at once, against SeaweedFS and the grant service in its
own process (as deployed). Reports the p99 grant latency under that load against the same service's p99
with one miner and one validator (the baseline, measured in the same run); lower is better.

With ``hostile=True`` one more registered miner does the most expensive thing the service's limits allow,
as fast as it can: multipart grants with as many parts as a request body holds (each answered with that many
presigned URLs), aborting each upload at once so the open-upload cap never stops it, and retrying at once
when refused. The honest clients' p99 is compared with the same run without it (target: within 2x).

``run_load`` is also the body of tests/test_load_grants.py, which asserts no failed request and no 5xx.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx

from benchmarks.common import result
from storage_core.chain.http_auth import sign_request
from storage_core.chain.keys import keypair_from_uri
from storage_core.chunks import write_chunk
from storage_core.schema import schema_for
from storage_core.testing.data import make_table
from storage_core_s3 import protocol
from storage_core_s3.checker import parse_list_page
from storage_core_s3.testing import SeaweedFS
from storage_core_s3.testing.service import GrantServiceProcess

HERE = Path(__file__).resolve().parent


@attrs.frozen
class LoadReport:
    """What the clients saw and what the service logged."""

    miners: int
    validators: int
    requests: int
    failures: tuple[str, ...]
    statuses: dict[str, int]  # "grant 200", "s3 upload 204", ...
    service_statuses: dict[int, int]  # from the service's own JSON request log
    upload_grant_ms: tuple[float, ...]
    read_grant_ms: tuple[float, ...]
    objects_stored: int
    elapsed_s: float
    hostile_statuses: dict[int, int] = attrs.field(factory=dict)  # what the hostile miner's requests got

    @property
    def grant_ms(self) -> tuple[float, ...]:
        return self.upload_grant_ms + self.read_grant_ms

    def percentile(self, fraction: float, values: tuple[float, ...] | None = None) -> float:
        ordered = sorted(self.grant_ms if values is None else values)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Run:
    def __init__(self, service: GrantServiceProcess, service_hotkey: str) -> None:
        self.service = service
        self.service_hotkey = service_hotkey
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.upload_ms: list[float] = []
        self.read_ms: list[float] = []

    def grant(self, http: httpx.Client, signer: Any, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        body = json.dumps(payload).encode()
        headers = sign_request(signer, "POST", path, body, self.service_hotkey)
        started = time.perf_counter()
        response = http.post(self.service.url + path, content=body, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            self.statuses[f"grant {response.status_code}"] += 1
            (self.read_ms if path == protocol.PATH_READ else self.upload_ms).append(elapsed)
        if response.status_code != 200:
            self.fail(f"{path} for {signer.ss58_address[:8]}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return response.json()

    def store(self, kind: str, response: httpx.Response, ok: tuple[int, ...]) -> bool:
        with self.lock:
            self.statuses[f"s3 {kind} {response.status_code}"] += 1
        if response.status_code not in ok:
            self.fail(f"s3 {kind}: HTTP {response.status_code} {response.text[:200]}")
            return False
        return True

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def miner(self, signer: Any, chunks: list[Any], start: threading.Barrier) -> None:
        with httpx.Client(timeout=60) as http:
            start.wait()
            for staged in chunks:
                try:
                    grant = self.grant(http, signer, protocol.PATH_UPLOAD, {
                        "sha256": staged.sha256, "size": staged.size_bytes, "source": staged.source, "date": staged.date})
                    if grant is None or grant.get("status") == "present":
                        continue
                    content = Path(staged.path).read_bytes()
                    response = http.post(grant["url"], data=grant["fields"], files={"file": ("chunk.parquet", content)})
                    self.store("upload", response, (200, 201, 204))
                except Exception as error:  # noqa: BLE001 - every failure is counted, none may happen
                    self.fail(f"miner {signer.ss58_address[:8]}: {type(error).__name__}: {error}")

    def validator(self, signer: Any, miners: list[str], reads: int, seed: int, start: threading.Barrier) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as http:
            start.wait()
            for _ in range(reads):
                try:
                    miner = rng.choice(miners)
                    answer = self.grant(http, signer, protocol.PATH_READ, {"miner_hotkey": miner, "list": True})
                    if answer is None:
                        continue
                    listing = http.get(answer["list_url"])
                    if not self.store("list", listing, (200,)):
                        continue
                    keys = [item.key for item in parse_list_page(listing.content).objects][:3]
                    if not keys:
                        continue
                    answer = self.grant(http, signer, protocol.PATH_READ, {"miner_hotkey": miner, "list": False, "keys": keys})
                    if answer is None:
                        continue
                    for url in answer["objects"].values():
                        self.store("range read", http.get(url, headers={"Range": "bytes=-1024"}), (206,))
                except Exception as error:  # noqa: BLE001
                    self.fail(f"validator {signer.ss58_address[:8]}: {type(error).__name__}: {error}")


    def hostile(self, signer: Any, done: threading.Event, start: threading.Barrier, statuses: Counter[int]) -> None:
        """Multipart grants of ~950 parts (what fits in the 64 KiB body), each aborted at once, without pause."""
        parts = 950
        digests = [f"{index:064x}" for index in range(parts)]
        with httpx.Client(timeout=60) as http:
            start.wait()
            serial = 0
            while not done.is_set():
                serial += 1
                sha256 = f"{serial:064x}"
                payload = {"sha256": sha256, "size": parts * 5 * 1024 * 1024, "source": "x", "date": "2026-01-01",
                           "part_size": 5 * 1024 * 1024, "part_sha256": digests}
                body = json.dumps(payload).encode()
                path = protocol.PATH_MULTIPART
                response = http.post(self.service.url + path, content=body,
                                     headers=sign_request(signer, "POST", path, body, self.service_hotkey))
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    answer = response.json()
                    abort = json.dumps({"key": answer["key"], "upload_id": answer["upload_id"]}).encode()
                    http.post(self.service.url + protocol.PATH_ABORT, content=abort,
                              headers=sign_request(signer, "POST", protocol.PATH_ABORT, abort, self.service_hotkey))


def _service_statuses(log_path: Path) -> Counter[int]:
    statuses: Counter[int] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        start = line.find('{"')
        if start < 0:
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "request" and isinstance(event.get("status"), int):
            statuses[event["status"]] += 1
    return statuses


def run_load(root: Path, *, miners: int = 50, validators: int = 10, files_per_miner: int = 2,
             reads_per_validator: int = 6, rows: int = 20, tag: str = "load", hostile: bool = False) -> LoadReport:
    """Start SeaweedFS and the grant service under ``root``, run the load, stop both (by pid)."""
    root = Path(root)
    miner_keys = [keypair_from_uri(f"//{tag}-miner-{index}") for index in range(miners)]
    validator_keys = [keypair_from_uri(f"//{tag}-validator-{index}") for index in range(validators)]
    service_key = keypair_from_uri(f"//{tag}-grant-service")
    hostile_key = keypair_from_uri(f"//{tag}-hostile-miner")
    chunks = {}
    for index, key in enumerate(miner_keys):  # small distinct chunks, made before the clock starts
        directory = root / "chunks" / str(index)
        directory.mkdir(parents=True, exist_ok=True)
        chunks[key.ss58_address] = [write_chunk(make_table(rows, "x", seed=index * 100 + n).cast(schema_for("x")), "x",
                                                directory) for n in range(files_per_miner)]
    with SeaweedFS(root / "seaweed") as store:
        bucket = store.create_bucket(f"{tag}-grants")
        with GrantServiceProcess(bucket=bucket, endpoint_url=store.endpoint_url, access_key=store.access_key,
                                 secret_key=store.secret_key, service_hotkey=service_key.ss58_address,
                                 miners=[k.ss58_address for k in miner_keys] + [hostile_key.ss58_address],
                                 validators=[k.ss58_address for k in validator_keys],
                                 log_path=root / "grant-service.log") as service:
            run = _Run(service, service_key.ss58_address)
            start = threading.Barrier(miners + validators + (1 if hostile else 0))
            done, hostile_statuses = threading.Event(), Counter[int]()
            threads = [threading.Thread(target=run.miner, args=(key, chunks[key.ss58_address], start), daemon=True)
                       for key in miner_keys]
            threads += [threading.Thread(target=run.validator, args=(key, [k.ss58_address for k in miner_keys],
                                                                     reads_per_validator, index, start), daemon=True)
                        for index, key in enumerate(validator_keys)]
            attacker = threading.Thread(target=run.hostile, args=(hostile_key, done, start, hostile_statuses), daemon=True)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            if hostile:
                attacker.start()
            for thread in threads:
                thread.join(120)
            elapsed = time.perf_counter() - started
            done.set()
            if hostile:
                attacker.join(60)
            if any(thread.is_alive() for thread in threads):
                run.fail("a client thread did not finish within 120 s")
            stored = len(store.list_keys(bucket))
        service_statuses = _service_statuses(root / "grant-service.log")
    return LoadReport(
        miners=miners, validators=validators, requests=sum(run.statuses.values()), failures=tuple(run.failures),
        statuses=dict(run.statuses), service_statuses=dict(service_statuses), upload_grant_ms=tuple(run.upload_ms),
        read_grant_ms=tuple(run.read_ms), objects_stored=stored, elapsed_s=elapsed,
        hostile_statuses=dict(hostile_statuses),
    )


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        alone = run_load(Path(scratch) / "alone", miners=1, validators=1, files_per_miner=20 if quick else 50,
                         reads_per_validator=10 if quick else 25, tag="bench-alone")
        loaded = run_load(Path(scratch) / "loaded", files_per_miner=2 if quick else 4,
                          reads_per_validator=6 if quick else 12, tag="bench-load")
        attacked = run_load(Path(scratch) / "attacked", files_per_miner=2 if quick else 4,
                            reads_per_validator=6 if quick else 12, tag="bench-attacked", hostile=True)
    for report in (alone, loaded, attacked):
        if report.failures:
            raise RuntimeError(f"load run had {len(report.failures)} failures: {report.failures[:3]}")
    p99_alone, p99_loaded = alone.percentile(0.99), loaded.percentile(0.99)
    summary = {
        "p50_grant_ms": loaded.percentile(0.5), "p99_grant_ms": p99_loaded,
        "p99_upload_grant_ms": loaded.percentile(0.99, loaded.upload_grant_ms),
        "p99_read_grant_ms": loaded.percentile(0.99, loaded.read_grant_ms),
        "p99_grant_ms_one_miner_one_validator": p99_alone, "requests": loaded.requests, "elapsed_s": loaded.elapsed_s,
        "service_statuses": loaded.service_statuses,
        "p99_grant_ms_with_hostile_miner": attacked.percentile(0.99),
        "p50_grant_ms_with_hostile_miner": attacked.percentile(0.5),
        "hostile_miner_statuses": attacked.hostile_statuses,
        "elapsed_s_with_hostile_miner": attacked.elapsed_s,
    }
    (HERE / "results-load.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [
        result("p99 grant latency, 50 miners + 10 validators", p99_loaded, "ms", "p99 with one miner + one validator",
               p99_alone, higher_is_better=False),
        result("honest p99 grant latency with one hostile miner (950-part multipart grants, no pause)",
               attacked.percentile(0.99), "ms", "the same load without it (target ratio <= 2)", p99_loaded,
               higher_is_better=False),
        result("requests/s under load (grants + S3)", loaded.requests / loaded.elapsed_s, "req/s",
               "one miner + one validator", alone.requests / alone.elapsed_s),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))  # noqa: T201 - the script's output
