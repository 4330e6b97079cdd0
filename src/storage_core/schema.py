"""The parquet schema of a published batch, shared by the export, the conformance kit and every backend.

One schema per source (X, Reddit) with the same common columns first, so a checker can read the
``uri`` column alone from any file. The version is stored in each file's key-value metadata.
See docs/schema.md for the meaning of each column.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
METADATA_VERSION_KEY = b"storage_core.schema_version"
METADATA_SOURCE_KEY = b"storage_core.source"

#: The subnet's DataEntity.source integers.
SOURCE_IDS = {1: "reddit", 2: "x"}
SOURCE_NAMES = {name: number for number, name in SOURCE_IDS.items()}

TIMESTAMP = pa.timestamp("us", tz="UTC")
STRINGS = pa.list_(pa.string())

COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("uri", pa.string(), nullable=False),
    pa.field("datetime", TIMESTAMP, nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("label", pa.string()),
    pa.field("content_size_bytes", pa.int64(), nullable=False),
)

#: Keys of a post's JSON that no column holds, as a JSON object (null when there are none): nothing the
#: miner stored is dropped, whatever the scraper adds next.
EXTRA_FIELD = pa.field("extra", pa.string())

#: Every field of SN13's ``XContent`` (scraping/x/model.py), named as in its JSON.
X_FIELDS: tuple[pa.Field, ...] = (
    pa.field("username", pa.string()),
    pa.field("text", pa.string()),
    pa.field("url", pa.string()),
    pa.field("timestamp", TIMESTAMP),
    pa.field("tweet_hashtags", STRINGS),
    pa.field("media", STRINGS),
    pa.field("user_id", pa.string()),
    pa.field("user_display_name", pa.string()),
    pa.field("user_verified", pa.bool_()),
    pa.field("tweet_id", pa.string()),
    pa.field("is_reply", pa.bool_()),
    pa.field("is_quote", pa.bool_()),
    pa.field("conversation_id", pa.string()),
    pa.field("in_reply_to_user_id", pa.string()),
    pa.field("language", pa.string()),
    pa.field("in_reply_to_username", pa.string()),
    pa.field("quoted_tweet_id", pa.string()),
    pa.field("like_count", pa.int64()),
    pa.field("retweet_count", pa.int64()),
    pa.field("reply_count", pa.int64()),
    pa.field("quote_count", pa.int64()),
    pa.field("view_count", pa.int64()),
    pa.field("bookmark_count", pa.int64()),
    pa.field("user_blue_verified", pa.bool_()),
    pa.field("user_description", pa.string()),
    pa.field("user_location", pa.string()),
    pa.field("profile_image_url", pa.string()),
    pa.field("cover_picture_url", pa.string()),
    pa.field("user_followers_count", pa.int64()),
    pa.field("user_following_count", pa.int64()),
    pa.field("scraped_at", TIMESTAMP),
    EXTRA_FIELD,
)

#: Every field of SN13's ``RedditContent`` (scraping/reddit/model.py); camelCase JSON keys become snake_case.
REDDIT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("username", pa.string()),
    pa.field("community_name", pa.string()),
    pa.field("body", pa.string()),
    pa.field("title", pa.string()),
    pa.field("created_at", TIMESTAMP),
    pa.field("data_type", pa.string()),
    pa.field("parent_id", pa.string()),
    pa.field("media", STRINGS),
    pa.field("is_nsfw", pa.bool_()),
    pa.field("score", pa.int64()),
    pa.field("upvote_ratio", pa.float64()),
    pa.field("num_comments", pa.int64()),
    pa.field("scraped_at", TIMESTAMP),
    EXTRA_FIELD,
)

#: The JSON keys (``by_alias``) of Reddit fields whose column is the snake_case name.
_REDDIT_ALIASES = {"community_name": "communityName", "created_at": "createdAt", "data_type": "dataType",
                   "parent_id": "parentId", "scraped_at": "scrapedAt"}
#: JSON key -> column, per source (the keys of the content models as the subnet writes them).
JSON_KEYS: dict[str, dict[str, str]] = {
    "x": {field.name: field.name for field in X_FIELDS if field is not EXTRA_FIELD},
    "reddit": {_REDDIT_ALIASES.get(field.name, field.name): field.name
               for field in REDDIT_FIELDS if field is not EXTRA_FIELD},
}

_SOURCE_FIELDS = {"x": X_FIELDS, "reddit": REDDIT_FIELDS}


def schema_for(source: str) -> pa.Schema:
    """The versioned schema of a chunk holding rows of one ``source`` ("x" or "reddit")."""
    try:
        fields = COMMON_FIELDS + _SOURCE_FIELDS[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r} (known: {', '.join(sorted(_SOURCE_FIELDS))})") from None
    metadata = {METADATA_VERSION_KEY: str(SCHEMA_VERSION).encode(), METADATA_SOURCE_KEY: source.encode()}
    return pa.schema(fields, metadata=metadata)


def schema_problem(schema: pa.Schema) -> str | None:
    """Describe why ``schema`` is not a batch schema this core reads, or return None when it is."""
    metadata = schema.metadata or {}
    version = metadata.get(METADATA_VERSION_KEY)
    source = metadata.get(METADATA_SOURCE_KEY, b"").decode("utf-8", "replace")
    if version is None:
        return "missing storage_core.schema_version metadata"
    if version != str(SCHEMA_VERSION).encode():
        return f"schema version {version.decode('utf-8', 'replace')} is not {SCHEMA_VERSION}"
    if source not in _SOURCE_FIELDS:
        return f"unknown source {source!r} in metadata"
    expected = schema_for(source)
    for field in COMMON_FIELDS:
        index = schema.get_field_index(field.name)
        if index < 0:
            return f"missing column {field.name!r}"
        if not schema.field(index).type.equals(field.type):
            return f"column {field.name!r} has type {schema.field(index).type}, expected {field.type}"
    if not schema.remove_metadata().equals(expected.remove_metadata()):
        return f"columns differ from the {source} schema v{SCHEMA_VERSION}"
    return None
