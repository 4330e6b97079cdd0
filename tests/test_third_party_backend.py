"""A third-party backend package, installed for real, is listed, selected, used; a broken one is isolated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage_core.config import parse_config
from storage_core.dispatch import VALID, Dispatcher
from storage_core.plugins import PluginRegistry
from storage_core.testing.data import make_batch, uris_of
from storage_core.values import BackendContext

PACKAGES = ("sc-thirdparty-dirstore", "sc-thirdparty-broken")

DIRSTORE = '''
    """A third-party backend: one JSON file of URIs per miner in a directory."""
    import json
    from pathlib import Path

    from storage_core import (PLUGIN_API_VERSION, BackendDescriptor, OptionSpec, StoredObject, UploadReceipt,
                              ValidationResult, hookimpl)
    from storage_core.chunks import verify_batch
    from storage_core.testing.data import uris_of


    @hookimpl
    def storage_backends():
        return [BackendDescriptor(id="dirstore", api_version=PLUGIN_API_VERSION, package="sc-thirdparty-dirstore",
                                  version="0.0.1", capabilities={"upload", "validate"},
                                  options=[OptionSpec("root", required=True)])]


    @hookimpl
    def storage_upload(context, batch):
        verify_batch(batch)
        path = Path(context.options["root"]) / f"{batch.miner_hotkey}.json"
        held = set(json.loads(path.read_text())) if path.exists() else set()
        path.write_text(json.dumps(sorted(held | set(uris_of(batch)))))
        return UploadReceipt(backend="dirstore", location=str(path),
                             objects=[StoredObject(f.sha256, f.size_bytes, f.sha256) for f in batch.files])


    @hookimpl
    def storage_validate(context, miner_hotkey, uris):
        path = Path(context.options["root"]) / f"{miner_hotkey}.json"
        held = set(json.loads(path.read_text())) if path.exists() else set()
        return ValidationResult(backend="dirstore", miner_hotkey=miner_hotkey, found=[u for u in uris if u in held],
                                requests=1, bytes_read=path.stat().st_size if path.exists() else 0)
'''


def _package(root: Path, name: str, module: str, backend: str, source: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.1"
        dependencies = ["storage-core"]

        [project.entry-points."storage_core.backends"]
        {backend} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    (directory / f"{module}.py").write_text(textwrap.dedent(source))
    return directory


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("packages")
    good = _package(root, PACKAGES[0], "sc_thirdparty_dirstore", "dirstore", DIRSTORE)
    broken = _package(root, PACKAGES[1], "sc_thirdparty_broken", "brokenstore",
                      "raise ImportError('sc_thirdparty_broken needs a library that is not installed')\n")
    _pip("install", "--no-deps", "--no-build-isolation", str(good), str(broken))
    try:
        yield
    finally:
        _pip("uninstall", "-y", *PACKAGES)


def test_cli_lists_the_new_backend_and_the_broken_one(installed) -> None:
    run = subprocess.run([sys.executable, "-m", "storage_core", "plugins", "--json"], capture_output=True, text=True,
                         check=True)
    listing = {entry["id"]: entry for entry in json.loads(run.stdout)}
    assert listing["dirstore"]["loaded"] and listing["dirstore"]["package"] == PACKAGES[0]
    assert listing["dirstore"]["hooks"] == ["storage_backends", "storage_upload", "storage_validate"]
    assert listing["brokenstore"]["status"].startswith("failed: import failed")
    assert "needs a library" in listing["brokenstore"]["status"]
    assert listing["local"]["loaded"]  # the broken package breaks nothing else


def test_config_selects_it_and_the_dispatcher_uses_it(installed, tmp_path: Path, miner_keys) -> None:
    registry = PluginRegistry()
    config = parse_config({
        "backends": {"dirstore": {"enabled": True, "rollout_percent": 100, "options": {"root": str(tmp_path)}},
                     "brokenstore": {"enabled": True, "rollout_percent": 100}},
        "validation_policy": "any",
    })
    dispatcher = Dispatcher(registry, config, lambda b: BackendContext(backend_id=b, options=config.backends[b].options))
    batch = make_batch(tmp_path / "staging", miner_keys[0].ss58_address, rows=200)
    assert dispatcher.upload_backends(batch.miner_hotkey) == ("dirstore",)  # the broken one is not selectable
    outcomes = dispatcher.upload(batch)
    assert [(o.backend, o.status) for o in outcomes] == [("dirstore", "ok")]
    report = dispatcher.validate(batch.miner_hotkey, uris_of(batch)[:10] + ["https://x.com/never/status/1"])
    assert report.backends == ("dirstore",)
    assert report.count(VALID) == 10 and report.verdicts["https://x.com/never/status/1"] == "invalid"
