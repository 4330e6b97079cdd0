"""Exception types shared by the core, the plugins and the CLI.

Every error names the problem in its message; callers never have to parse it.
"""

from __future__ import annotations


class StorageCoreError(Exception):
    """Base class for every error raised on purpose by storage-core."""


class ConfigError(StorageCoreError, ValueError):
    """A storage config document is invalid; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config field {field!r}: {problem}")


class PluginError(StorageCoreError):
    """A plugin could not be loaded or misbehaved (raised only in strict mode or on direct use)."""


class UnknownBackendError(StorageCoreError, KeyError):
    """A backend id is not provided by any loaded plugin."""

    def __init__(self, backend: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.backend = backend
        known_text = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown backend {backend!r} (known backends: {known_text})")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class InvalidBatchError(StorageCoreError, ValueError):
    """A staged batch is malformed (missing file, checksum or schema mismatch)."""


class BackendError(StorageCoreError):
    """A backend failed to store or read data; ``retryable`` says whether a later round may succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class ChainError(StorageCoreError):
    """Reading from or writing to the chain failed; the message is meant for a subnet owner."""
