"""HuggingFace checker: bytes read per validated URI, against downloading whole files.

A miner's repo on the development Hub holds several realistic chunks (~50k rows each, written by the
core's chunk writer). The checker validates a sample of URIs spread over every file, through the real
huggingface_hub client; its own meter and the server's counters give the bytes it read. Baselines,
measured on the same files in the same run:

* a naive checker that downloads, for each URI, the whole file holding it (target: under 5%);
* downloading every file of the repo once.

Usage: python benchmarks/bench_hf.py [--quick]   (prints the result rows as JSON)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="bench-hf-home-"))

import json  # noqa: E402


if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import result, sample_uris  # noqa: E402
from storage_core.chain.keys import keypair_from_uri  # noqa: E402
from storage_core.layout import key_for  # noqa: E402
from storage_core.testing.data import make_batch  # noqa: E402
from storage_core.values import BackendContext  # noqa: E402
from storage_core.verify import CheckSettings, check_claims  # noqa: E402
from storage_core_huggingface import plugin, uploader  # noqa: E402
from storage_core_huggingface.identity import repo_id_for  # noqa: E402
from storage_core_huggingface.testing.hub_server import DevHub, start_hub  # noqa: E402

NAMESPACE = "bench"
PREFIX = "sn13"


def run(quick: bool = False) -> list[dict]:
    files, rows_per_file, sample_size = (2, 20_000, 20) if quick else (6, 50_000, 60)
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as scratch:
        root = Path(scratch)
        miner, validator = keypair_from_uri("//bench-hf-miner"), keypair_from_uri("//bench-hf-validator")
        repo_id = repo_id_for(NAMESPACE, PREFIX, miner.ss58_address)
        hub = DevHub(root / "hub")
        hub.add_token("miner-token", "miner", repos=[repo_id])
        hub.add_token("validator-token", "validator", write=False)
        hub.add_org(NAMESPACE, ["miner"])
        batch = make_batch(root / "staging", miner.ss58_address, rows=files * rows_per_file, chunks=files, seed=42)

        with start_hub(hub) as running:
            def context(signer, token):
                return BackendContext(backend_id="huggingface", signer=signer, hotkey=signer.ss58_address,
                                      options={"namespace": NAMESPACE, "repo_prefix": PREFIX,
                                               "endpoint": running.url, "token": token})

            uploader.upload(context(miner, "miner-token"), batch)
            sample, holder_size = sample_uris(batch, sample_size, seed=7)
            hub.stats.reset()
            store = plugin.storage_reader(context(validator, "validator-token"), miner.ss58_address)
            try:  # the core's check, through the plugin's store, as the dispatcher runs it
                outcome = check_claims(store, "huggingface", miner.ss58_address, sample, CheckSettings(seed="bench"))
            finally:
                store.close()
            served = hub.stats.bytes_sent
            if outcome.found != frozenset(sample):
                raise RuntimeError(f"checker found {len(outcome.found)} of {len(sample)} URIs")
            if outcome.bytes_read != served:
                raise RuntimeError(f"checker meter ({outcome.bytes_read} B) disagrees with the server ({served} B)")
            stored = hub.repo_files(repo_id)
            repo_bytes = sum(stored[key_for(miner.ss58_address, staged)] for staged in batch.files)

    per_uri = outcome.bytes_read / len(sample)
    naive_per_uri = sum(holder_size.values()) / len(sample)
    label = f"{files} files x {rows_per_file} rows, {len(sample)} URIs"
    return [
        result(f"hf checker bytes per validated URI ({label})", per_uri, "bytes/URI",
               "download the whole file holding each URI", naive_per_uri, higher_is_better=False),
        result(f"hf checker bytes for the whole sample ({label})", outcome.bytes_read, "bytes",
               "download every file of the repo once", repo_bytes, higher_is_better=False),
        result(f"hf checker requests for the whole sample ({label})", outcome.requests, "requests",
               "one GET per file of the repo", files, higher_is_better=False),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))  # noqa: T201 - the script's output
