"""Round manifests on the Hub: one commit adding the signed manifest at its layout path in the miner's repo.

The core builds, signs and names the manifest (``layout.manifest_key``); this module only commits the bytes,
at the path ``key`` of the miner's repo (derived from the hotkey, as the uploader derives it). The Hub
records the commit's time, which a validator reads back with ``HfStore.list_objects_timed``. A manifest
already in the repo with the same content is a success (``already_present``) and makes no commit. The
commit also deletes the miner's superseded manifests (``storage_core.manifest.retention``). Hub calls
go through the uploader's back-off (429 honours ``Retry-After``); a retried commit lists the repo first, so
a commit whose answer was lost is never made twice.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils.sha import git_hash as git_blob_oid

from storage_core.backoff import Backoff
from storage_core.chain.keys import hotkey_address
from storage_core.errors import BackendError
from storage_core.layout import NAME_HASH_CHARS, parse_manifest_key
from storage_core.manifest.retention import superseded_manifests
from storage_core.values import BackendContext, StoredObject
from storage_core_huggingface.client import hf_api
from storage_core_huggingface.identity import repo_id_for
from storage_core_huggingface.options import HfOptions
from storage_core_huggingface.uploader import backend_error, backoff_for, remote_files

logger = logging.getLogger(__name__)


def _holds(entry: Any, data: bytes, sha256: str) -> bool:
    """Whether a listed file holds exactly ``data`` (its LFS sha256, or its git blob id for a regular file)."""
    if entry is None or getattr(entry, "size", None) != len(data):
        return False
    lfs = getattr(entry, "lfs", None)
    if lfs is not None:
        return getattr(lfs, "sha256", None) == sha256
    return getattr(entry, "blob_id", None) == git_blob_oid(data)


def check_manifest(signer: Any, miner_hotkey: str, key: str, data: bytes) -> tuple[int, str]:
    """(round number, sha256) of a manifest this signer may commit at ``key``; BackendError naming why not."""
    if signer is None:
        raise BackendError("huggingface: publishing a manifest needs the miner's signer (wallet or keypair)",
                           retryable=False)
    if hotkey_address(signer) != miner_hotkey:
        raise BackendError(f"huggingface: signer {hotkey_address(signer)} cannot publish for miner {miner_hotkey}",
                           retryable=False)
    name = parse_manifest_key(key)
    if name is None or name.hotkey != miner_hotkey:
        raise BackendError(f"huggingface: {key!r} is not a manifest key of {miner_hotkey}", retryable=False)
    sha256 = hashlib.sha256(data).hexdigest()
    if name.name_hash != sha256[:NAME_HASH_CHARS]:
        raise BackendError(f"huggingface: manifest key {key!r} does not name these bytes "
                           f"(sha256 {sha256[:NAME_HASH_CHARS]}...)", retryable=False)
    return name.seq, sha256


def publish_manifest(context: BackendContext, miner_hotkey: str, key: str, data: bytes,
                     backoff: Backoff | None = None) -> StoredObject:
    """Commit ``data`` at path ``key`` of the miner's repo (one commit; none when it is already there)."""
    seq, sha256 = check_manifest(context.signer, miner_hotkey, key, data)
    options = HfOptions.from_mapping(context.options)
    backoff = backoff or backoff_for(options)
    repo_id = repo_id_for(options.namespace, options.repo_prefix, miner_hotkey)
    api = hf_api(options)
    try:
        backoff.call(f"create {repo_id}", lambda: api.create_repo(
            repo_id, repo_type="dataset", private=options.private, exist_ok=True))
        listing: dict[str, Any] | None = remote_files(api, repo_id, backoff)
    except (HfHubHTTPError, OSError) as error:
        raise backend_error("preparing repo", repo_id, error) from error
    present = _holds((listing or {}).get(key), data, sha256)

    def commit_missing() -> str | None:
        """Commit the manifest unless the repo holds it (e.g. an earlier try landed); its commit id or None."""
        nonlocal listing
        current = listing if listing is not None else remote_files(api, repo_id, backoff)
        listing = None  # a retry lists again: a commit whose answer was lost must not be repeated
        if _holds(current.get(key), data, sha256):
            return None
        operations: list[Any] = [CommitOperationAdd(path_in_repo=key, path_or_fileobj=data)]
        # the miner's superseded manifests go in the same commit: a revision never lacks the latest's previous
        operations += [CommitOperationDelete(path_in_repo=old)
                       for old in superseded_manifests((path for path in current if path != key), miner_hotkey)]
        info = api.create_commit(repo_id, operations, commit_message=f"storage-core manifest of round {seq}",
                                 repo_type="dataset")
        logger.info("huggingface: committed manifest %s (%d bytes) to %s at %s", key, len(data), repo_id, info.oid)
        return str(info.oid)

    try:
        revision = None if present else backoff.call(f"commit to {repo_id}", commit_missing)
    except (HfHubHTTPError, OSError) as error:
        raise backend_error("committing to", repo_id, error) from error
    except RuntimeError as error:  # the client wraps failed LFS transfers in RuntimeError
        raise BackendError(f"huggingface: uploading to {repo_id} failed: {error}", retryable=True) from error
    return StoredObject(key=key, size_bytes=len(data), sha256=sha256, etag=sha256, already_present=revision is None)


__all__ = ["check_manifest", "publish_manifest"]
