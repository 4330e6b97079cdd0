"""The round driven by the real Dispatcher and the real ``local`` backend plugin."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

import storage_core.backends.local as local_plugin
from storage_core import hookimpl
from storage_core.config import parse_config
from storage_core.dispatch import Dispatcher
from storage_core.export.round import run_upload_round
from storage_core.export.spool import Spool
from storage_core.plugins import PluginRegistry
from storage_core.testing.minerdb import create_miner_db
from storage_core.values import PLUGIN_API_VERSION, BackendContext, BackendDescriptor, StoredObject, UploadReceipt


class Flaky:
    """A second backend that can be switched off; it records which chunks it received."""

    def __init__(self) -> None:
        self.up = False
        self.received: set[str] = set()

    @hookimpl
    def storage_backends(self):
        return [BackendDescriptor(id="flaky", api_version=PLUGIN_API_VERSION, package="flaky", version="1",
                                  capabilities={"upload"})]

    @hookimpl
    def storage_upload(self, context, batch):
        if not self.up:
            raise ConnectionError("flaky is down")
        self.received.update(f.sha256 for f in batch.files)
        return UploadReceipt(backend="flaky", location="memory",
                             objects=[StoredObject(f.sha256, f.size_bytes, f.sha256) for f in batch.files])


def test_dispatcher_upload_is_the_publisher(tmp_path, miner_keys):
    hotkey = miner_keys[1].ss58_address
    flaky = Flaky()
    registry = PluginRegistry(points=[], environ={}, extra_plugins={"local": local_plugin, "flaky": flaky})
    config = parse_config({"backends": {"local": {"enabled": True, "rollout_percent": 100},
                                        "flaky": {"enabled": True, "rollout_percent": 100}}})
    root = tmp_path / "store"
    dispatcher = Dispatcher(registry, config, lambda b: BackendContext(backend_id=b, options={"root": str(root)}))
    selected = dispatcher.upload_backends(hotkey)
    assert set(selected) == {"local", "flaky"}
    summary = create_miner_db(tmp_path / "miner.sqlite", 800, seed=61)
    spool = Spool(tmp_path / "spool")

    first = run_upload_round(summary.path, spool, selected, dispatcher.upload, miner_hotkey=hotkey)
    assert first.backend("local").status == "ok" and first.backend("flaky").status == "failed"
    stored = Counter()
    for path in root.rglob("*.parquet"):
        stored.update(pq.ParquetFile(path).read(columns=["uri"]).column("uri").to_pylist())
    assert len(stored) == 800 and max(stored.values()) == 1
    owed = {f.sha256 for f in spool.ledger.chunks()}
    assert owed and spool.used_bytes() > 0

    flaky.up = True
    second = run_upload_round(summary.path, spool, selected, dispatcher.upload, miner_hotkey=hotkey)
    assert second.rows_exported == 0 and second.backend("flaky").files == len(owed)
    assert flaky.received == owed and spool.used_bytes() == 0
    spool.close()
