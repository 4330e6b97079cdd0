"""Checks on one stored row: is it a real post of the claimed source, day and size, or a shell?

These checks need nothing but the row, its object's name and the clock. They cannot tell a real post
from a well-made fabrication with every field consistent: that takes a fresh scrape, which a subnet
validator compares with the sampled rows a check returns (see docs/validation.md). A ``reference``
(a validator's own copy of the posts) turns that comparison on inside the check.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import attrs

from storage_core.layout import ObjectName

#: A post's JSON is larger than the fields a v1 file keeps, but not without bound.
MAX_CONTENT_BYTES = 1 << 20
#: How far in the future a post's datetime may be (clock skew between miner and validator).
FUTURE_SKEW = timedelta(minutes=5)

#: Looks up posts by URI in a validator's own copy (a fresh scrape): {uri: {column: value}}.
Reference = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]]

_X_HOSTS = {"x.com", "twitter.com", "www.x.com", "www.twitter.com", "mobile.twitter.com", "mobile.x.com"}


def source_of_uri(uri: str) -> str | None:
    """The source a URI belongs to by its host ("x", "reddit"), or None when the host says nothing."""
    try:
        host = (urlsplit(uri).hostname or "").lower()
    except ValueError:
        return None
    if host in _X_HOSTS:
        return "x"
    if host == "reddit.com" or host.endswith(".reddit.com"):
        return "reddit"
    return None


@attrs.frozen
class RowRules:
    """The clock and window the row checks use."""

    now: datetime
    freshness: timedelta

    def oldest(self) -> datetime:
        return self.now - self.freshness


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_fernet_text(value: str) -> bool:
    """Whether ``value`` is ``urlsafe_b64encode(Fernet token)``, the subnet's encoded-field form."""
    try:
        token = base64.urlsafe_b64decode(base64.urlsafe_b64decode(value.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return len(token) >= 73 and token[0] == 0x80 and (len(token) - 57) % 16 == 0


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _same_minute(first: datetime, second: datetime) -> bool:
    """Content timestamps are the post's datetime rounded down to the minute."""
    return _as_utc(first).replace(second=0, microsecond=0) == _as_utc(second).replace(second=0, microsecond=0)


def _text_size(row: Mapping[str, Any]) -> int:
    """UTF-8 bytes of every string a row stores: the least its post's JSON can hold."""
    total = 0
    for value in row.values():
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, list):
            total += sum(len(item.encode()) for item in value if isinstance(item, str))
    return total


def row_problem(row: Mapping[str, Any], claimed_uri: str, name: ObjectName, rules: RowRules) -> str | None:
    """Why this stored row is not a real post of its object's source and day, or None when it may be."""
    if row.get("uri") != claimed_uri:
        return "the row's uri differs from the claim"
    if row.get("source") != name.source:
        return f"row says source {row.get('source')!r}, stored under source={name.source}"
    expected = source_of_uri(claimed_uri)
    if expected is not None and expected != name.source:
        return f"a {expected} URI stored under source={name.source}"
    when = row.get("datetime")
    if not isinstance(when, datetime):
        return "no datetime"
    when = _as_utc(when)
    if when.date().isoformat() != name.date:
        return f"datetime {when.isoformat()} is not in the date partition {name.date}"
    if when > rules.now + FUTURE_SKEW:
        return f"datetime {when.isoformat()} is in the future"
    size = row.get("content_size_bytes")
    if not isinstance(size, int) or size <= 0 or size > MAX_CONTENT_BYTES:
        return f"content_size_bytes {size!r} is not a post's size"
    stored = _text_size(row)
    if size > 2 * stored + 2048:
        return f"content_size_bytes {size} is inflated: the row stores {stored} bytes of content"
    url = row.get("url")
    if _blank(url) or (url != claimed_uri and not _is_fernet_text(str(url))):
        return "url is missing or differs from the uri"
    if _blank(row.get("username")):
        return "no username"
    return (_x_row if name.source == "x" else _reddit_row)(row, when)


def _x_row(row: Mapping[str, Any], when: datetime) -> str | None:
    if row.get("text") is None or (_blank(row.get("text")) and not row.get("tweet_hashtags")):
        return "an X row without text (a URI shell)"
    stamp = row.get("timestamp")
    if not isinstance(stamp, datetime) or not _same_minute(stamp, when):
        return f"timestamp {stamp!r} does not match datetime {when.isoformat()}"
    return None


def _reddit_row(row: Mapping[str, Any], when: datetime) -> str | None:
    if _blank(row.get("id")):
        return "a Reddit row without an id (a URI shell)"
    if _blank(row.get("body")) and _blank(row.get("title")):
        return "a Reddit row without body or title (a URI shell)"
    community = row.get("community_name")
    if not isinstance(community, str) or not community.startswith("r/") or len(community) < 3:
        return f"community_name {community!r} is not a subreddit"
    kind = row.get("data_type")
    if kind not in ("post", "comment"):
        return f"data_type {kind!r} is neither post nor comment"
    if kind == "comment" and _blank(row.get("parent_id")):
        return "a comment without parent_id"
    created = row.get("created_at")
    if not isinstance(created, datetime) or not _same_minute(created, when):
        return f"created_at {created!r} does not match datetime {when.isoformat()}"
    return None


#: Fields compared with a reference copy: the post's words and its time (as SN13 validators compare).
_COMPARED = {"x": ("text", "username"), "reddit": ("body", "title", "username", "community_name")}


def reference_problem(row: Mapping[str, Any], truth: Mapping[str, Any] | None, source: str) -> str | None:
    """Why ``row`` differs from the validator's own copy ``truth`` of the post, or None when it agrees."""
    if truth is None:
        return None  # the reference does not know this post: nothing to compare
    for field in _COMPARED.get(source, ()):
        if field in truth and row.get(field) != truth[field]:
            return f"{field} differs from the validator's copy of the post"
    if "datetime" in truth and isinstance(truth["datetime"], datetime) and isinstance(row.get("datetime"), datetime):
        if not _same_minute(truth["datetime"], row["datetime"]):
            return "datetime differs from the validator's copy of the post"
    if "content_size_bytes" in truth and row.get("content_size_bytes") != truth["content_size_bytes"]:
        return (f"content_size_bytes {row.get('content_size_bytes')} differs from the validator's copy "
                f"({truth['content_size_bytes']})")
    return None
