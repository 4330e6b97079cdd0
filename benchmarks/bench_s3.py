"""S3 plugin: upload throughput through grants, and the checker's bytes per validated URI.

Everything runs against one real SeaweedFS (``weed mini`` on 127.0.0.1) and the plugin's grant service
(``storage-core s3 serve`` in its own process), both started here and stopped by their pids at the end.

* **Upload throughput** (target ratio >= 0.9): the plugin's uploader (a signed grant request per object,
  then a presigned POST, or presigned part PUTs for files over the multipart threshold) against plain
  boto3 ``upload_file`` of the same files to the same server, in the same run. The grant service runs in
  its own process (``storage-core s3 serve``), as deployed. Each side uploads into a bucket of its own,
  alternating which goes first, emptied after each round; the best round of each counts. Batch
  verification (hashing every file, which the ``storage_upload`` hook does before any byte is sent) is
  reported separately.
* **Checker bytes per validated URI** (target < 5%): a miner holding several chunks written by the core's
  chunk writer; the checker validates a sample of URIs spread over every file, reading footers and ``uri``
  column chunks by range requests. Baseline: downloading the whole file that holds each URI. Also reported:
  the sample's total bytes against downloading every file once.

Usage: python benchmarks/bench_s3.py [--quick]   (prints the result rows as JSON)
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import result, sample_uris  # noqa: E402
from storage_core.chain.keys import keypair_from_uri  # noqa: E402
from storage_core.chunks import verify_batch, write_chunk  # noqa: E402
from storage_core.schema import schema_for  # noqa: E402
from storage_core.testing.data import make_batch  # noqa: E402
from storage_core.values import BackendContext, StagedFile, UploadBatch  # noqa: E402
from storage_core.verify import CheckSettings, check_claims  # noqa: E402
from storage_core_s3 import plugin  # noqa: E402
from storage_core_s3.options import S3Options  # noqa: E402
from storage_core_s3.testing import GrantServiceProcess, SeaweedFS  # noqa: E402
from storage_core_s3.uploader import Uploader  # noqa: E402

MiB = 1024 * 1024


def _text_chunk(directory: Path, megabytes: float, seed: int) -> StagedFile:
    """A valid chunk of ~``megabytes`` MiB whose text column barely compresses (throughput needs real bytes)."""
    rng = random.Random(seed)
    rows = max(1, int(megabytes * MiB / 1150))
    day = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=seed % 20)
    times = [day + timedelta(seconds=i * 86_000 // rows) for i in range(rows)]
    uris = [f"https://x.com/u{seed}/status/{i:012d}" for i in range(rows)]
    texts = [rng.randbytes(1024).hex() for _ in range(rows)]
    given = {"uri": uris, "datetime": times, "source": ["x"] * rows, "label": ["#bench"] * rows,
             "content_size_bytes": [2048] * rows, "username": [f"u{seed}"] * rows, "text": texts, "url": uris,
             "timestamp": times, "tweet_hashtags": [["#bench"]] * rows}
    schema = schema_for("x")  # the columns not given (profile fields, counts, ...) stay null
    table = pa.table({field.name: given.get(field.name, pa.nulls(rows, field.type)) for field in schema}, schema=schema)
    return write_chunk(table, "x", directory)


def _clear(admin, bucket: str, store: SeaweedFS) -> None:
    for key in store.list_keys(bucket):
        admin.delete_object(Bucket=bucket, Key=key)


def _upload_benchmark(store: SeaweedFS, service: GrantServiceProcess, bucket: str, miner, root: Path,
                      quick: bool) -> list[dict]:
    sizes = [6] * 4 + [24] if quick else [24] * 8 + [160]
    threshold, part_size = (16 * MiB, 8 * MiB) if quick else (64 * MiB, 16 * MiB)
    files = tuple(_text_chunk(root / "upload", size, seed=100 + index) for index, size in enumerate(sizes))
    batch = UploadBatch(miner_hotkey=miner.ss58_address, files=files)
    total = batch.total_bytes
    rounds = 2 if quick else 5

    verify_started = time.perf_counter()
    verify_batch(batch)
    verify_s = time.perf_counter() - verify_started

    from boto3.s3.transfer import TransferConfig

    admin = store.client(max_pool_connections=16)
    transfer = TransferConfig()  # boto3's defaults: 8 MiB threshold and parts, 10 threads
    boto_bucket = store.create_bucket(f"bench-boto3-{os.getpid()}")
    for name in (bucket, boto_bucket):  # a new bucket's first write allocates its volumes: not timed
        admin.put_object(Bucket=name, Key="warm-up", Body=b"\0" * MiB)
        admin.delete_object(Bucket=name, Key="warm-up")
    options = S3Options.from_mapping({"bucket": bucket, "grant_url": service.url,
                                      "multipart_threshold": threshold, "part_size": part_size})

    plugin_times, boto_times = [], []
    for round_index in range(rounds):
        order = ("boto3", "plugin") if round_index % 2 else ("plugin", "boto3")
        for side in order:
            started = time.perf_counter()
            if side == "plugin":
                with Uploader(options, miner) as uploader:
                    receipt = uploader.upload_batch(batch, verified=True)
                plugin_times.append(time.perf_counter() - started)
                if any(o.already_present for o in receipt.objects):
                    raise RuntimeError("the plugin found objects of an earlier round: nothing was uploaded")
            else:
                for staged in files:
                    admin.upload_file(str(staged.path), boto_bucket, f"bench/{staged.sha256}.parquet", Config=transfer)
                boto_times.append(time.perf_counter() - started)
        if len(store.list_keys(bucket)) != len(files) or len(store.list_keys(boto_bucket)) != len(files):
            raise RuntimeError("an upload side did not store every file")
        _clear(admin, bucket, store)
        _clear(admin, boto_bucket, store)

    plugin_mbps = total / MiB / min(plugin_times)
    boto_mbps = total / MiB / min(boto_times)
    hook_mbps = total / MiB / (min(plugin_times) + verify_s)
    label = f"{len(files)} files, {total / MiB:.0f} MiB, largest {max(sizes)} MiB in parts; best of {rounds}"
    return [
        result(f"s3 upload throughput, grant + upload ({label})", plugin_mbps, "MiB/s",
               "boto3 upload_file of the same files to the same SeaweedFS", boto_mbps),
        result(f"s3 upload throughput incl. batch verification ({label})", hook_mbps, "MiB/s",
               "boto3 upload_file of the same files to the same SeaweedFS", boto_mbps),
    ]


def _checker_benchmark(service: GrantServiceProcess, bucket: str, miner, validator, root: Path,
                       quick: bool) -> list[dict]:
    files, rows_per_file, sample_size = (2, 20_000, 20) if quick else (6, 50_000, 60)
    batch = make_batch(root / "check", miner.ss58_address, rows=files * rows_per_file, chunks=files, seed=7)
    options = S3Options.from_mapping({"bucket": bucket, "grant_url": service.url})
    with Uploader(options, miner) as uploader:
        uploader.upload_batch(batch)
    sample, holder_size = sample_uris(batch, sample_size, seed=13)
    context = BackendContext(backend_id="s3", options={"bucket": bucket, "grant_url": service.url},
                             hotkey=validator.ss58_address, signer=validator)

    def check(uris: list[str]):  # the core's check through the plugin's store, as the dispatcher runs it
        store = plugin.storage_reader(context, miner.ss58_address)
        try:
            return check_claims(store, "s3", miner.ss58_address, uris, CheckSettings(seed="bench"))
        finally:
            store.close()

    outcome = check(sample)
    if outcome.found != frozenset(sample) or outcome.problems:
        raise RuntimeError(f"checker found {len(outcome.found)} of {len(sample)} URIs, problems {outcome.problems}")
    per_uri = outcome.bytes_read / len(sample)
    naive_per_uri = sum(holder_size.values()) / len(sample)
    label = f"{files} files x {rows_per_file} rows, {len(sample)} URIs"
    single = sample[0]
    one = check([single])
    return [
        result(f"s3 checker bytes per validated URI ({label})", per_uri, "bytes/URI",
               "download the whole file holding each URI", naive_per_uri, higher_is_better=False),
        result(f"s3 checker bytes for the whole sample ({label})", outcome.bytes_read, "bytes",
               "download every file of the miner once", batch.total_bytes, higher_is_better=False),
        result(f"s3 checker requests for the whole sample ({label})", outcome.requests, "requests",
               "one GET per file (plus one listing)", files + 1, higher_is_better=False),
        result(f"s3 checker bytes to validate one URI ({files} files x {rows_per_file} rows)", one.bytes_read, "bytes",
               "download the whole file holding it", holder_size[single], higher_is_better=False),
    ]


def run(quick: bool = False) -> list[dict]:
    miner, validator, service_key = (keypair_from_uri(f"//bench-s3-{name}") for name in ("miner", "validator", "service"))
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as scratch, SeaweedFS(Path(scratch) / "seaweed") as store:
        root = Path(scratch)
        bucket = store.create_bucket(f"bench-plugin-{os.getpid()}")
        # The grant service in its own process, as deployed (it does not share the uploader's interpreter).
        with GrantServiceProcess(bucket=bucket, endpoint_url=store.endpoint_url, access_key=store.access_key,
                                 secret_key=store.secret_key, service_hotkey=service_key.ss58_address,
                                 miners=[miner.ss58_address], validators=[validator.ss58_address],
                                 extra_args=["--rate-limit", "0", "--log-level", "warning"],
                                 log_path=root / "grant-service.log") as service:
            rows = _upload_benchmark(store, service, bucket, miner, root, quick)
            rows += _checker_benchmark(service, bucket, miner, validator, root, quick)
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))  # noqa: T201 - the script's output
