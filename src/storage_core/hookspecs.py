"""The hook specifications every storage backend plugin implements (pluggy project ``storage_core``).

A plugin module implements any subset of these with ``@storage_core.hookimpl`` and may accept
fewer arguments than a spec declares (pluggy passes only the ones it names), so specs can grow
without breaking plugins. The dispatcher calls a backend's hooks only through the plugin that
registered that backend's id, so one plugin's failure never reaches another.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pluggy

from storage_core.values import (
    BackendContext,
    BackendDescriptor,
    HealthStatus,
    StoredObject,
    StoredUsage,
    UploadBatch,
    UploadReceipt,
)
from storage_core.verify.store import ObjectStore

PROJECT_NAME = "storage_core"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def storage_backends() -> Iterable[BackendDescriptor]:
    """Return the descriptors of the backends this plugin provides."""


@hookspec
def storage_upload(context: BackendContext, batch: UploadBatch) -> UploadReceipt:
    """Store every file of ``batch`` for ``batch.miner_hotkey`` and return a receipt per object.

    The dispatcher passes the backend's ``context`` (options from the config, the miner's signer) and
    a batch of verified, content-addressed parquet chunks. Storing a file that is already there is a
    success (``already_present=True``). Raise ``InvalidBatchError`` for a malformed batch and
    ``BackendError`` for a failure; the dispatcher turns either into this backend's outcome.
    """


@hookspec
def storage_reader(context: BackendContext, miner_hotkey: str) -> ObjectStore:
    """Open ``miner_hotkey``'s objects on this backend for reading: a listing and raw byte ranges.

    The core decides what the objects prove (:mod:`storage_core.verify`): names, checksums, footers,
    schema, rows. The store raises ``ObjectError`` for a problem of one object (the miner's fault) and
    anything else when the backend itself fails (the dispatcher reports "could not validate").
    """


@hookspec
def storage_publish_manifest(context: BackendContext, miner_hotkey: str, key: str, data: bytes) -> StoredObject:
    """Optionally store a miner's signed round manifest: ``data`` under ``key`` (``layout.manifest_key``).

    Called after the round's chunks are acknowledged; the core builds, signs and chains the manifest
    (:mod:`storage_core.manifest`), the backend only stores the bytes. A backend without this hook is
    checked by listing (slower) and reported as having no manifest.
    """


@hookspec
def storage_health(context: BackendContext) -> HealthStatus:
    """Optionally check that the backend is reachable with ``context``'s options."""


@hookspec
def storage_usage(context: BackendContext, miner_hotkey: str) -> StoredUsage:
    """Optionally report how many objects and bytes the backend holds for ``miner_hotkey``, by listing only."""


@hookspec
def storage_register_commands(cli: Any) -> None:
    """Add subcommands to the ``storage-core`` command group ``cli`` (a ``click.Group``)."""
