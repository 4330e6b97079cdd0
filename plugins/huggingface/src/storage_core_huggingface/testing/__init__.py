"""Testing helpers of the HuggingFace backend: a local Hub-compatible development server."""

from storage_core_huggingface.testing.hub_server import (
    DevHub,
    HubStats,
    RunningHub,
    TokenGrant,
    create_app,
    start_hub,
)

__all__ = ["DevHub", "HubStats", "RunningHub", "TokenGrant", "create_app", "start_hub"]
