"""A realistic subnet-13 miner database, generated deterministically from a seed.

The export, its tests, the demo and the benchmarks all read this instead of a real miner's file. It
copies what ``storage/miner/sqlite_miner_storage.py`` of macrocosm-os/data-universe writes:

- the exact ``DataEntity`` table (``WITHOUT ROWID``) and its ``(timeBucketId, source, label,
  contentSizeBytes)`` index, in WAL mode;
- ``datetime`` as Python's sqlite3 adapter stores an aware datetime: ``YYYY-MM-DD HH:MM:SS.ffffff+00:00``;
- ``timeBucketId`` = hours since the epoch; ``label`` is the string ``"NULL"`` when there is none;
- ``content`` is the JSON of the post: X rows as pydantic v2 ``XContent.json(exclude_none=True)`` (compact,
  ``Z`` timestamps, obfuscated to the minute), Reddit rows as pydantic v1 ``RedditContent.json(by_alias=True)``
  (spaces after separators, ``+00:00`` timestamps).
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import msgspec

TABLE_SQL = """CREATE TABLE IF NOT EXISTS DataEntity (
                                uri                 TEXT            PRIMARY KEY,
                                datetime            TIMESTAMP(6)    NOT NULL,
                                timeBucketId        INTEGER         NOT NULL,
                                source              INTEGER         NOT NULL,
                                label               CHAR(32)                ,
                                content             BLOB            NOT NULL,
                                contentSizeBytes    INTEGER         NOT NULL
                                ) WITHOUT ROWID"""
INDEX_SQL = """CREATE INDEX IF NOT EXISTS data_entity_bucket_index2
                                ON DataEntity (timeBucketId, source, label, contentSizeBytes)"""

SOURCE_REDDIT = 1
SOURCE_X = 2
#: Generated rows end three days before today and span DEFAULT_DAYS, so they sit inside SN13's 30-day
#: freshness window whenever a test or the demo runs (and rows added a day "later" are still not future).
DEFAULT_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
DEFAULT_DAYS = 25.0

_WORDS = (
    "the a of to and in is it that for on with as was at by this be from are or have an they which one you "
    "were her all she there would their we him been has when who will more no if out so said what up its about "
    "into than them can only other new some could time these two may then do first any my now such like our "
    "over man me even most made after also did many before must through back years where much your way well "
    "bittensor subnet miner validator tao stake emission decentralized ai model data scrape dataset parquet "
    "crypto bitcoin ethereum market price bullish bearish launch update release open source community vote "
    '"quoted" it\'s café naïve 🚀 📈 line\nbreak tab\there 50% $tao <b>'
).split(" ")
_POOL_WORDS = 400_000
_HASHTAGS = ("#bitcoin", "#crypto", "#ai", "#tao", "#bittensor", "#ethereum", "#defi", "#web3", "#nft", "#solana")
_SUBREDDITS = ("r/bittensor_", "r/cryptocurrency", "r/machinelearning", "r/bitcoin", "r/wallstreetbets", "r/python")


@attrs.frozen
class MinerDbSummary:
    """What was generated: enough for a test to know what the export must find."""

    path: Path
    rows: int
    x_rows: int
    reddit_rows: int
    undecodable_uris: tuple[str, ...]
    min_datetime: datetime | None
    max_datetime: datetime | None


def db_datetime(value: datetime) -> str:
    """The text Python's default sqlite3 adapter stores for an aware datetime (``str(value)``)."""
    return str(value.astimezone(UTC))


def time_bucket_id(value: datetime) -> int:
    """The subnet's TimeBucket id: whole hours since the Unix epoch."""
    return int(value.timestamp() // 3600)


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the table and index exactly as the miner does, in WAL mode."""
    connection.execute("pragma journal_mode=wal")
    connection.execute(TABLE_SQL)
    connection.execute(INDEX_SQL)


def _pool(seed: int) -> str:
    """A long run of words (with some quotes, newlines and non-ASCII) to slice post texts from, fast."""
    rng = random.Random(f"pool:{seed}")
    return " ".join(rng.choices(_WORDS, k=_POOL_WORDS))


def _text(rng: random.Random, pool: str, low: int, high: int) -> str:
    """A slice of the pool between ``low`` and ``high`` characters long."""
    length = low + int(rng.random() * (high - low))
    start = rng.randrange(len(pool) - length)
    return pool[start : start + length]


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _x_row(rng: random.Random, pool: str, index: int, seed: int, when: datetime) -> tuple:
    user = f"user_{int(rng.random() * 200_000)}"
    tweet_id = f"{seed % 1000:03d}{index:016d}"
    url = f"https://x.com/{user}/status/{tweet_id}"
    tags = rng.sample(_HASHTAGS, int(rng.random() * 4))
    content = {
        "username": f"@{user}",
        "text": _text(rng, pool, 120, 900) + "".join(f" {tag}" for tag in tags),
        "url": url,
        "timestamp": _minute(when).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tweet_hashtags": tags,
        "user_id": str(int(rng.random() * 10**12)),
        "user_display_name": user.replace("_", " ").title(),
        "user_verified": rng.random() < 0.1,
        "tweet_id": tweet_id,
        "is_reply": rng.random() < 0.3,
        "is_quote": rng.random() < 0.1,
        "conversation_id": tweet_id,
        "like_count": int(rng.random() * 5000),
        "retweet_count": int(rng.random() * 500),
        "reply_count": int(rng.random() * 200),
        "quote_count": int(rng.random() * 50),
        "view_count": int(rng.random() * 100_000),
        "bookmark_count": int(rng.random() * 100),
        "language": rng.choice(("en", "es", "ja", "pt")),
        "user_blue_verified": rng.random() < 0.3,
        "user_description": _text(rng, pool, 0, 160),
        "user_location": rng.choice(("Lisbon", "Tokyo", "", "Lagos")),
        "profile_image_url": f"https://pbs.twimg.com/profile_images/{index}/p.jpg",
        "cover_picture_url": f"https://pbs.twimg.com/profile_banners/{index}/c",
        "user_followers_count": int(rng.random() * 50_000),
        "user_following_count": int(rng.random() * 2_000),
        "scraped_at": _minute(when + timedelta(minutes=5 + int(rng.random() * 600))).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if rng.random() < 0.3:
        content["media"] = [f"https://pbs.twimg.com/media/{index}-{n}.jpg" for n in range(1 + int(rng.random() * 3))]
    if content["is_reply"]:
        content["in_reply_to_user_id"] = str(int(rng.random() * 10**12))
        content["in_reply_to_username"] = f"user_{int(rng.random() * 200_000)}"
    if content["is_quote"]:
        content["quoted_tweet_id"] = f"{seed % 1000:03d}{int(rng.random() * 10**16):016d}"
    body = msgspec.json.encode(content)  # exclude_none, as the subnet writes X posts
    label = tags[0].lower()[:32] if tags else "NULL"
    return (url, db_datetime(when), time_bucket_id(when), SOURCE_X, label, body, len(body))


def _reddit_row(rng: random.Random, pool: str, index: int, seed: int, when: datetime) -> tuple:
    community = rng.choice(_SUBREDDITS)
    post = rng.random() < 0.4
    ident = f"{seed % 1000:03d}{index:010d}"
    url = f"https://www.reddit.com/{community}/comments/{ident}/" + ("" if post else f"comment/c{ident}/")
    content = {
        "id": f"t3_{ident}" if post else f"t1_{ident}",
        "url": url,
        "username": f"redditor_{int(rng.random() * 100_000)}",
        "communityName": community,
        "body": _text(rng, pool, 150, 1000),
        "createdAt": _minute(when).isoformat(),
        "dataType": "post" if post else "comment",
        "title": _text(rng, pool, 20, 120) if post else None,
        "parentId": None if post else f"t3_{ident}",
        "media": [f"https://i.redd.it/{ident}.jpg"] if rng.random() < 0.2 else None,
        "is_nsfw": rng.random() < 0.05,
        "score": int(rng.random() * 3000) - 50,
        "upvote_ratio": round(rng.random(), 2) if post else None,
        "num_comments": int(rng.random() * 400) if post else None,
        "scrapedAt": _minute(when + timedelta(minutes=5 + int(rng.random() * 600))).isoformat(),
    }
    body = json.dumps(content).encode()
    return (url, db_datetime(when), time_bucket_id(when), SOURCE_REDDIT, community.lower()[:32], body, len(body))


def generate_rows(
    rows: int,
    *,
    seed: int = 0,
    end: datetime = DEFAULT_END,
    days: float = DEFAULT_DAYS,
    x_fraction: float = 0.5,
    start_index: int = 0,
    at: datetime | None = None,
) -> Iterator[tuple]:
    """DataEntity tuples in insert order; ``at`` pins every row's datetime (to test equal timestamps)."""
    rng = random.Random(f"minerdb:{seed}:{start_index}")
    span_us = int(days * 86_400_000_000)
    pool = _pool(seed)
    for offset in range(rows):
        index = start_index + offset
        when = at or end - timedelta(microseconds=int(rng.random() * span_us))
        if rng.random() < x_fraction:
            yield _x_row(rng, pool, index, seed, when)
        else:
            yield _reddit_row(rng, pool, index, seed, when)


def insert_rows(path: Path, rows: Iterator[tuple], batch: int = 50_000) -> int:
    """Insert tuples with ``REPLACE INTO`` (as the miner does) in batched transactions; return the count."""
    connection = sqlite3.connect(path)
    count = 0
    try:
        create_schema(connection)
        # Generated data can be regenerated: trade durability for speed while filling the file
        # (no journal: each page is written once instead of once to the WAL and again at checkpoint).
        connection.execute("pragma journal_mode=off")
        connection.execute("pragma synchronous=off")
        connection.execute("pragma cache_size=-262144")
        pending: list[tuple] = []

        def flush() -> None:
            pending.sort()  # B-tree inserts in key order are several times faster
            with connection:
                connection.executemany("REPLACE INTO DataEntity VALUES (?,?,?,?,?,?,?)", pending)

        for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                flush()
                count += len(pending)
                pending.clear()
        if pending:
            flush()
            count += len(pending)
        connection.execute("pragma journal_mode=wal")  # as the miner leaves it
    finally:
        connection.close()
    return count


def create_miner_db(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    end: datetime = DEFAULT_END,
    days: float = DEFAULT_DAYS,
    x_fraction: float = 0.5,
    undecodable: int = 0,
) -> MinerDbSummary:
    """Create (or extend) a miner database at ``path`` with ``rows`` realistic rows.

    ``undecodable`` extra rows get content that is not valid post JSON, so tests can check they are
    skipped and reported; their URIs are returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    insert_rows(path, generate_rows(rows, seed=seed, end=end, days=days, x_fraction=x_fraction))
    bad: list[str] = []
    if undecodable:
        rng = random.Random(f"bad:{seed}")
        bad_rows = []
        for index in range(undecodable):
            when = end - timedelta(microseconds=rng.randrange(int(days * 86_400_000_000)))
            uri = f"https://x.com/broken/status/{seed}{index:08d}"
            body = [b"{not json", b'{"username": "@a"}', b"\xff\xfe garbage", b"[1, 2, 3]"][index % 4]
            bad_rows.append((uri, db_datetime(when), time_bucket_id(when), SOURCE_X, "NULL", body, len(body)))
            bad.append(uri)
        insert_rows(path, iter(bad_rows))
    return summarize(path, undecodable_uris=tuple(bad))


def summarize(path: Path, undecodable_uris: tuple[str, ...] = ()) -> MinerDbSummary:
    """Count what a database holds (a full scan of the small columns; fine for tests)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        total, x_rows, low, high = connection.execute(
            "SELECT COUNT(*), SUM(source = 2), MIN(datetime), MAX(datetime) FROM DataEntity"
        ).fetchone()
    finally:
        connection.close()
    return MinerDbSummary(
        path=Path(path),
        rows=total,
        x_rows=x_rows or 0,
        reddit_rows=total - (x_rows or 0),
        undecodable_uris=undecodable_uris,
        min_datetime=datetime.fromisoformat(low) if low else None,
        max_datetime=datetime.fromisoformat(high) if high else None,
    )


def add_rows(path: Path, rows: int, *, seed: int, at: datetime | None = None, **options) -> int:
    """Append ``rows`` new rows (new URIs via ``seed``), e.g. all at one timestamp with ``at``."""
    return insert_rows(Path(path), generate_rows(rows, seed=seed, at=at, **options))
