"""Frozen values that cross the hook boundary between the core and backend plugins.

Plugins receive and return only these classes (never bare dicts), so a new optional
field can be added later without breaking any plugin.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

#: Major version of the hook contract. A plugin declaring another major version is refused.
PLUGIN_API_VERSION = 2

BACKEND_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
CAPABILITIES = frozenset({"upload", "validate", "health", "usage", "manifest"})
OPTION_TYPES = ("str", "int", "float", "bool")


def _check_backend_id(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not BACKEND_ID_PATTERN.match(value):
        raise ValueError(
            f"backend id {value!r} must match {BACKEND_ID_PATTERN.pattern} "
            "(lower-case letters, digits, '_' or '-', at most 32 characters)"
        )


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value or {}))


# Typed converters: attrs' mypy plugin cannot infer element types through bare ``tuple`` / ``frozenset``.
def _str_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _option_specs(value: Iterable[OptionSpec]) -> tuple[OptionSpec, ...]:
    return tuple(value)


def _staged_files(value: Iterable[StagedFile]) -> tuple[StagedFile, ...]:
    return tuple(value)


def _stored_objects(value: Iterable[StoredObject]) -> tuple[StoredObject, ...]:
    return tuple(value)


def _problems(value: Iterable[IntegrityProblem]) -> tuple[IntegrityProblem, ...]:
    return tuple(value)


@attrs.frozen
class OptionSpec:
    """One option a backend accepts in the storage config (shown by `storage-core plugins`)."""

    name: str
    type: str = attrs.field(default="str", validator=attrs.validators.in_(OPTION_TYPES))
    required: bool = False
    default: str | int | float | bool | None = None
    description: str = ""
    secret: bool = False  # never printed or logged


@attrs.frozen
class BackendDescriptor:
    """What a plugin tells the core about one backend it provides."""

    id: str = attrs.field(validator=_check_backend_id)
    api_version: int
    package: str
    version: str
    capabilities: frozenset[str] = attrs.field(
        converter=_str_set, validator=attrs.validators.deep_iterable(attrs.validators.in_(CAPABILITIES))
    )
    options: tuple[OptionSpec, ...] = attrs.field(default=(), converter=_option_specs)
    description: str = ""


@attrs.frozen
class BackendContext:
    """Everything a backend needs for one call: its options and who is acting.

    ``signer`` is the acting node's hotkey (a bittensor ``Wallet`` or ``Keypair``); it is
    never printed. ``state_dir`` is a directory the backend may use for caches.
    """

    backend_id: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    netuid: int | None = None
    hotkey: str | None = None
    signer: Any = attrs.field(default=None, repr=False, eq=False)
    state_dir: Path | None = None

    def option(self, name: str, default: Any = None) -> Any:
        """Return option ``name`` or ``default`` when the config does not set it."""
        return self.options.get(name, default)


@attrs.frozen
class StagedFile:
    """One content-addressed parquet chunk in the spool, ready to be uploaded."""

    path: Path = attrs.field(converter=Path)
    sha256: str
    size_bytes: int
    rows: int
    source: str
    date: str  # YYYY-MM-DD of every row's datetime (UTC); a chunk never spans two days
    min_datetime: datetime
    max_datetime: datetime
    schema_version: int


@attrs.frozen
class UploadBatch:
    """The chunks one miner publishes in one round; the same batch goes to every selected backend."""

    miner_hotkey: str
    files: tuple[StagedFile, ...] = attrs.field(converter=_staged_files)
    round_id: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)


@attrs.frozen
class StoredObject:
    """One object a backend holds after an upload."""

    key: str
    size_bytes: int
    sha256: str
    etag: str | None = None
    already_present: bool = False


@attrs.frozen
class UploadReceipt:
    """What a backend stored for one batch, and where (bucket, repo id, directory...)."""

    backend: str
    location: str
    objects: tuple[StoredObject, ...] = attrs.field(converter=_stored_objects)
    revision: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(o.size_bytes for o in self.objects)


@attrs.frozen
class IntegrityProblem:
    """An object that exists but cannot be trusted (bad checksum, wrong schema, unreadable)."""

    key: str
    problem: str


@attrs.frozen
class StoredRow:
    """One sampled row exactly as the miner stored it (every column), for a validator to compare with a scrape."""

    uri: str
    key: str  # the object that holds it
    values: Mapping[str, Any] = attrs.field(converter=_frozen_mapping)
    problem: str | None = None  # why the row failed its checks, or None


def _stored_rows(value: Iterable[StoredRow]) -> tuple[StoredRow, ...]:
    return tuple(value)


@attrs.frozen
class ValidationResult:
    """A backend's answer to "which of these URIs does miner M hold?", with what it cost to answer.

    ``found`` holds the URIs stored and passing every check; ``rejected`` the URIs that are stored but
    fail one (a duplicate, a stale or fabricated row, a file that cannot be trusted), with the reason.
    A URI in neither was not found. ``rows`` are the sampled rows, as stored.
    """

    backend: str
    miner_hotkey: str
    found: frozenset[str] = attrs.field(converter=_str_set)
    requests: int = 0
    bytes_read: int = 0
    objects_scanned: int = 0
    problems: tuple[IntegrityProblem, ...] = attrs.field(default=(), converter=_problems)
    rejected: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    rows: tuple[StoredRow, ...] = attrs.field(default=(), converter=_stored_rows)
    #: Which round manifest indexed the check ("round N (key)"), "none: checked by listing", or why it was refused.
    manifest: str = ""


@attrs.frozen
class StoredUsage:
    """How much a backend holds for one miner (usage telemetry): found by listing, never by reading."""

    backend: str
    miner_hotkey: str
    objects: int = 0
    bytes: int = 0


@attrs.frozen
class HealthStatus:
    """Whether a backend is reachable with the configured options."""

    backend: str
    ok: bool
    detail: str = ""


OUTCOME_STATUSES = ("ok", "failed", "timeout", "skipped")


@attrs.frozen
class UploadOutcome:
    """What happened to one backend in one dispatched upload (the dispatcher never lets it raise)."""

    backend: str
    status: str = attrs.field(validator=attrs.validators.in_(OUTCOME_STATUSES))
    receipt: UploadReceipt | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    fallback_for: str | None = None  # set when this backend stood in for a failed one

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@attrs.frozen
class ValidationOutcome:
    """One backend's part of a validation: its result, or why it could not answer."""

    backend: str
    status: str = attrs.field(validator=attrs.validators.in_(OUTCOME_STATUSES))
    result: ValidationResult | None = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"
