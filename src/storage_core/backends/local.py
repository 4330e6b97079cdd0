"""The reference backend ``local``: a directory with the same object layout as S3.

It ships with the core, passes the conformance kit, and serves miners for dry runs
(``backends.local.options.root`` in the config).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Iterator

from storage_core import __version__
from storage_core.chain.keys import hotkey_address
from storage_core.chunks import verify_batch
from storage_core.errors import BackendError
from storage_core.hookspecs import hookimpl
from storage_core.layout import key_for, miner_prefix
from storage_core.manifest.retention import superseded_manifests
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    HealthStatus,
    OptionSpec,
    StoredObject,
    StoredUsage,
    UploadBatch,
    UploadReceipt,
)
from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectTail

BACKEND_ID = "local"
log = logging.getLogger(__name__)


def root_of(context: BackendContext) -> Path:
    root = context.option("root")
    if not root:
        raise BackendError("backend 'local' needs the option 'root' (a directory)", retryable=False)
    return Path(root)


class LocalStore:
    """One miner's prefix of the directory, as the core's checks read it (every read counted)."""

    def __init__(self, root: Path, miner_hotkey: str) -> None:
        self.root = root
        self.prefix = miner_prefix(miner_hotkey)
        self.meter = Meter()

    def list_objects(self) -> Iterator[ListedObject]:
        directory = self.root / self.prefix
        self.meter.add(requests=1)
        for path in sorted(directory.rglob("*")) if directory.is_dir() else ():
            if path.is_file() and not path.name.startswith("."):
                status = path.stat()
                yield ListedObject(key=path.relative_to(self.root).as_posix(), size=status.st_size,
                                   stored_at=datetime.fromtimestamp(status.st_mtime, UTC))

    def _path(self, key: str) -> Path:
        path = self.root / key
        if not key.startswith(self.prefix) or ".." in key.split("/") or not path.is_file():
            raise ObjectError(key, "no such object")
        return path

    def read_tail(self, key: str, length: int) -> ObjectTail:
        path = self._path(key)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - length))
            data = handle.read(length)
        self.meter.add(requests=1, bytes_read=len(data))
        return ObjectTail(data=data, size=size)  # a directory records no checksum: the core hashes the file

    def read_range(self, key: str, start: int, end: int) -> bytes:
        with open(self._path(key), "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        self.meter.add(requests=1, bytes_read=len(data))
        return data

    def close(self) -> None:
        pass


@hookimpl
def storage_backends() -> list[BackendDescriptor]:
    """Describe the local-directory backend."""
    return [
        BackendDescriptor(
            id=BACKEND_ID,
            api_version=PLUGIN_API_VERSION,
            package="storage-core",
            version=__version__,
            capabilities={"upload", "validate", "health", "manifest"},
            options=(OptionSpec("root", required=True, description="directory that holds every miner's prefix"),),
            description="Reference backend: a local directory with the S3 key layout",
        )
    ]


@hookimpl
def storage_upload(context: BackendContext, batch: UploadBatch) -> UploadReceipt:
    """Copy each chunk under its content-addressed key; an identical existing file counts as stored."""
    verify_batch(batch)
    root = root_of(context)
    objects = []
    for staged in batch.files:
        key = key_for(batch.miner_hotkey, staged)
        target = root / key
        present = target.is_file() and target.stat().st_size == staged.size_bytes
        if not present:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(staged.path, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        objects.append(StoredObject(key=key, size_bytes=staged.size_bytes, sha256=staged.sha256, already_present=present))
    log.info("local: stored %d objects for %s under %s", len(objects), batch.miner_hotkey, root)
    return UploadReceipt(backend=BACKEND_ID, location=str(root), objects=tuple(objects))


@hookimpl
def storage_publish_manifest(context: BackendContext, miner_hotkey: str, key: str, data: bytes) -> StoredObject:
    """Write a round manifest under the miner's prefix (atomically, like a chunk), deleting the miner's superseded
    ones (``storage_core.manifest.retention``); only the miner itself may."""
    acting = context.hotkey or (hotkey_address(context.signer) if context.signer is not None else None)
    if acting != miner_hotkey:
        raise BackendError(f"{acting} cannot store a manifest for {miner_hotkey}", retryable=False)
    if not key.startswith(miner_prefix(miner_hotkey)) or ".." in key.split("/"):
        raise BackendError(f"manifest key {key!r} is outside {miner_prefix(miner_hotkey)}", retryable=False)
    target = root_of(context) / key
    target.parent.mkdir(parents=True, exist_ok=True)
    held = [f"{miner_prefix(miner_hotkey)}manifests/{path.name}" for path in target.parent.glob("*.manifest")]
    for old in superseded_manifests((other for other in held if other != key), miner_hotkey):
        (root_of(context) / old).unlink(missing_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return StoredObject(key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


@hookimpl
def storage_reader(context: BackendContext, miner_hotkey: str) -> LocalStore:
    """The miner's prefix of the directory, for the core's checks."""
    return LocalStore(root_of(context), miner_hotkey)


@hookimpl
def storage_health(context: BackendContext) -> HealthStatus:
    """Healthy when the root directory exists (or can be created) and is writable."""
    try:
        root = root_of(context)
        root.mkdir(parents=True, exist_ok=True)
    except (BackendError, OSError) as error:
        return HealthStatus(backend=BACKEND_ID, ok=False, detail=str(error))
    writable = os.access(root, os.W_OK)
    return HealthStatus(backend=BACKEND_ID, ok=writable, detail=str(root) if writable else f"{root} is not writable")


@hookimpl
def storage_usage(context: BackendContext, miner_hotkey: str) -> StoredUsage:
    """Count the miner's parquet files and their bytes."""
    files = list((root_of(context) / miner_prefix(miner_hotkey)).rglob("*.parquet"))
    return StoredUsage(backend=BACKEND_ID, miner_hotkey=miner_hotkey, objects=len(files),
                       bytes=sum(f.stat().st_size for f in files))
