"""The HuggingFace backend's hook implementations (registered as entry point ``huggingface``)."""

from __future__ import annotations

from importlib.metadata import version

from storage_core import PLUGIN_API_VERSION, BackendDescriptor, OptionSpec, hookimpl

BACKEND_ID = "huggingface"


@hookimpl
def storage_backends() -> list[BackendDescriptor]:
    """Describe the HuggingFace backend."""
    return [
        BackendDescriptor(
            id=BACKEND_ID,
            api_version=PLUGIN_API_VERSION,
            package="storage-core-huggingface",
            version=version("storage-core-huggingface"),
            capabilities={"upload", "validate"},
            options=(
                OptionSpec("namespace", required=True, description="HF user or organisation that holds miner repos"),
                OptionSpec("endpoint", default="https://huggingface.co", description="Hub endpoint"),
            ),
            description="One HuggingFace dataset repo per miner",
        )
    ]
