"""Synthetic batches in the core schema, for the conformance kit and backend tests."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from storage_core.chunks import write_chunk
from storage_core.schema import schema_for
from storage_core.values import UploadBatch

_WORDS = "data universe miner validator subnet bittensor storage rollout parquet chain stake tao".split()


def recent_day(days_ago: int = 1) -> date:
    """A UTC day inside every freshness window: test data that validators must accept as fresh."""
    return datetime.now(UTC).date() - timedelta(days=days_ago)


def make_table(rows: int, source: str = "x", seed: int = 0, day: date | None = None) -> pa.Table:
    """``rows`` rows of one source on one UTC day (default: yesterday); URIs are unique per (source, seed, index)."""
    day = day or recent_day()
    rng = random.Random(f"{source}:{seed}")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    times = sorted(start + timedelta(microseconds=rng.randrange(86_400_000_000)) for _ in range(rows))
    texts = [" ".join(rng.choices(_WORDS, k=rng.randrange(5, 40))) for _ in range(rows)]
    users = [f"user{rng.randrange(1000)}" for _ in range(rows)]
    if source == "x":
        uris = [f"https://x.com/{users[i]}/status/{seed}{i:09d}" for i in range(rows)]
        columns = {
            "username": users,
            "text": texts,
            "url": uris,
            "timestamp": times,
            "tweet_hashtags": [[f"#{rng.choice(_WORDS)}"] for _ in range(rows)],
        }
        label = "#bittensor"
    elif source == "reddit":
        uris = [f"https://www.reddit.com/r/bittensor_/comments/s{seed}x{i}/" for i in range(rows)]
        columns = {
            "id": [f"t3_s{seed}x{i}" for i in range(rows)],
            "url": uris,
            "username": users,
            "community_name": ["r/bittensor_"] * rows,
            "body": texts,
            "title": [t[:60] for t in texts],
            "created_at": times,
            "data_type": ["post"] * rows,
            "parent_id": [None] * rows,
        }
        label = "r/bittensor_"
    else:
        raise ValueError(f"unknown source {source!r}")
    common = {
        "uri": uris,
        "datetime": times,
        "source": [source] * rows,
        "label": [label] * rows,
        "content_size_bytes": [len(t) + 200 for t in texts],
    }
    schema = schema_for(source)
    given = {**common, **columns}
    return pa.table({field.name: given.get(field.name, pa.nulls(rows, field.type)) for field in schema},
                    schema=schema)


def make_batch(
    directory: Path,
    hotkey: str,
    rows: int = 1_000,
    source: str = "x",
    seed: int = 0,
    chunks: int = 1,
    round_id: str = "test",
) -> UploadBatch:
    """A batch of ``chunks`` files (one day each, the last ones before today) with ``rows`` rows in all."""
    files = []
    first_day = recent_day(chunks)
    per_chunk = max(1, rows // chunks)
    for index in range(chunks):
        count = per_chunk if index < chunks - 1 else rows - per_chunk * (chunks - 1)
        table = make_table(count, source, seed=seed * 1000 + index, day=first_day + timedelta(days=index))
        files.append(write_chunk(table, source, Path(directory)))
    return UploadBatch(miner_hotkey=hotkey, files=tuple(files), round_id=round_id)


def uris_of(batch: UploadBatch) -> list[str]:
    """Every URI in a batch (reads only the uri column)."""
    import pyarrow.parquet as pq

    uris: list[str] = []
    for staged in batch.files:
        uris.extend(pq.read_table(staged.path, columns=["uri"]).column("uri").to_pylist())
    return uris
