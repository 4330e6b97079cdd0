"""Pluggy and dispatcher overhead per batch, against calling the backend function directly.

The backend does nothing, so what is measured is the framework's own cost: the hook call through
pluggy (argument opt-in, subset caller), and the dispatcher's isolation (a worker thread with a time
limit per backend) around it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import best_of, result
from storage_core import PLUGIN_API_VERSION, BackendDescriptor, StoredObject, UploadReceipt, hookimpl
from storage_core.config import parse_config
from storage_core.dispatch import Dispatcher
from storage_core.plugins import PluginRegistry
from storage_core.testing.data import make_batch
from storage_core.values import BackendContext


class NullBackend:
    @hookimpl
    def storage_backends(self):
        return [BackendDescriptor(id="null", api_version=PLUGIN_API_VERSION, package="bench", version="0",
                                  capabilities={"upload"})]

    @hookimpl
    def storage_upload(self, context, batch):
        return UploadReceipt(backend="null", location="-",
                             objects=[StoredObject(f.sha256, f.size_bytes, f.sha256) for f in batch.files])


def run(quick: bool = False) -> list[dict]:
    calls = 2_000 if quick else 20_000
    backend = NullBackend()
    registry = PluginRegistry(points=[], environ={}, extra_plugins={"null": backend})
    config = parse_config({"backends": {"null": {"enabled": True, "rollout_percent": 100}}})
    context = BackendContext(backend_id="null")
    dispatcher = Dispatcher(registry, config, lambda b: context)
    with tempfile.TemporaryDirectory() as directory:
        batch = make_batch(Path(directory), "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", rows=10, chunks=4)

        def direct() -> None:
            for _ in range(calls):
                backend.storage_upload(context, batch)

        def through_pluggy() -> None:
            for _ in range(calls):
                registry.call("null", "storage_upload", context=context, batch=batch)

        def through_dispatcher() -> None:
            for _ in range(calls // 10):
                dispatcher.upload(batch)

        direct_us = best_of(5, direct) / calls * 1e6
        pluggy_us = best_of(5, through_pluggy) / calls * 1e6
        dispatch_us = best_of(5, through_dispatcher) / (calls // 10) * 1e6
    return [
        result("hook call through pluggy, per batch", pluggy_us, "us", "direct function call", direct_us, False),
        result("dispatcher upload (isolated thread), per batch", dispatch_us, "us", "direct function call", direct_us,
               False),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
