"""The reference backend ``local``: a directory with the same object layout as S3.

It ships with the core, passes the conformance kit, and serves miners for dry runs
(``backends.local.options.root`` in the config).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from storage_core import __version__
from storage_core.chunks import verify_batch
from storage_core.errors import BackendError
from storage_core.hookspecs import hookimpl
from storage_core.layout import NAME_HASH_CHARS, key_for, miner_prefix
from storage_core.schema import schema_problem
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    HealthStatus,
    IntegrityProblem,
    OptionSpec,
    StoredObject,
    StoredUsage,
    UploadBatch,
    UploadReceipt,
    ValidationResult,
)

BACKEND_ID = "local"
log = logging.getLogger(__name__)


def _root(context: BackendContext) -> Path:
    root = context.option("root")
    if not root:
        raise BackendError("backend 'local' needs the option 'root' (a directory)", retryable=False)
    return Path(root)


class _CountingReader:
    """A read-only file wrapper that counts the bytes pyarrow actually reads."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.bytes_read = 0
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.bytes_read += len(data)
        self.reads += 1
        return data

    def __getattr__(self, name: str):  # seek, tell, closed, ... pass through
        return getattr(self._handle, name)


@hookimpl
def storage_backends() -> list[BackendDescriptor]:
    """Describe the local-directory backend."""
    return [
        BackendDescriptor(
            id=BACKEND_ID,
            api_version=PLUGIN_API_VERSION,
            package="storage-core",
            version=__version__,
            capabilities={"upload", "validate", "health"},
            options=(OptionSpec("root", required=True, description="directory that holds every miner's prefix"),),
            description="Reference backend: a local directory with the S3 key layout",
        )
    ]


@hookimpl
def storage_upload(context: BackendContext, batch: UploadBatch) -> UploadReceipt:
    """Copy each chunk under its content-addressed key; an identical existing file counts as stored."""
    verify_batch(batch)
    root = _root(context)
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
def storage_validate(context: BackendContext, miner_hotkey: str, uris: tuple[str, ...]) -> ValidationResult:
    """Read only the footer and ``uri`` column of each of the miner's files."""
    root = _root(context)
    wanted = set(uris)
    found: set[str] = set()
    problems: list[IntegrityProblem] = []
    requests = bytes_read = scanned = 0
    for path in sorted((root / miner_prefix(miner_hotkey)).rglob("*.parquet")):
        if not wanted - found:
            break
        key = path.relative_to(root).as_posix()
        scanned += 1
        with open(path, "rb") as handle:
            reader = _CountingReader(handle)
            try:
                parquet = pq.ParquetFile(reader)
                problem = schema_problem(parquet.schema_arrow)
                if problem is None and len(path.stem) != NAME_HASH_CHARS:
                    problem = f"name {path.name} is not a content address"
                if problem:
                    problems.append(IntegrityProblem(key=key, problem=problem))
                    continue
                column = parquet.read(columns=["uri"]).column("uri")
                found.update(wanted.intersection(column.to_pylist()))
            except (pa.ArrowException, OSError) as error:
                problems.append(IntegrityProblem(key=key, problem=f"unreadable parquet: {error}"))
            finally:
                requests += reader.reads
                bytes_read += reader.bytes_read
    return ValidationResult(
        backend=BACKEND_ID,
        miner_hotkey=miner_hotkey,
        found=frozenset(found),
        requests=requests,
        bytes_read=bytes_read,
        objects_scanned=scanned,
        problems=tuple(problems),
    )


@hookimpl
def storage_health(context: BackendContext) -> HealthStatus:
    """Healthy when the root directory exists (or can be created) and is writable."""
    try:
        root = _root(context)
        root.mkdir(parents=True, exist_ok=True)
    except (BackendError, OSError) as error:
        return HealthStatus(backend=BACKEND_ID, ok=False, detail=str(error))
    writable = os.access(root, os.W_OK)
    return HealthStatus(backend=BACKEND_ID, ok=writable, detail=str(root) if writable else f"{root} is not writable")


@hookimpl
def storage_usage(context: BackendContext, miner_hotkey: str) -> StoredUsage:
    """Count the miner's parquet files and their bytes."""
    files = list((_root(context) / miner_prefix(miner_hotkey)).rglob("*.parquet"))
    return StoredUsage(backend=BACKEND_ID, miner_hotkey=miner_hotkey, objects=len(files),
                       bytes=sum(f.stat().st_size for f in files))
