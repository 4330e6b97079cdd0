"""Schema version 2 is lossless: every field SN13's content models store reaches the parquet with its value.

A database made with SN13's exact DDL holds X and Reddit posts with every field of their content models
(X written with ``exclude_none``, Reddit ``by_alias`` with nulls kept), a post with a key no model has,
and a legacy nested X post. The export keeps every field of every row, keeps the unknown key in
``extra`` (and counts the row), and skips the legacy row with a reason.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage_core.export import export
from storage_core.schema import JSON_KEYS, SCHEMA_VERSION, schema_for
from storage_core.testing.minerdb import create_schema, db_datetime, time_bucket_id

WHEN = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2, hours=3)
STAMP = WHEN.strftime("%Y-%m-%dT%H:%M:%SZ")

X_POST = {
    "username": "@alice", "text": "every field, kept #bittensor", "url": "https://x.com/alice/status/1",
    "timestamp": STAMP, "tweet_hashtags": ["#bittensor", "#sn13"], "media": ["https://pbs.twimg.com/media/1.jpg"],
    "user_id": "42", "user_display_name": "Alice", "user_verified": True, "tweet_id": "1", "is_reply": True,
    "is_quote": False, "conversation_id": "0", "in_reply_to_user_id": "7", "language": "en",
    "in_reply_to_username": "bob", "quoted_tweet_id": "9", "like_count": 10, "retweet_count": 2, "reply_count": 3,
    "quote_count": 4, "view_count": 5000, "bookmark_count": 6, "user_blue_verified": False,
    "user_description": "scrapes things", "user_location": "Lisbon",
    "profile_image_url": "https://pbs.twimg.com/profile_images/1/p.jpg",
    "cover_picture_url": "https://pbs.twimg.com/profile_banners/1/c", "user_followers_count": 1234,
    "user_following_count": 56, "scraped_at": STAMP,
}
X_SPARSE = {"username": "@carol", "text": "", "url": "https://x.com/carol/status/2", "timestamp": STAMP,
            "tweet_hashtags": []}  # exclude_none: every optional field absent
REDDIT_POST = {
    "id": "t3_abc", "url": "https://www.reddit.com/r/bittensor_/comments/abc/", "username": "dave",
    "communityName": "r/bittensor_", "body": "a post body", "createdAt": WHEN.isoformat(), "dataType": "post",
    "title": "A title", "parentId": None, "media": ["https://i.redd.it/abc.jpg"], "is_nsfw": False, "score": 17,
    "upvote_ratio": 0.93, "num_comments": 8, "scrapedAt": WHEN.isoformat(),
}
REDDIT_COMMENT = {
    "id": "t1_def", "url": "https://www.reddit.com/r/bittensor_/comments/abc/comment/def/", "username": "erin",
    "communityName": "r/bittensor_", "body": "a comment", "createdAt": WHEN.isoformat(), "dataType": "comment",
    "title": None, "parentId": "t3_abc", "media": None, "is_nsfw": None, "score": None, "upvote_ratio": None,
    "num_comments": None, "scrapedAt": None,
}
UNKNOWN_KEY = {**X_SPARSE, "url": "https://x.com/frank/status/3", "model_config": {"extra": "forbid"}}
LEGACY_NESTED = {"tweet": {"user": {"username": "@old"}, "text": "nested"}, "url": "https://x.com/old/status/4"}


def _database(path: Path) -> Path:
    connection = sqlite3.connect(path)
    create_schema(connection)
    rows = [(X_POST, 2), (X_SPARSE, 2), (REDDIT_POST, 1), (REDDIT_COMMENT, 1), (UNKNOWN_KEY, 2), (LEGACY_NESTED, 2)]
    with connection:
        for post, source in rows:
            body = json.dumps(post).encode()
            connection.execute("INSERT INTO DataEntity VALUES (?,?,?,?,?,?,?)",
                               (post["url"], db_datetime(WHEN), time_bucket_id(WHEN), source, "NULL", body, len(body)))
    connection.close()
    return path


def _stored(files) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for staged in files:
        table = pq.read_table(staged.path)
        assert table.schema.metadata[b"storage_core.schema_version"] == str(SCHEMA_VERSION).encode()
        for row in table.to_pylist():
            rows[row["uri"]] = row
    return rows


def _expected(value, column_type: pa.DataType):
    if isinstance(column_type, pa.TimestampType) and value is not None:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def test_every_field_of_every_row_is_in_the_parquet(tmp_path: Path) -> None:
    result = export(_database(tmp_path / "sn13.sqlite"), tmp_path / "out")
    stored = _stored(result.files)
    for post, source in ((X_POST, "x"), (X_SPARSE, "x"), (REDDIT_POST, "reddit"), (REDDIT_COMMENT, "reddit")):
        row = stored[post["url"]]
        schema = schema_for(source)
        for key, column in JSON_KEYS[source].items():
            default = [] if column == "tweet_hashtags" else None
            assert row[column] == _expected(post.get(key, default), schema.field(column).type), (source, column)
        assert row["extra"] is None
        assert row["content_size_bytes"] == len(json.dumps(post).encode())
    # every field the models have is a column: nothing of the post JSON is left out
    assert set(X_POST) == set(JSON_KEYS["x"]) and set(REDDIT_POST) == set(JSON_KEYS["reddit"])


def test_a_key_no_column_holds_is_kept_and_counted(tmp_path: Path) -> None:
    result = export(_database(tmp_path / "sn13.sqlite"), tmp_path / "out")
    row = _stored(result.files)[UNKNOWN_KEY["url"]]
    assert json.loads(row["extra"]) == {"model_config": {"extra": "forbid"}}
    assert row["username"] == "@carol" and row["text"] == ""
    assert result.extra_key_rows == 1


def test_a_legacy_nested_row_is_skipped_with_a_reason(tmp_path: Path) -> None:
    result = export(_database(tmp_path / "sn13.sqlite"), tmp_path / "out")
    assert LEGACY_NESTED["url"] not in _stored(result.files)
    assert result.skipped_count == 1
    (skip,) = result.skipped
    assert skip.uri == LEGACY_NESTED["url"] and "not a valid x post" in skip.reason and "username" in skip.reason
    assert result.rows == 5
