"""Make throw-away plugin distributions for tests: real dist-info metadata with entry points."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint, distributions
from pathlib import Path

from storage_core.plugins import ENTRY_POINT_GROUP
from storage_core.values import PLUGIN_API_VERSION


def write_distribution(root: Path, package: str, version: str, modules: dict[str, str], backends: dict[str, str]) -> None:
    """Write modules and a ``{package}-{version}.dist-info`` declaring ``backends`` (id -> module) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {module}" for name, module in backends.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def entry_points_under(root: Path) -> list[EntryPoint]:
    """The backend entry points of every distribution found under ``root`` (with their ``dist`` set)."""
    return [
        point
        for dist in distributions(path=[str(root)])
        for point in dist.entry_points
        if point.group == ENTRY_POINT_GROUP
    ]


def backend_module_source(backend_id: str, package: str, api_version: int = PLUGIN_API_VERSION,
                          extra: str = "") -> str:
    """Source of a minimal in-memory backend module (a dict of stored objects by key)."""
    return f'''
        from storage_core import hookimpl, BackendDescriptor, UploadReceipt, StoredObject
        from storage_core.layout import key_for
        from storage_core.testing.memory_store import MemoryStore

        STORED = {{}}

        @hookimpl
        def storage_backends():
            return [BackendDescriptor(id={backend_id!r}, api_version={api_version}, package={package!r},
                                      version="1.0", capabilities={{"upload", "validate"}})]

        @hookimpl
        def storage_upload(batch):
            STORED.update({{key_for(batch.miner_hotkey, f): f.path.read_bytes() for f in batch.files}})
            return UploadReceipt(backend={backend_id!r}, location="memory",
                                 objects=[StoredObject(key=f.sha256, size_bytes=f.size_bytes, sha256=f.sha256)
                                          for f in batch.files])

        @hookimpl
        def storage_reader(miner_hotkey):
            return MemoryStore(STORED, miner_hotkey)
        {extra}
    '''
