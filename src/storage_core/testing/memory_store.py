"""An ``ObjectStore`` over bytes in memory: for tests of the core's checks and of in-process backends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from storage_core.layout import miner_prefix
from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectTail


class MemoryStore:
    """The objects of ``objects`` (key -> bytes) under ``miner_hotkey``'s prefix; records no checksum, and
    a store time only for the keys of ``stored_at``."""

    def __init__(self, objects: Mapping[str, bytes], miner_hotkey: str,
                 stored_at: Mapping[str, datetime] | None = None) -> None:
        prefix = miner_prefix(miner_hotkey)
        self.objects = {key: data for key, data in objects.items() if key.startswith(prefix)}
        self.stored_at = dict(stored_at or {})
        self.meter = Meter()

    def list_objects(self) -> Iterator[ListedObject]:
        self.meter.add(requests=1)
        for key in sorted(self.objects):
            yield ListedObject(key=key, size=len(self.objects[key]), stored_at=self.stored_at.get(key))

    def _data(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectError(key, "no such object")
        return self.objects[key]

    def read_tail(self, key: str, length: int) -> ObjectTail:
        data = self._data(key)
        tail = data[max(0, len(data) - length):]
        self.meter.add(requests=1, bytes_read=len(tail))
        return ObjectTail(data=tail, size=len(data))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        data = self._data(key)[start:end]
        self.meter.add(requests=1, bytes_read=len(data))
        return data

    def close(self) -> None:
        pass
