"""What a backend supplies to the core's checks: a listing of one miner's objects and byte ranges of them.

Everything that decides validity (key parsing, footers, schema, row counts, row checks) lives in the
core (:mod:`storage_core.verify.check`); a backend is transport only, the way fsspec lets a filesystem
supply ``_fetch_range`` and keeps the buffered file for itself. Two kinds of failure, kept apart:

* ``ObjectError``: something is wrong with one object the miner made (gone after it was listed, an odd
  header, a short body). That object's claims are invalid; the check goes on.
* anything else a store raises (``BackendError`` for a store that is down, a time-out): the backend
  could not answer, and its claims become "could not validate".
"""

from __future__ import annotations

import threading
from datetime import datetime
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs


class ObjectError(Exception):
    """One object cannot be read as stored: the miner's problem, never the backend's."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@attrs.frozen
class ListedObject:
    """One object of a listing. ``sha256`` is the content hash the store itself verified, when it has one;
    ``stored_at`` the time the store recorded for it (S3 LastModified, the Hub's commit), never the miner's."""

    key: str
    size: int
    sha256: str | None = None
    stored_at: datetime | None = None


@attrs.frozen
class ObjectTail:
    """The last bytes of an object, with the object's size and any sha256 the store recorded for it."""

    data: bytes
    size: int
    sha256: str | None = None


class Meter:
    """Requests made and bytes received by one check (thread-safe); stores count what they fetch."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_read = 0
        self._lock = threading.Lock()

    def add(self, requests: int = 0, bytes_read: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_read += bytes_read


@runtime_checkable
class ObjectStore(Protocol):
    """One miner's objects on one backend, as a validator may read them.

    ``list_objects`` yields every object under the miner's prefix (or repo); keys are full layout keys.
    ``read_tail`` and ``read_range`` return raw stored bytes (no content decoding) and raise
    ``ObjectError`` for a problem of that object. ``meter`` counts every request and byte.
    """

    meter: Meter

    def list_objects(self) -> Iterable[ListedObject]: ...

    def read_tail(self, key: str, length: int) -> ObjectTail: ...

    def read_range(self, key: str, start: int, end: int) -> bytes: ...

    def close(self) -> None: ...
