"""The demo's copier: one hotkey re-uploads another miner's chunks as its own, and the audit catches it.

The copier stores the victim's chunks byte for byte under its own prefix in S3 and in its own Hub repo,
and lists them in a manifest signed with its own key: every check of the bytes alone passes. What gives
it away is the subnet-wide audit (``storage-core audit``), which sees the same content hashes under two
hotkeys and takes the store's own times to say who had them first; a validation given the audit's
findings (``--copies``) then rejects every claim the copier makes on copied chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import disable_progress_bars

from demo.world import HF_PREFIX, LocalSubnet, Participant
from storage_core.cli import build_cli
from storage_core.layout import miner_prefix, parse_key
from storage_core.testing.manifests import signed_manifest
from storage_core_huggingface.identity import repo_id_for


def copy_miner(world: LocalSubnet, victim: Participant, copier: Participant) -> list[str]:
    """Store ``victim``'s S3 chunks as ``copier``'s on S3 and the Hub, with a signed manifest; the URIs it claims."""
    assert world.seaweed is not None and world.hub is not None
    copied: dict[str, bytes] = {}
    for key in world.seaweed.list_keys(world.bucket_name, miner_prefix(victim.hotkey)):
        if parse_key(key) is not None:
            body = world.seaweed.admin.get_object(Bucket=world.bucket_name, Key=key)["Body"].read()
            copied[miner_prefix(copier.hotkey) + key.split("/", 1)[1]] = body
    time.sleep(1.1)  # S3 records LastModified in whole seconds: the copies are visibly later
    disable_progress_bars()  # the demo prints its own tables
    api = HfApi(endpoint=world.hub.url, token=world.hf_tokens[copier.hotkey])
    repo = repo_id_for(world.hf_namespace, HF_PREFIX, copier.hotkey)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    operations = []
    for backend in ("s3", "huggingface"):
        files = dict(copied)
        key, data = signed_manifest(files, copier.hotkey, copier.wallet, backend, seq=int(time.time() * 1000))
        files[key] = data
        for name, body in files.items():
            if backend == "s3":
                world.seaweed.admin.put_object(Bucket=world.bucket_name, Key=name, Body=body,
                                               Metadata={"sha256": hashlib.sha256(body).hexdigest()})
            else:
                operations.append(CommitOperationAdd(name, body))
    api.create_commit(repo, operations, commit_message="my data, honestly", repo_type="dataset")
    uris = sorted(uri for body in copied.values()
                  for uri in pq.ParquetFile(io.BytesIO(body)).read(columns=["uri"]).column("uri").to_pylist())
    return uris[:: max(1, len(uris) // 20)][:20]


def run_cli(world: LocalSubnet, *args: str) -> tuple[int, str]:
    """A ``storage-core`` command as the validator."""
    assert world.validator is not None
    result = CliRunner().invoke(build_cli(), [*args, *world.node_flags("validator", world.root / "validator-cli")],
                                env={"HF_TOKEN": world.hf_tokens[world.validator.hotkey]}, catch_exceptions=False)
    return result.exit_code, result.output


def audit(world: LocalSubnet, copies_file: Path) -> dict[str, Any]:
    code, output = run_cli(world, "audit", "--json", "--copies-out", str(copies_file))
    report = json.loads(output)
    report["exit_code"] = code
    return report
