"""Object names shared by every backend: Hive-style, so pyarrow and DuckDB can scan a miner's data."""

from __future__ import annotations

import re

import attrs

from storage_core.values import StagedFile

#: Hex characters of the sha256 kept in an object name (128 bits: collisions are not a concern).
NAME_HASH_CHARS = 32
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOTKEY = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{40,60}$")  # base58 alphabet, ss58 length


def check_hotkey(hotkey: str) -> str:
    """Return ``hotkey`` if it looks like an ss58 address, else raise ``ValueError`` naming it."""
    if not isinstance(hotkey, str) or not _HOTKEY.match(hotkey):
        raise ValueError(f"not an ss58 hotkey: {hotkey!r}")
    return hotkey


def miner_prefix(hotkey: str) -> str:
    """The prefix under which every object of one miner lives (ends with '/')."""
    return f"hotkey={check_hotkey(hotkey)}/"


def object_key(hotkey: str, source: str, date: str, sha256: str) -> str:
    """``hotkey={hotkey}/source={source}/date={YYYY-MM-DD}/{sha256-prefix}.parquet``."""
    if not _PARTITION_VALUE.match(source):
        raise ValueError(f"invalid source partition value: {source!r}")
    if not _DATE.match(date):
        raise ValueError(f"invalid date partition value (want YYYY-MM-DD): {date!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"invalid sha256 (want 64 lower-case hex characters): {sha256!r}")
    return f"{miner_prefix(hotkey)}source={source}/date={date}/{sha256[:NAME_HASH_CHARS]}.parquet"


def key_for(hotkey: str, staged: StagedFile) -> str:
    """The object key of one staged chunk for one miner."""
    return object_key(hotkey, staged.source, staged.date, staged.sha256)


def hotkey_of_key(key: str) -> str | None:
    """The hotkey partition of an object key, or None when the key is not in the layout."""
    first = key.split("/", 1)[0]
    if not first.startswith("hotkey="):
        return None
    value = first[len("hotkey="):]
    return value if _HOTKEY.match(value) else None


_OBJECT_KEY = re.compile(
    r"hotkey=(?P<hotkey>[^/]+)/source=(?P<source>[^/]+)/date=(?P<date>[^/]+)/(?P<name>[0-9a-f]{%d})\.parquet"
    % NAME_HASH_CHARS
)


@attrs.frozen
class ObjectName:
    """The parts of an object key in the layout: whose it is, which source and day, which content."""

    hotkey: str
    source: str
    date: str
    name_hash: str  # the first NAME_HASH_CHARS hex characters of the object's sha256

    @property
    def key(self) -> str:
        return f"{miner_prefix(self.hotkey)}source={self.source}/date={self.date}/{self.name_hash}.parquet"


def parse_key(key: str) -> ObjectName | None:
    """The inverse of :func:`object_key`: the parts of ``key``, or None when it is not in the layout."""
    match = _OBJECT_KEY.fullmatch(key)
    if match is None:
        return None
    hotkey, source, date = match.group("hotkey"), match.group("source"), match.group("date")
    if not (_HOTKEY.match(hotkey) and _PARTITION_VALUE.match(source) and _DATE.match(date)):
        return None
    return ObjectName(hotkey, source, date, match.group("name"))


_MANIFEST_KEY = re.compile(r"hotkey=(?P<hotkey>[^/]+)/manifests/(?P<seq>\d{13})-(?P<name>[0-9a-f]{%d})\.manifest"
                           % NAME_HASH_CHARS)
#: The highest round number a manifest key can carry (13 digits, so keys sort by round; rounds are
#: numbered by the clock in milliseconds, which fits 13 digits until the year 2286).
MAX_MANIFEST_SEQ = 9_999_999_999_999


@attrs.frozen
class ManifestName:
    """The parts of a round manifest's key: whose, which round (``seq``), which content."""

    hotkey: str
    seq: int
    name_hash: str


def manifest_key(hotkey: str, seq: int, sha256: str) -> str:
    """``hotkey={hotkey}/manifests/{seq:013d}-{sha256-prefix}.manifest``: one per round, sorted by round."""
    if not 0 <= seq <= MAX_MANIFEST_SEQ:
        raise ValueError(f"manifest round number {seq} is outside 0..{MAX_MANIFEST_SEQ}")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"invalid sha256 (want 64 lower-case hex characters): {sha256!r}")
    return f"{miner_prefix(hotkey)}manifests/{seq:013d}-{sha256[:NAME_HASH_CHARS]}.manifest"


def parse_manifest_key(key: str) -> ManifestName | None:
    """The inverse of :func:`manifest_key`, or None when ``key`` is not a manifest key."""
    match = _MANIFEST_KEY.fullmatch(key)
    if match is None or not _HOTKEY.match(match.group("hotkey")):
        return None
    return ManifestName(match.group("hotkey"), int(match.group("seq")), match.group("name"))
