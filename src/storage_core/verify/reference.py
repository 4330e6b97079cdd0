"""A validator's own copy of posts, to compare sampled rows with: SN13's database (a fresh scrape).

SN13 validators re-scrape sampled posts and compare them field by field with what the miner stored.
Any store of posts in SN13's ``DataEntity`` table works as the reference: the validator's own scrape,
or in tests the honest miner's database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from storage_core.verify.rows import Reference

#: Content JSON keys (both content models) and the columns they fill.
_FIELDS = {"text": "text", "username": "username", "body": "body", "title": "title",
           "communityName": "community_name"}


def _datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def sqlite_reference(path: Path) -> Reference:
    """Look posts up by URI in a database with SN13's ``DataEntity`` table (read-only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"reference database {path} does not exist")

    def lookup(uris: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            for start in range(0, len(uris), 500):
                chunk = list(uris[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT uri, datetime, content, contentSizeBytes FROM DataEntity WHERE uri IN ({marks})"
                for uri, when, content, size in db.execute(query, chunk):
                    try:
                        post = msgspec.json.decode(content)
                    except msgspec.DecodeError:
                        continue  # a post the reference cannot read is one it does not know
                    fields = {column: post[key] for key, column in _FIELDS.items() if isinstance(post, dict) and key in post}
                    found[uri] = {**fields, "datetime": _datetime(when), "content_size_bytes": size}
        return found

    return lookup
