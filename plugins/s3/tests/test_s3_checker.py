"""The checker: every listing page, range reads only, integrity problems, and never another miner's data."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_core.chunks import write_chunk
from storage_core.layout import key_for, object_key
from storage_core.testing.data import make_batch, make_table, uris_of
from storage_core_s3 import plugin
from storage_core_s3.checker import Checker, RangeFile, parse_list_page
from storage_core_s3.options import S3Options


def _admin_put(deployment, key: str, data: bytes, *, sha256: str | None = None, checksum: bool = True) -> None:
    """Write an object as the bucket's admin (what a compromised or buggy writer could leave behind)."""
    extra: dict[str, Any] = {}
    if sha256 is not None:
        extra["Metadata"] = {"sha256": sha256}
    if checksum:
        extra["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
    deployment.seaweed.admin.put_object(Bucket=deployment.bucket, Key=key, Body=data, **extra)


def test_validation_over_many_pages_finds_uris_on_the_last_page(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=700, chunks=7, seed=601)
    receipt = plugin.storage_upload(fresh.context(miner), batch)
    assert len(fresh.keys()) == 7
    last_key = max(o.key for o in receipt.objects)
    last_file = next(f for f in batch.files if key_for(miner.ss58_address, f) == last_key)
    last_uris = pq.read_table(last_file.path, columns=["uri"]).column("uri").to_pylist()[-3:]
    result = plugin.storage_validate(fresh.context(keys["validator"], page_size=2), miner.ss58_address, tuple(last_uris))
    assert result.found == frozenset(last_uris)
    assert result.problems == ()
    # 4 pages of 2 keys: the URIs live only in the 7th object, on the last page.
    assert result.objects_scanned == 7
    all_uris = uris_of(batch)
    everything = plugin.storage_validate(fresh.context(keys["validator"], page_size=3), miner.ss58_address, tuple(all_uris))
    assert everything.found == frozenset(all_uris)


def test_validation_reads_a_small_part_of_large_files(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=60_000, chunks=2, seed=602)
    plugin.storage_upload(fresh.context(miner), batch)
    uris = uris_of(batch)
    asked = (uris[5], uris[-5])
    result = plugin.storage_validate(fresh.context(keys["validator"]), miner.ss58_address, asked)
    assert result.found == frozenset(asked)
    assert 0 < result.bytes_read < 0.35 * batch.total_bytes, (result.bytes_read, batch.total_bytes)
    assert result.requests < 20


def test_absent_uris_in_a_miner_without_objects(fresh, keys) -> None:
    result = plugin.storage_validate(fresh.context(keys["validator"]), keys["miner2"].ss58_address, ("https://x.com/a/status/1",))
    assert result.found == frozenset() and result.objects_scanned == 0 and result.requests >= 2


def test_corrupt_and_mismatched_objects_are_problems_and_do_not_count(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    hotkey = miner.ss58_address
    batch = make_batch(staging / "good", hotkey, rows=300, chunks=3, seed=603)
    receipt = plugin.storage_upload(fresh.context(miner), batch)
    garbage_key, swapped_key, _ = sorted(o.key for o in receipt.objects)
    # 1. garbage bytes under a valid name, with a recorded sha256 that matches the name (a lying writer)
    name_sha = next(o.sha256 for o in receipt.objects if o.key == garbage_key)
    _admin_put(fresh, garbage_key, b"PAR1 garbage that is not parquet PAR1", sha256=name_sha, checksum=False)
    # 2. another valid chunk (other rows) under the swapped name: its real checksum is not the name's
    other = write_chunk(make_table(100, "x", seed=604), "x", staging / "other")
    _admin_put(fresh, swapped_key, other.path.read_bytes())
    # 3. a valid chunk with the wrong schema (no storage_core metadata) under its own correct name
    table = pa.table({"uri": ["https://x.com/s/status/1"], "x": [1]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    bad_schema = sink.getvalue()
    bad_sha = hashlib.sha256(bad_schema).hexdigest()
    bad_key = object_key(hotkey, "x", "2026-11-09", bad_sha)
    _admin_put(fresh, bad_key, bad_schema, sha256=bad_sha)
    # 4. an object outside the key layout, under the miner's prefix
    odd_key = f"hotkey={hotkey}/notes.txt"
    _admin_put(fresh, odd_key, b"hello")

    uris = uris_of(batch) + ["https://x.com/s/status/1"] + pq.read_table(other.path, columns=["uri"]).column("uri").to_pylist()
    result = plugin.storage_validate(fresh.context(keys["validator"]), hotkey, tuple(uris))
    problems = {p.key: p.problem for p in result.problems}
    assert set(problems) == {garbage_key, swapped_key, bad_key, odd_key}, problems
    assert "checksum" in problems[garbage_key] or "unreadable" in problems[garbage_key]
    assert "checksum" in problems[swapped_key]
    assert "schema" in problems[bad_key]
    assert "layout" in problems[odd_key]
    intact = next(f for f in batch.files if key_for(hotkey, f) not in problems)
    intact_uris = set(pq.read_table(intact.path, columns=["uri"]).column("uri").to_pylist())
    assert result.found == frozenset(intact_uris)


def test_object_without_recorded_checksum_is_hashed_in_full(fresh, keys, staging) -> None:
    hotkey = keys["miner0"].ss58_address
    staged = make_batch(staging, hotkey, rows=200, seed=605).files[0]
    _admin_put(fresh, key_for(hotkey, staged), staged.path.read_bytes(), checksum=False)  # no sha256 anywhere
    uris = uris_of(make_batch(staging / "again", hotkey, rows=200, seed=605))
    result = plugin.storage_validate(fresh.context(keys["validator"]), hotkey, tuple(uris[:2]))
    assert result.found == frozenset(uris[:2]) and result.problems == ()
    assert result.bytes_read >= staged.size_bytes  # the whole object was read once, to hash it


def test_full_checksum_mode_detects_a_lying_recorded_checksum(fresh, keys, staging) -> None:
    hotkey = keys["miner0"].ss58_address
    staged = make_batch(staging, hotkey, rows=200, seed=606).files[0]
    other = write_chunk(make_table(150, "x", seed=607, day=staged.min_datetime.date()), "x", staging / "o")
    # the other file's bytes, but metadata claiming the name's sha256 and no store checksum
    _admin_put(fresh, key_for(hotkey, staged), other.path.read_bytes(), sha256=staged.sha256, checksum=False)
    other_uris = pq.read_table(other.path, columns=["uri"]).column("uri").to_pylist()
    trusting = plugin.storage_validate(fresh.context(keys["validator"]), hotkey, tuple(other_uris[:2]))
    assert trusting.found == frozenset(other_uris[:2])  # "recorded" trusts the metadata...
    auditing = plugin.storage_validate(fresh.context(keys["validator"], checksum_check="full"), hotkey, tuple(other_uris[:2]))
    assert auditing.found == frozenset() and [p.key for p in auditing.problems] == [key_for(hotkey, staged)]


def test_other_miners_objects_never_count(fresh, keys, staging) -> None:
    victim, thief = keys["miner0"], keys["miner1"]
    batch = make_batch(staging, victim.ss58_address, rows=100, seed=608)
    plugin.storage_upload(fresh.context(victim), batch)
    result = plugin.storage_validate(fresh.context(keys["validator"]), thief.ss58_address, tuple(uris_of(batch)))
    assert result.found == frozenset() and result.objects_scanned == 0


def test_expired_read_urls_are_renewed(deploy, keys, staging) -> None:
    deployment = deploy(read_grant_ttl=2)
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=100, seed=609)
    plugin.storage_upload(deployment.context(miner), batch)

    class SlowFirstObjectRead(httpx.Client):
        slept = False

        def get(self, url: Any, **kwargs: Any) -> httpx.Response:
            if "list-type" not in str(url) and not self.slept:
                SlowFirstObjectRead.slept = True
                time.sleep(3)  # the read grant (2 s) expires meanwhile
            return super().get(url, **kwargs)

    options = S3Options.from_mapping(deployment.context(keys["validator"]).options)
    with SlowFirstObjectRead() as http:
        result = Checker(options, keys["validator"], http=http).validate(miner.ss58_address, tuple(uris_of(batch)[:2]))
    assert SlowFirstObjectRead.slept
    assert result.found == frozenset(uris_of(batch)[:2])


def test_validate_refuses_a_bad_hotkey(shared, keys) -> None:
    with pytest.raises(Exception, match="not an ss58 hotkey"):
        plugin.storage_validate(shared.context(keys["validator"]), "../etc", ("u",))


def test_range_file_serves_pyarrow_from_ranges(tmp_path: Path) -> None:
    table = make_table(5_000, "x", seed=610)
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=1000)
    data = path.read_bytes()
    calls: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        calls.append((start, end))
        return data[start:end]

    reader = RangeFile(fetch, len(data), data[-4096:])
    parquet = pq.ParquetFile(reader, pre_buffer=False)
    assert parquet.read(columns=["uri"]).column("uri").to_pylist() == table.column("uri").to_pylist()
    assert sum(end - start for start, end in calls) < len(data) / 2


def test_parse_list_page() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>hotkey=a/</Prefix>
<KeyCount>1</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>hotkey=a/x.parquet</Key><Size>12</Size><ETag>"abc"</ETag></Contents>
<NextContinuationToken>tok/en==</NextContinuationToken></ListBucketResult>"""
    page = parse_list_page(body)
    assert page.next_token == "tok/en==" and page.objects[0].key == "hotkey=a/x.parquet" and page.objects[0].size == 12
    with pytest.raises(Exception, match="not valid XML"):
        parse_list_page(b"<not xml")
