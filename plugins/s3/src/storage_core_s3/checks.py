"""Checks on values a client sends: each refuses with a :class:`GrantError` that names the problem."""

from __future__ import annotations

import re
import unicodedata
from datetime import date as date_type
from typing import Any

import msgspec

from storage_core.layout import MAX_MANIFEST_SEQ, hotkey_of_key, manifest_key, miner_prefix, object_key

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAX_KEY_LENGTH = 1024
_MAX_PARTITION_LENGTH = 64
_PARTITION_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")


class GrantError(Exception):
    """A request the service refuses: HTTP ``status``, a short ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad(code: str, message: str) -> GrantError:
    return GrantError(400, code, message)


def check_partition_value(field: str, value: str) -> str:
    """A partition value (``source`` or ``date``) that may appear in a key, or a 400 naming the problem."""
    if not isinstance(value, str) or not value:
        raise bad("invalid_name", f"{field} must be a non-empty string")
    if len(value) > _MAX_PARTITION_LENGTH:
        raise bad("invalid_name", f"{field} is {len(value)} characters long; at most {_MAX_PARTITION_LENGTH} allowed")
    if ".." in value:
        raise bad("invalid_name", f"{field} {value!r} contains '..'")
    if "/" in value or "\\" in value:
        raise bad("invalid_name", f"{field} {value!r} contains a path separator")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise bad("invalid_name", f"{field} {value!r} contains control characters")
    if not _PARTITION_CHARS.match(value):
        raise bad("invalid_name", f"{field} {value!r} may only hold letters, digits, '_', '.' and '-'")
    return value


def check_date(value: str) -> str:
    check_partition_value("date", value)
    try:
        parsed = date_type.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != value:
        raise bad("invalid_name", f"date {value!r} is not a calendar date in YYYY-MM-DD form")
    return value


def check_sha256(field: str, value: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.match(value):
        raise bad("invalid_checksum", f"{field} must be 64 lower-case hex characters")
    return value


def check_key_text(field: str, value: str) -> str:
    if len(value) > _MAX_KEY_LENGTH:
        raise bad("invalid_key", f"{field} is longer than {_MAX_KEY_LENGTH} characters")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise bad("invalid_key", f"{field} contains control characters")
    if ".." in value.split("/") or "//" in value or "\\" in value:
        raise bad("invalid_key", f"{field} {value!r} contains an empty, '..' or backslash path segment")
    return value


def build_key(hotkey: str, source: str, date: str, sha256: str) -> str:
    """The object key the *service* builds from the signer and the checked partition values."""
    check_partition_value("source", source)
    check_date(date)
    check_sha256("sha256", sha256)
    return object_key(hotkey, source, date, sha256)


def build_manifest_key(hotkey: str, seq: int, sha256: str) -> str:
    """A round manifest's key, built by the *service* from the signer, the round number and the sha256."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_MANIFEST_SEQ:
        raise bad("invalid_name", f"manifest_seq must be a round number between 0 and {MAX_MANIFEST_SEQ}, got {seq!r}")
    check_sha256("sha256", sha256)
    return manifest_key(hotkey, seq, sha256)


def own_key(hotkey: str, key: str) -> str:
    """``key`` if it lies under ``hotkey``'s prefix, else a 403."""
    check_key_text("key", key)
    if hotkey_of_key(key) != hotkey or not key.startswith(miner_prefix(hotkey)):
        raise GrantError(403, "outside_prefix", f"key {key!r} is outside your prefix {miner_prefix(hotkey)!r}")
    return key


def check_size(size: int, limit: int) -> None:
    if size <= 0:
        raise bad("invalid_size", f"size must be a positive number of bytes, got {size}")
    if size > limit:
        raise GrantError(413, "object_too_large", f"size {size} is over this service's limit of {limit} bytes")


def decode(body: bytes, kind: type[Any]) -> Any:
    """A strict JSON decode into ``kind``: unknown fields and wrong types are a 400 naming the field."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise bad("invalid_request", f"invalid request: {error}") from None
    except msgspec.DecodeError as error:
        raise bad("malformed_json", f"request body is not valid JSON: {error}") from None
