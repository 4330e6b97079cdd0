"""The export watermark: the last exported row's ``(datetime, uri)``.

Rows are exported in ``(datetime, uri)`` order and the watermark is the last row a committed chunk
holds, so rows sharing a timestamp with the watermark are neither skipped nor exported twice. The
datetime is kept as the database's own text (``YYYY-MM-DD HH:MM:SS.ffffff+00:00``, as Python's sqlite3
adapter writes an aware UTC datetime), because that text is what SQLite compares.
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs


@attrs.frozen
class Watermark:
    """Every row with ``(datetime, uri)`` up to and including this pair has been exported."""

    text: str
    uri: str = ""

    @classmethod
    def from_datetime(cls, value: datetime, uri: str = "") -> Watermark:
        """The watermark just before every row at ``value`` (naive datetimes are taken as UTC)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return cls(str(value.astimezone(UTC)), uri)

    @classmethod
    def parse(cls, text: str, uri: str = "") -> Watermark:
        """From an ISO 8601 datetime given by a person (``2026-11-01``, ``2026-11-01T12:00:00Z``...)."""
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 datetime: {text!r}") from None
        return cls.from_datetime(value, uri)

    @property
    def datetime(self) -> datetime:
        value = datetime.fromisoformat(self.text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def time_bucket_id(self) -> int:
        """The subnet's hour bucket of the watermark (hours since the epoch)."""
        return int(self.datetime.timestamp() // 3600)

    def to_dict(self) -> dict[str, str]:
        return {"datetime": self.datetime.isoformat(), "uri": self.uri}
