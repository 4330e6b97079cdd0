"""The HuggingFace backend's hook implementations (registered as entry point ``huggingface``)."""

from __future__ import annotations

from importlib.metadata import version

from huggingface_hub.errors import HfHubHTTPError

from storage_core import PLUGIN_API_VERSION, BackendDescriptor, HealthStatus, hookimpl
from storage_core.values import BackendContext, StoredObject, StoredUsage, UploadBatch, UploadReceipt
from storage_core_huggingface import checker, manifests, uploader
from storage_core_huggingface.client import hf_api
from storage_core_huggingface.options import OPTION_SPECS, HfOptions

BACKEND_ID = uploader.BACKEND_ID


@hookimpl
def storage_backends() -> list[BackendDescriptor]:
    """Describe the HuggingFace backend."""
    return [
        BackendDescriptor(
            id=BACKEND_ID,
            api_version=PLUGIN_API_VERSION,
            package="storage-core-huggingface",
            version=version("storage-core-huggingface"),
            capabilities={"upload", "validate", "health", "manifest"},
            options=OPTION_SPECS,
            description="One HuggingFace dataset repo per miner, derived from its hotkey",
        )
    ]


@hookimpl
def storage_upload(context: BackendContext, batch: UploadBatch) -> UploadReceipt:
    """Publish ``batch`` in one commit to the miner's repo."""
    return uploader.upload(context, batch)


@hookimpl
def storage_publish_manifest(context: BackendContext, miner_hotkey: str, key: str, data: bytes) -> StoredObject:
    """Commit a signed round manifest at path ``key`` of the miner's repo (one commit)."""
    return manifests.publish_manifest(context, miner_hotkey, key, data)


@hookimpl
def storage_reader(context: BackendContext, miner_hotkey: str) -> checker.HfStore:
    """The miner's repo (derived from its hotkey) for the core's checks: a listing and range reads."""
    return checker.HfStore(HfOptions.from_mapping(context.options), miner_hotkey)


@hookimpl
def storage_usage(context: BackendContext, miner_hotkey: str) -> StoredUsage:
    """Count the parquet files and bytes in the miner's repo from its tree listing."""
    objects, size = checker.usage(HfOptions.from_mapping(context.options), miner_hotkey)
    return StoredUsage(backend=BACKEND_ID, miner_hotkey=miner_hotkey, objects=objects, bytes=size)


@hookimpl
def storage_health(context: BackendContext) -> HealthStatus:
    """Reachable and, when a token is available, accepted by the Hub."""
    options = HfOptions.from_mapping(context.options)
    api = hf_api(options)
    try:
        user = api.whoami()["name"]
    except HfHubHTTPError as error:
        return HealthStatus(backend=BACKEND_ID, ok=False, detail=f"{options.endpoint}: {str(error).splitlines()[0]}")
    except Exception as error:  # no token saved, unreachable endpoint...: a health check reports, never raises
        return HealthStatus(backend=BACKEND_ID, ok=False, detail=f"{options.endpoint}: {type(error).__name__}: {error}")
    return HealthStatus(backend=BACKEND_ID, ok=True, detail=f"{options.endpoint} as {user}")
