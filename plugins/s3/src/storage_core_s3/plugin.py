"""The S3 backend's hook implementations (registered as entry point ``s3``)."""

from __future__ import annotations

from importlib.metadata import version

from storage_core import PLUGIN_API_VERSION, BackendDescriptor, OptionSpec, hookimpl

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
            capabilities={"upload", "validate", "health"},
            options=(
                OptionSpec("bucket", required=True, description="bucket that holds every miner's prefix"),
                OptionSpec("grant_url", required=True, description="base URL of the grant service"),
                OptionSpec("region", default="us-east-1", description="S3 region"),
            ),
            description="S3-compatible object storage through presigned grants",
        )
    ]
