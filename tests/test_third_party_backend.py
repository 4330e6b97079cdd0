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
    """A third-party backend: a directory of the miners' objects. It is transport only: the core checks."""
    import os
    import shutil
    from pathlib import Path

    from storage_core import PLUGIN_API_VERSION, BackendDescriptor, OptionSpec, StoredObject, UploadReceipt, hookimpl
    from storage_core.chunks import verify_batch
    from storage_core.layout import key_for, miner_prefix
    from storage_core.verify import ListedObject, Meter, ObjectError, ObjectTail


    @hookimpl
    def storage_backends():
        return [BackendDescriptor(id="dirstore", api_version=PLUGIN_API_VERSION, package="sc-thirdparty-dirstore",
                                  version="0.0.1", capabilities={"upload", "validate"},
                                  options=[OptionSpec("root", required=True)])]


    @hookimpl
    def storage_upload(context, batch):
        verify_batch(batch)
        root = Path(context.options["root"])
        for staged in batch.files:
            target = root / key_for(batch.miner_hotkey, staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged.path, target)
        return UploadReceipt(backend="dirstore", location=str(root),
                             objects=[StoredObject(key_for(batch.miner_hotkey, f), f.size_bytes, f.sha256)
                                      for f in batch.files])


    class DirStore:
        def __init__(self, root, miner_hotkey):
            self.root, self.prefix, self.meter = Path(root), miner_prefix(miner_hotkey), Meter()

        def list_objects(self):
            for path in sorted((self.root / self.prefix).rglob("*.parquet")):
                yield ListedObject(path.relative_to(self.root).as_posix(), path.stat().st_size)

        def read_range(self, key, start, end):
            if not (self.root / key).is_file():
                raise ObjectError(key, "gone")
            with open(self.root / key, "rb") as handle:
                handle.seek(start)
                data = handle.read(end - start)
            self.meter.add(requests=1, bytes_read=len(data))
            return data

        def read_tail(self, key, length):
            size = os.path.getsize(self.root / key)
            return ObjectTail(self.read_range(key, max(0, size - length), size), size)

        def close(self):
            pass


    @hookimpl
    def storage_reader(context, miner_hotkey):
        return DirStore(context.options["root"], miner_hotkey)
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
    assert listing["dirstore"]["hooks"] == ["storage_backends", "storage_reader", "storage_upload"]
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
    # the broken one stays selected: it is owed the data, and its failure shows (never a silent skip)
    assert dispatcher.upload_backends(batch.miner_hotkey) == ("brokenstore", "dirstore")
    outcomes = dispatcher.upload(batch)
    assert [(o.backend, o.status) for o in outcomes] == [("brokenstore", "failed"), ("dirstore", "ok")]
    report = dispatcher.validate(batch.miner_hotkey, uris_of(batch)[:10] + ["https://x.com/never/status/1"])
    assert report.backends == ("brokenstore", "dirstore")
    # found on dirstore: valid under "any"; found nowhere checkable: could not validate (brokenstore may hold it)
    assert report.count(VALID) == 10 and report.verdicts["https://x.com/never/status/1"] == "unknown"
