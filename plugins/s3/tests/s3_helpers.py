"""Helpers of the S3 plugin's tests: raw signed requests, chunk files, and validation through the core."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from storage_core.chain.http_auth import sign_request
from storage_core.chunks import write_chunk
from storage_core.schema import schema_for
from storage_core.testing.data import recent_day
from storage_core.values import BackendContext, StagedFile, ValidationResult
from storage_core.verify import CheckSettings, check_claims
from storage_core_s3 import plugin


def validate(context: BackendContext, miner_hotkey: str, uris: Any, **settings: Any) -> ValidationResult:
    """What the dispatcher does for one backend: the plugin's store, the core's checks, the store closed after."""
    store = plugin.storage_reader(context, miner_hotkey)
    try:
        return check_claims(store, "s3", miner_hotkey, tuple(uris), CheckSettings(**settings))
    finally:
        store.close()


def admin_put(deployment: Any, key: str, data: bytes, *, sha256: str | None = None, checksum: bool = True,
              **extra: Any) -> None:
    """Write an object as the bucket's admin: raw bytes under any key and headers, as a hostile miner's could be."""
    if sha256 is not None:
        extra["Metadata"] = {"sha256": sha256}
    if checksum:
        extra["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
    deployment.seaweed.admin.put_object(Bucket=deployment.bucket, Key=key, Body=data, **extra)


def signed_post(base_url: str, path: str, payload: Any, signer: Any, receiver: str, *,
                nonce_ns: int | None = None, raw: bytes | None = None) -> tuple[httpx.Response, dict[str, str], bytes]:
    """POST ``payload`` (JSON, or ``raw`` bytes) signed by ``signer``; returns the response, headers and body."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = sign_request(signer, "POST", path, body, receiver, nonce_ns=nonce_ns)
    response = httpx.post(base_url + path, content=body, headers=headers, timeout=30)
    return response, headers, body


def grant_request(staged: StagedFile, **changes: Any) -> dict[str, Any]:
    return {"sha256": staged.sha256, "size": staged.size_bytes, "source": staged.source, "date": staged.date, **changes}


def post_upload(grant: dict[str, Any], content: bytes, fields: dict[str, str] | None = None) -> httpx.Response:
    """Send ``content`` to S3 with a grant's presigned POST (optionally with altered form fields)."""
    return httpx.post(grant["url"], data=fields or grant["fields"], files={"file": ("chunk.parquet", content)}, timeout=60)


def big_chunk(directory: Path, megabytes: float, seed: int = 0, source: str = "x") -> StagedFile:
    """A valid chunk of about ``megabytes`` MB of random hex text (for multipart paths; sized for zstd)."""
    rows = max(1, int(megabytes * 1024 * 1024 / 1150))
    yesterday = recent_day()
    day = datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=UTC)
    times = [day + timedelta(seconds=i % 86_000) for i in range(rows)]
    uris = [f"https://x.com/big{seed}/status/{i:012d}" for i in range(rows)]
    texts = [os.urandom(1024).hex() for _ in range(rows)]
    columns: dict[str, Any] = {
        "uri": uris,
        "datetime": times,
        "source": [source] * rows,
        "label": ["#big"] * rows,
        "content_size_bytes": [2048] * rows,
        "username": [f"big{seed}"] * rows,
        "text": texts,
        "url": uris,
        "timestamp": times,
        "tweet_hashtags": [["#big"]] * rows,
    }
    schema = schema_for(source)
    for field in schema:  # columns this helper does not fill (the schema grows): nulls
        columns.setdefault(field.name, pa.nulls(rows, field.type))
    table = pa.Table.from_pydict(columns, schema=schema)
    return write_chunk(table, source, directory, compression="zstd")


def wait_until(deadline_s: float) -> None:
    time.sleep(max(0.0, deadline_s - time.time()))
