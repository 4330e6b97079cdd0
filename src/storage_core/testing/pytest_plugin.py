"""pytest plugin (entry point ``pytest11``): makes the conformance kit's helpers available to backend tests.

Backend packages import ``BackendConformance`` from ``storage_core.testing.conformance``; this plugin
adds a ``conformance`` marker so a backend's CI can run only the kit with ``-m conformance``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: the storage-core backend conformance kit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from storage_core.testing.conformance import BackendConformance

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, BackendConformance):
            item.add_marker(pytest.mark.conformance)
