"""Publishing one batch to the miner's dataset repo: one commit per round, never one per file."""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from storage_core.backoff import Backoff
from storage_core.chain.keys import hotkey_address
from storage_core.chunks import verify_batch
from storage_core.errors import BackendError
from storage_core.layout import key_for
from storage_core.values import BackendContext, StoredObject, UploadBatch, UploadReceipt
from storage_core_huggingface.client import hf_api
from storage_core_huggingface.identity import repo_id_for
from storage_core_huggingface.options import HfOptions
from storage_core_huggingface.retry import is_retryable, status_of

logger = logging.getLogger(__name__)
BACKEND_ID = "huggingface"
T = TypeVar("T")


class Retrying(Protocol):
    """What the Hub calls need of a back-off: ``call(what, function)``, as ``storage_core.backoff.Backoff`` has."""

    def call(self, what: str, function: Callable[[], T]) -> T: ...


def backoff_for(options: HfOptions) -> Backoff:
    """The core's back-off (full jitter, Retry-After honoured up to ``backoff_max_s``) with the Hub's transient
    errors: 429, 5xx and network errors."""
    return Backoff(attempts=options.max_attempts, base=options.backoff_base_s, cap=options.backoff_max_s,
                   max_retry_after=options.backoff_max_s, retryable=is_retryable)


def backend_error(action: str, repo_id: str, error: Exception) -> BackendError:
    """A BackendError naming the action, the repo and the Hub's answer (never the token)."""
    status = status_of(error)
    if status in (401, 403):
        hint = "the Hub refused the token: it is invalid or has no write access to this repo"
    elif isinstance(error, RepositoryNotFoundError):
        hint = "the repo does not exist or the token cannot see it"
    else:
        hint = str(error).splitlines()[0] if str(error) else type(error).__name__
    answer = f"HTTP {status}" if status is not None else type(error).__name__
    return BackendError(f"huggingface: {action} {repo_id} failed ({answer}): {hint}", retryable=is_retryable(error))


def remote_files(api: HfApi, repo_id: str, backoff: Retrying) -> dict[str, Any]:
    """path -> RepoFile for every file in the repo (one paginated recursive listing)."""

    def listing() -> dict[str, Any]:
        try:
            entries = api.list_repo_tree(repo_id, recursive=True, repo_type="dataset")
            return {entry.path: entry for entry in entries if hasattr(entry, "size")}
        except EntryNotFoundError:
            return {}

    return backoff.call(f"list {repo_id}", listing)


def _sha256_of(entry: Any) -> str | None:
    lfs = getattr(entry, "lfs", None)
    return getattr(lfs, "sha256", None) if lfs is not None else None


def _add_verified(path_in_repo: str, local: Path, sha256: str) -> CommitOperationAdd:
    """An add operation that reuses the sha256 verify_batch just checked (the client would hash the file again)."""
    operation = CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(local))
    operation.upload_info.sha256 = bytes.fromhex(sha256)
    return operation


def upload(context: BackendContext, batch: UploadBatch, backoff: Backoff | None = None) -> UploadReceipt:
    """Store every file of ``batch`` in the miner's repo in one commit and return the receipt."""
    verify_batch(batch)
    options = HfOptions.from_mapping(context.options)
    # the Hub's errors decide what is retried, whoever chose the waits
    backoff = attrs.evolve(backoff, retryable=is_retryable) if backoff is not None else backoff_for(options)
    signer = context.signer
    if signer is None:
        raise BackendError("huggingface: uploading needs the miner's signer (wallet or keypair)", retryable=False)
    if hotkey_address(signer) != batch.miner_hotkey:
        raise BackendError(
            f"huggingface: signer {hotkey_address(signer)} cannot publish for miner {batch.miner_hotkey}",
            retryable=False,
        )
    repo_id = repo_id_for(options.namespace, options.repo_prefix, batch.miner_hotkey)
    api = hf_api(options)
    try:
        backoff.call(f"create {repo_id}", lambda: api.create_repo(
            repo_id, repo_type="dataset", private=options.private, exist_ok=True))
        before = remote_files(api, repo_id, backoff)
    except (HfHubHTTPError, OSError) as error:
        raise backend_error("preparing repo", repo_id, error) from error

    wanted = {key_for(batch.miner_hotkey, staged): staged for staged in batch.files}
    present = {path for path, staged in wanted.items() if _sha256_of(before.get(path)) == staged.sha256}
    listing: dict[str, Any] | None = before

    def commit_missing() -> str | None:
        """Commit what the repo still lacks; None when nothing is missing (e.g. an earlier try landed)."""
        nonlocal listing
        current = listing if listing is not None else remote_files(api, repo_id, backoff)
        listing = None  # a retry lists again: a commit whose answer was lost must not be repeated
        operations = [
            _add_verified(path, staged.path, staged.sha256)
            for path, staged in sorted(wanted.items())
            if _sha256_of(current.get(path)) != staged.sha256
        ]
        if not operations:
            return None
        message = f"storage-core round {batch.round_id or '-'}: {len(operations)} files"
        info = api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset")
        logger.info("huggingface: committed %d files to %s at %s", len(operations), repo_id, info.oid)
        return info.oid

    try:
        revision = backoff.call(f"commit to {repo_id}", commit_missing)
        if revision is None:
            revision = backoff.call(f"read {repo_id}", lambda: api.repo_info(repo_id, repo_type="dataset").sha)
    except (HfHubHTTPError, OSError) as error:
        raise backend_error("committing to", repo_id, error) from error
    except RuntimeError as error:  # the client wraps failed LFS transfers in RuntimeError
        raise BackendError(f"huggingface: uploading to {repo_id} failed: {error}", retryable=True) from error

    objects = [
        StoredObject(key=path, size_bytes=staged.size_bytes, sha256=staged.sha256, etag=staged.sha256,
                     already_present=path in present)
        for path, staged in wanted.items()
    ]
    return UploadReceipt(backend=BACKEND_ID, location=repo_id, objects=objects, revision=revision)


__all__ = ["BACKEND_ID", "remote_files", "upload"]
