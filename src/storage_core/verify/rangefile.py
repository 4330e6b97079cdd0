"""A read-only, seekable file over an object in a store: pyarrow reads parquet through it with range requests.

The core owns it (a backend supplies only ``read_range``), so every backend reads parquet the same way:
the tail already fetched for the footer serves footer reads, every other read is one range request,
and a short answer is the object's problem, never a silent truncation.
"""

from __future__ import annotations

import io
from typing import Any

from storage_core.verify.store import ObjectError, ObjectStore


class RangeFile(io.RawIOBase):
    """``key`` of ``store`` as a file of ``size`` bytes whose last bytes ``tail`` are already at hand."""

    def __init__(self, store: ObjectStore, key: str, size: int, tail: bytes) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self._size = size
        self._tail = tail
        self._tail_start = size - len(tail)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def size(self) -> int:
        return self._size

    def _fetch(self, start: int, end: int) -> bytes:
        data = self.store.read_range(self.key, start, end)
        if len(data) != end - start:
            raise ObjectError(self.key, f"asked bytes {start}-{end - 1}, got {len(data)} bytes")
        return data

    def read(self, size: int | None = -1) -> bytes:
        start = self._position
        end = self._size if size is None or size < 0 else min(self._size, start + size)
        if start >= end:
            return b""
        if start >= self._tail_start:
            data = self._tail[start - self._tail_start : end - self._tail_start]
        elif end > self._tail_start:
            data = self._fetch(start, self._tail_start) + self._tail[: end - self._tail_start]
        else:
            data = self._fetch(start, end)
        self._position = end
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
