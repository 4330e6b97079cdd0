"""Plugin loading: lazy, isolated, allow/deny lists, duplicate ids, API versions, strict mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from storage_core.errors import PluginError, UnknownBackendError
from storage_core.plugins import DISABLED, DISCOVERED, FAILED, LOADED, PluginRegistry
from storage_core.values import PLUGIN_API_VERSION
from storage_core.testing.packages import backend_module_source, entry_points_under, write_distribution


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of throw-away distributions, importable for the duration of one test."""
    root = tmp_path / "site"
    write_distribution(root, "good-backend", "1.0", {"good_mod": backend_module_source("good", "good-backend")},
                       {"good": "good_mod"})
    write_distribution(root, "broken-backend", "0.3", {"broken_mod": "raise RuntimeError('boom at import')"},
                       {"broken": "broken_mod"})
    write_distribution(root, "future-backend", "2.0", {"future_mod": backend_module_source("future", "future-backend", PLUGIN_API_VERSION + 1)},
                       {"future": "future_mod"})
    write_distribution(root, "dup-one", "1.0", {"dup_one": backend_module_source("dup", "dup-one")}, {"dup": "dup_one"})
    write_distribution(root, "dup-two", "1.0", {"dup_two": backend_module_source("dup", "dup-two")}, {"dup": "dup_two"})
    write_distribution(root, "liar-backend", "1.0", {"liar_mod": backend_module_source("other", "liar-backend")},
                       {"liar": "liar_mod"})
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("good_mod", "broken_mod", "future_mod", "dup_one", "dup_two", "liar_mod"):
        sys.modules.pop(name, None)


def registry(site: Path, **env: str) -> PluginRegistry:
    return PluginRegistry(points=entry_points_under(site), environ=env)


def test_entry_points_are_listed_without_importing(site: Path) -> None:
    reg = registry(site)
    assert {r.name: r.status for r in reg.records()}["good"] == DISCOVERED
    assert "good_mod" not in sys.modules
    assert reg.load("good").status == LOADED
    assert "good_mod" in sys.modules
    assert "broken_mod" not in sys.modules  # loading one never imports the others


def test_failures_are_isolated_and_explained(site: Path) -> None:
    records = {r.name: r for r in registry(site).load_all()}
    assert records["good"].status == LOADED
    assert records["good"].package == "good-backend" and records["good"].version == "1.0"
    assert records["good"].hooks == ("storage_backends", "storage_reader", "storage_upload")
    assert records["broken"].status == FAILED and "boom at import" in records["broken"].reason
    assert records["future"].status == FAILED and f"plugin API version {PLUGIN_API_VERSION + 1}" in records["future"].reason
    assert records["dup"].status == FAILED
    assert "dup-one" in records["dup"].reason and "dup-two" in records["dup"].reason
    assert records["liar"].status == FAILED and "'other'" in records["liar"].reason


def test_strict_mode_makes_failures_fatal(site: Path) -> None:
    with pytest.raises(PluginError, match="dup-one and dup-two"):
        registry(site, STORAGE_CORE_STRICT_PLUGINS="1")
    write_root = site.parent / "strict"
    write_distribution(write_root, "broken2", "1", {"broken2_mod": "import nonexistent_module_xyz"}, {"b2": "broken2_mod"})
    sys.path.insert(0, str(write_root))
    try:
        reg = PluginRegistry(points=entry_points_under(write_root), environ={"STORAGE_CORE_STRICT_PLUGINS": "1"})
        with pytest.raises(PluginError, match="nonexistent_module_xyz"):
            reg.load("b2")
    finally:
        sys.path.remove(str(write_root))


def test_allow_and_deny_lists(site: Path) -> None:
    allowed = {r.name: r.status for r in registry(site, STORAGE_CORE_LOAD_PLUGINS="good").load_all()}
    assert allowed["good"] == LOADED and allowed["broken"] == DISABLED and allowed["future"] == DISABLED
    denied = {r.name: r for r in registry(site, STORAGE_CORE_DISABLE_PLUGINS="good,broken").load_all()}
    assert denied["good"].status == DISABLED and "STORAGE_CORE_DISABLE_PLUGINS" in denied["good"].reason
    assert denied["future"].status == FAILED


def test_calls_reach_only_the_named_backend(site: Path, tmp_path: Path, miner_keys) -> None:
    from storage_core.testing.data import make_batch, uris_of
    from storage_core.values import BackendContext
    from storage_core.verify import check_claims

    reg = registry(site)
    reg.load_all()
    batch = make_batch(tmp_path / "b", miner_keys[0].ss58_address, rows=20)
    receipt = reg.call("good", "storage_upload", context=BackendContext(backend_id="good"), batch=batch)
    assert receipt.backend == "good"
    store = reg.call("good", "storage_reader", context=BackendContext(backend_id="good"),
                     miner_hotkey=batch.miner_hotkey)
    assert check_claims(store, "good", batch.miner_hotkey, uris_of(batch)).found == frozenset(uris_of(batch))
    with pytest.raises(UnknownBackendError, match="unknown backend 'broken'"):
        reg.call("broken", "storage_upload", batch=batch)
    with pytest.raises(UnknownBackendError, match="'nope'"):
        reg.descriptor("nope")


def test_in_process_registration_refuses_a_taken_id(site: Path) -> None:
    import good_mod  # noqa: F401 - importable through the fixture's path

    reg = registry(site)
    with pytest.raises(PluginError, match="already provided"):
        reg.register("good", object())


def test_installed_plugins_load(tmp_path: Path) -> None:
    """The real environment: the core's local backend and both shipped plugins load."""
    records = {r.name: r for r in PluginRegistry(environ={}).load_all()}
    for name in ("local", "s3", "huggingface"):
        assert records[name].status == LOADED, records[name].reason
    assert records["local"].package == "storage-core"


def _echo_plugin(backend_id: str, seen: list[tuple[str, object]]) -> object:
    """An in-process plugin recording which backend's options each upload received."""
    from storage_core import BackendDescriptor, UploadReceipt, hookimpl

    class Echo:
        @hookimpl
        def storage_backends(self):
            return [BackendDescriptor(id=backend_id, api_version=PLUGIN_API_VERSION, package=backend_id,
                                      version="1", capabilities={"upload", "validate", "health"})]

        @hookimpl
        def storage_upload(self, context, batch):
            seen.append((backend_id, context.option("name")))
            return UploadReceipt(backend=backend_id, location="memory", objects=[])

    return Echo()


def test_a_plugin_loaded_later_never_receives_another_backends_call(site: Path, tmp_path: Path, miner_keys) -> None:
    """Bug 1: a call made before another plugin loads must still reach exactly one implementation after."""
    from storage_core.testing.data import make_batch
    from storage_core.values import BackendContext

    seen: list[tuple[str, object]] = []
    reg = registry(site)
    reg.register("first", _echo_plugin("first", seen))
    batch = make_batch(tmp_path / "b", miner_keys[0].ss58_address, rows=5)
    reg.call("first", "storage_upload", context=BackendContext("first", {"name": "first"}), batch=batch)
    reg.register("second", _echo_plugin("second", seen))  # the owner adds a backend; the node loads its plugin
    reg.load("good")
    for name in ("first", "second", "first"):
        receipt = reg.call(name, "storage_upload", context=BackendContext(name, {"name": name}), batch=batch)
        assert receipt.backend == name
    assert seen == [("first", "first"), ("first", "first"), ("second", "second"), ("first", "first")]


def test_a_misspelt_hook_fails_loading(site: Path) -> None:
    write_distribution(site, "typo-backend", "1.0", {"typo_mod": backend_module_source(
        "typo", "typo-backend", extra="\n        @hookimpl\n        def storage_uplod(batch):\n            return None\n")},
        {"typo": "typo_mod"})
    try:
        reg = registry(site)
        record = reg.load("typo")
        assert record.status == FAILED and "storage_uplod" in (record.reason or "")
        assert reg.load("good").status == LOADED  # the others still load
    finally:
        sys.modules.pop("typo_mod", None)


def test_capabilities_come_from_the_hooks_implemented(site: Path) -> None:
    """A plugin declaring "health" without storage_health is not health-capable; "validate" means storage_reader."""
    reg = registry(site)
    seen: list[tuple[str, object]] = []
    reg.register("echo", _echo_plugin("echo", seen))  # declares upload, validate, health; implements only upload
    assert reg.record("echo").capabilities == {"upload"}
    assert reg.capable("echo", "upload") and not reg.capable("echo", "validate")
    assert reg.load("good").capabilities == {"upload", "validate"}
