"""storage-core: the storage layer of Bittensor subnets, with backends as entry-point plugins."""

from storage_core.hookspecs import hookimpl
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    HealthStatus,
    IntegrityProblem,
    OptionSpec,
    StagedFile,
    StoredObject,
    StoredUsage,
    UploadBatch,
    UploadReceipt,
    ValidationResult,
)

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "BackendContext",
    "BackendDescriptor",
    "HealthStatus",
    "IntegrityProblem",
    "OptionSpec",
    "StagedFile",
    "StoredObject",
    "StoredUsage",
    "UploadBatch",
    "UploadReceipt",
    "ValidationResult",
    "__version__",
    "hookimpl",
]
