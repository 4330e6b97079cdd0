"""The conformance kit itself: it runs through the production registry and fails a backend that skips checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_core.backends import local
from storage_core.hookspecs import hookimpl
from storage_core.layout import parse_key
from storage_core.testing.conformance import BackendConformance, BackendHarness, ConformanceTarget
from storage_core.values import PLUGIN_API_VERSION, BackendDescriptor
from storage_core.verify import ListedObject


class NameTrustingStore(local.LocalStore):
    """A store that vouches for every object's name as its checksum (as if it had verified the bytes)."""

    def list_objects(self) -> Iterator[ListedObject]:
        for listed in super().list_objects():
            name = parse_key(listed.key)
            yield ListedObject(listed.key, listed.size, sha256=(name.name_hash + "0" * 32) if name else None)


class NameTrustingBackend:
    @hookimpl
    def storage_backends(self) -> list[BackendDescriptor]:
        return [BackendDescriptor(id="lax", api_version=PLUGIN_API_VERSION, package="lax", version="0",
                                  capabilities={"upload", "validate"})]

    @hookimpl
    def storage_upload(self, context, batch):
        return local.storage_upload(context, batch)

    @hookimpl
    def storage_reader(self, context, miner_hotkey):
        return NameTrustingStore(local.root_of(context), miner_hotkey)


def _target(root: Path, plugin: object, backend_id: str, miner_keys, validator_key) -> ConformanceTarget:
    from storage_core.values import BackendContext

    def put_raw(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return ConformanceTarget(backend_id=backend_id, plugin=plugin, miners=(miner_keys[0], miner_keys[1]),
                             validator=validator_key, put_raw=put_raw,
                             context_for=lambda signer: BackendContext(backend_id=backend_id,
                                                                       options={"root": str(root)}))


def test_the_kit_fails_a_store_that_vouches_for_names(tmp_path: Path, miner_keys, validator_key) -> None:
    target = _target(tmp_path / "lax", NameTrustingBackend(), "lax", miner_keys, validator_key)
    harness = BackendHarness(target)
    kit = BackendConformance()
    with pytest.raises(AssertionError):
        kit.test_integrity_name_is_not_the_content_hash(harness, target.put_raw)


def test_the_same_integrity_test_passes_on_the_reference_backend(tmp_path: Path, miner_keys, validator_key) -> None:
    target = _target(tmp_path / "local", local, "local", miner_keys, validator_key)
    BackendConformance().test_integrity_name_is_not_the_content_hash(BackendHarness(target), target.put_raw)


def test_the_harness_goes_through_the_production_registry(tmp_path: Path, miner_keys, validator_key) -> None:
    harness = BackendHarness(_target(tmp_path / "local", local, "local", miner_keys, validator_key))
    assert harness.registry.record("local").status == "loaded"
    assert harness.dispatcher.validation_backends(miner_keys[0].ss58_address) == ("local",)


def test_a_plugin_the_registry_refuses_fails_the_harness(miner_keys, validator_key, tmp_path: Path) -> None:
    class WrongVersion(NameTrustingBackend):
        @hookimpl
        def storage_backends(self) -> list[BackendDescriptor]:
            return [BackendDescriptor(id="lax", api_version=PLUGIN_API_VERSION + 1, package="lax", version="0",
                                      capabilities={"upload", "validate"})]

    with pytest.raises(AssertionError, match="plugin API version"):
        BackendHarness(_target(tmp_path, WrongVersion(), "lax", miner_keys, validator_key))
