"""The S3 backend's hook implementations (registered as entry point ``s3``).

Miners upload through presigned grants from the grant service and never hold bucket credentials;
validators read raw byte ranges through read grants for the core's checks. See plugins/s3/README.md.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from storage_core import PLUGIN_API_VERSION, BackendDescriptor, hookimpl
from storage_core.chunks import verify_batch
from storage_core.values import BackendContext, HealthStatus, StoredObject, StoredUsage, UploadBatch, UploadReceipt
from storage_core_s3.options import OPTION_SPECS, S3Options

if TYPE_CHECKING:
    from storage_core_s3.checker import S3Store

BACKEND_ID = "s3"


@hookimpl
def storage_backends() -> list[BackendDescriptor]:
    """Describe the S3 backend."""
    return [
        BackendDescriptor(
            id=BACKEND_ID,
            api_version=PLUGIN_API_VERSION,
            package="storage-core-s3",
            version=version("storage-core-s3"),
            capabilities={"upload", "validate", "health", "manifest"},
            options=OPTION_SPECS,
            description="S3-compatible object storage (AWS, R2, Spaces, MinIO, SeaweedFS) through presigned grants",
        )
    ]


@hookimpl
def storage_upload(context: BackendContext, batch: UploadBatch) -> UploadReceipt:
    """Verify the batch, then upload each chunk through a grant signed with the miner's hotkey."""
    from storage_core_s3.uploader import Uploader

    verify_batch(batch)
    options = S3Options.from_context(context)
    with Uploader(options, context.signer) as uploader:
        return uploader.upload_batch(batch, verified=True)


@hookimpl
def storage_publish_manifest(context: BackendContext, miner_hotkey: str, key: str, data: bytes) -> StoredObject:
    """Store a signed round manifest through a manifest grant (the service builds the same key from the signer)."""
    from storage_core_s3.manifests import publish_manifest

    return publish_manifest(S3Options.from_context(context), context.signer, miner_hotkey, key, data)


@hookimpl
def storage_reader(context: BackendContext, miner_hotkey: str) -> S3Store:
    """The miner's prefix as an ObjectStore (read grants signed by the validator); it owns its HTTP client."""
    from storage_core_s3.checker import S3Store

    return S3Store(S3Options.from_context(context), context.signer, miner_hotkey)


@hookimpl
def storage_usage(context: BackendContext, miner_hotkey: str) -> StoredUsage:
    """Count the miner's objects and bytes from listing pages (read grants signed by the validator)."""
    from storage_core_s3.checker import S3Store

    with S3Store(S3Options.from_context(context), context.signer, miner_hotkey) as store:
        objects, size = store.usage()
    return StoredUsage(backend=BACKEND_ID, miner_hotkey=miner_hotkey, objects=objects, bytes=size)


@hookimpl
def storage_health(context: BackendContext) -> HealthStatus:
    """Healthy when the grant service answers and serves the configured bucket."""
    from storage_core_s3.client import GrantClient, make_http_client

    try:
        options = S3Options.from_context(context)
        with make_http_client(options) as http:
            client = GrantClient(options, context.signer, http)
            client.health()
            info = client.info()
    except Exception as error:  # any failure is "unhealthy", with the reason
        return HealthStatus(backend=BACKEND_ID, ok=False, detail=str(error))
    if info.get("bucket") != options.bucket:
        return HealthStatus(
            backend=BACKEND_ID, ok=False,
            detail=f"the grant service at {options.grant_url} serves bucket {info.get('bucket')!r}, not {options.bucket!r}",
        )
    return HealthStatus(backend=BACKEND_ID, ok=True, detail=f"{options.grant_url} -> s3://{options.bucket}")


@hookimpl
def storage_register_commands(cli: Any) -> None:
    """Add ``storage-core s3 serve``."""
    from storage_core_s3.cli import register

    register(cli)
