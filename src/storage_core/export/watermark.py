"""The export watermark: how far the export has gone, so the next one starts exactly there.

A watermark is a datetime ``T`` plus the URIs of the rows *at exactly* ``T`` that were exported: every
row before ``T`` and those rows at ``T`` are done. The next export takes rows after ``T`` and rows at
``T`` whose URI is not listed, so rows sharing a timestamp with the watermark are neither skipped nor
exported twice, even when the miner writes more of them later. The datetime is kept as the database's
own text (``YYYY-MM-DD HH:MM:SS.ffffff+00:00``, as Python's sqlite3 adapter writes an aware UTC
datetime), because that text is what SQLite compares.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import attrs


@attrs.frozen
class Watermark:
    """Rows before ``text``, and the rows at exactly ``text`` listed in ``uris``, have been exported."""

    text: str
    uris: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(sorted(set(v))))

    @classmethod
    def from_datetime(cls, value: datetime, uris: tuple[str, ...] = ()) -> Watermark:
        """The watermark just before every row at ``value`` (naive datetimes are taken as UTC)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return cls(str(value.astimezone(UTC)), uris)

    @classmethod
    def parse(cls, text: str) -> Watermark:
        """From an ISO 8601 datetime given by a person (``2026-11-01``, ``2026-11-01T12:00:00Z``...)."""
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 datetime: {text!r}") from None
        return cls.from_datetime(value)

    @property
    def datetime(self) -> datetime:
        value = datetime.fromisoformat(self.text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def time_bucket_id(self) -> int:
        """The subnet's hour bucket of the watermark (hours since the epoch)."""
        return int(self.datetime.timestamp() // 3600)

    def uris_json(self) -> str:
        return json.dumps(list(self.uris))

    def to_dict(self) -> dict[str, object]:
        return {"datetime": self.datetime.isoformat(), "uris_at_datetime": list(self.uris)}
