"""The S3 store under the core's checks: every listing page, raw range reads only, each object's problems kept
to that object, and the store's own failures reported as "could not validate"."""

from __future__ import annotations

import gzip
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_core.chunks import write_chunk
from storage_core.config import parse_config
from storage_core.dispatch import UNKNOWN, Dispatcher
from storage_core.errors import BackendError
from storage_core.layout import key_for, object_key
from storage_core.plugins import PluginRegistry
from storage_core.testing.data import make_batch, make_table, recent_day, uris_of
from storage_core.testing.faultproxy import fault_proxy
from storage_core.verify import ObjectError, ObjectStore, check_claims
from storage_core_s3 import plugin
from storage_core_s3.checker import S3Store, parse_list_page
from storage_core_s3.client import TransferError
from storage_core_s3.options import S3Options
from s3_helpers import admin_put, validate


def _uris(path: Path) -> list[str]:
    return pq.read_table(path, columns=["uri"]).column("uri").to_pylist()


def test_validation_over_many_pages_finds_uris_on_the_last_page(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=700, chunks=7, seed=601)
    receipt = plugin.storage_upload(fresh.context(miner), batch)
    assert len(fresh.keys()) == 7
    last_key = max(o.key for o in receipt.objects)
    last_file = next(f for f in batch.files if key_for(miner.ss58_address, f) == last_key)
    last_uris = _uris(last_file.path)[-3:]
    result = validate(fresh.context(keys["validator"], page_size=2), miner.ss58_address, last_uris)
    assert result.found == frozenset(last_uris)
    assert result.problems == ()
    # 4 pages of 2 keys: every object is listed and opened, the URIs live only in the 7th.
    assert result.objects_scanned == 7
    all_uris = uris_of(batch)
    everything = validate(fresh.context(keys["validator"], page_size=3), miner.ss58_address, all_uris)
    assert everything.found == frozenset(all_uris)


def test_validation_reads_a_small_part_of_large_files(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=60_000, chunks=2, seed=602)
    plugin.storage_upload(fresh.context(miner), batch)
    uris = uris_of(batch)
    asked = (uris[5], uris[-5])
    # Finding URIs: footers and the uri column chunks whose statistics admit them, nothing else.
    lookup = validate(fresh.context(keys["validator"]), miner.ss58_address, asked, full_checks=0)
    assert lookup.found == frozenset(asked) and lookup.rows == ()
    assert 0 < lookup.bytes_read < 0.15 * batch.total_bytes, (lookup.bytes_read, batch.total_bytes)
    assert lookup.requests < 20, lookup.requests
    # The core's full-row checks of sampled URIs add one whole row group (of 8192 rows) each.
    checked = validate(fresh.context(keys["validator"]), miner.ss58_address, asked)
    assert checked.found == frozenset(asked) and len(checked.rows) == 2
    assert checked.bytes_read < 0.5 * batch.total_bytes, (checked.bytes_read, batch.total_bytes)


def test_absent_uris_in_a_miner_without_objects(fresh, keys) -> None:
    result = validate(fresh.context(keys["validator"]), keys["miner2"].ss58_address, ("https://x.com/a/status/1",))
    assert result.found == frozenset() and result.objects_scanned == 0 and result.requests >= 2


def test_store_is_an_object_store_that_reads_raw_ranges(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=300, seed=611)
    plugin.storage_upload(fresh.context(miner), batch)
    staged = batch.files[0]
    data = staged.path.read_bytes()
    with plugin.storage_reader(fresh.context(keys["validator"]), miner.ss58_address) as store:
        assert isinstance(store, ObjectStore)
        listed = list(store.list_objects())
        assert [(o.key, o.size) for o in listed] == [(key_for(miner.ss58_address, staged), len(data))]
        tail = store.read_tail(listed[0].key, 100)
        assert tail.data == data[-100:] and tail.size == len(data) and tail.sha256 == staged.sha256
        whole = store.read_tail(listed[0].key, len(data) + 50)  # more than the object: the whole object
        assert whole.data == data and whole.size == len(data)
        assert store.read_range(listed[0].key, 10, 110) == data[10:110]
        assert store.read_range(listed[0].key, 5, 5) == b""
        assert store.meter.requests >= 5 and store.meter.bytes_read >= len(data) + 200
        with pytest.raises(ObjectError, match="416"):
            store.read_range(listed[0].key, len(data) + 10, len(data) + 20)
        with pytest.raises(ObjectError, match="asked for bytes"):  # past the end: not the range asked for
            store.read_range(listed[0].key, len(data) - 10, len(data) + 10)
        with pytest.raises(ObjectError, match="prefix"):
            store.read_tail(f"hotkey={keys['miner1'].ss58_address}/source=x/date=2026-11-01/{'0' * 32}.parquet", 10)
        assert store.usage() == (1, len(data))


def test_corrupt_and_mismatched_objects_are_problems_and_do_not_count(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    hotkey = miner.ss58_address
    batch = make_batch(staging / "good", hotkey, rows=300, chunks=3, seed=603)
    receipt = plugin.storage_upload(fresh.context(miner), batch)
    garbage_key, swapped_key, _ = sorted(o.key for o in receipt.objects)
    # 1. garbage bytes under a valid name, with a recorded sha256 that matches the name (a lying writer)
    name_sha = next(o.sha256 for o in receipt.objects if o.key == garbage_key)
    admin_put(fresh, garbage_key, b"PAR1 garbage that is not parquet PAR1", sha256=name_sha, checksum=False)
    # 2. another valid chunk (other rows) under the swapped name: its real checksum is not the name's
    other = write_chunk(make_table(100, "x", seed=604), "x", staging / "other")
    admin_put(fresh, swapped_key, other.path.read_bytes())
    # 3. a parquet file with the wrong schema under its own correct name
    sink = io.BytesIO()
    pq.write_table(pa.table({"uri": ["https://x.com/s/status/1"], "x": [1]}), sink)
    bad_schema = sink.getvalue()
    bad_sha = hashlib.sha256(bad_schema).hexdigest()
    bad_key = object_key(hotkey, "x", recent_day().isoformat(), bad_sha)
    admin_put(fresh, bad_key, bad_schema, sha256=bad_sha)
    # 4. a parquet object outside the key layout, under the miner's prefix
    odd_key = f"hotkey={hotkey}/source=x/date={recent_day().isoformat()}/notes.parquet"
    admin_put(fresh, odd_key, b"hello")

    uris = uris_of(batch) + ["https://x.com/s/status/1"] + _uris(other.path)
    result = validate(fresh.context(keys["validator"]), hotkey, uris)
    problems = {p.key: p.problem for p in result.problems}
    assert set(problems) == {garbage_key, swapped_key, bad_key, odd_key}, problems
    assert "footer" in problems[garbage_key], problems[garbage_key]
    assert "does not match the name" in problems[swapped_key], problems[swapped_key]
    assert problems[bad_key].startswith("schema"), problems[bad_key]
    assert "layout" in problems[odd_key]
    intact = next(f for f in batch.files if key_for(hotkey, f) not in problems)
    assert result.found == frozenset(_uris(intact.path))


def test_object_without_recorded_checksum_is_hashed_in_full(fresh, keys, staging) -> None:
    hotkey = keys["miner0"].ss58_address
    staged = make_batch(staging, hotkey, rows=200, seed=605).files[0]
    admin_put(fresh, key_for(hotkey, staged), staged.path.read_bytes(), checksum=False)  # no sha256 anywhere
    uris = _uris(staged.path)
    result = validate(fresh.context(keys["validator"]), hotkey, uris[:2])
    assert result.found == frozenset(uris[:2]) and result.problems == ()
    assert result.bytes_read >= staged.size_bytes  # the whole object was read once, to hash it


def test_full_checksum_mode_detects_a_lying_recorded_checksum(fresh, keys, staging) -> None:
    hotkey = keys["miner0"].ss58_address
    staged = make_batch(staging, hotkey, rows=200, seed=606).files[0]
    other = write_chunk(make_table(150, "x", seed=607, day=staged.min_datetime.date()), "x", staging / "o")
    # the other file's bytes, but metadata claiming the name's sha256 and no store checksum
    admin_put(fresh, key_for(hotkey, staged), other.path.read_bytes(), sha256=staged.sha256, checksum=False)
    other_uris = _uris(other.path)
    trusting = validate(fresh.context(keys["validator"]), hotkey, other_uris[:2])
    assert trusting.found == frozenset(other_uris[:2])  # "recorded" trusts the metadata...
    auditing = validate(fresh.context(keys["validator"], checksum_check="full"), hotkey, other_uris[:2])
    assert auditing.found == frozenset() and [p.key for p in auditing.problems] == [key_for(hotkey, staged)]


def test_unparsable_recorded_checksum_is_the_objects_problem(fresh, keys, staging) -> None:
    hotkey = keys["miner0"].ss58_address
    batch = make_batch(staging, hotkey, rows=200, chunks=2, seed=612)
    lying, honest = batch.files
    plugin.storage_upload(fresh.context(keys["miner0"]), batch)
    admin_put(fresh, key_for(hotkey, lying), lying.path.read_bytes(), sha256=lying.sha256[:32], checksum=False)
    result = validate(fresh.context(keys["validator"]), hotkey, uris_of(batch))
    assert {p.key: p.problem for p in result.problems}.keys() == {key_for(hotkey, lying)}
    assert "x-amz-meta-sha256" in result.problems[0].problem
    assert result.found == frozenset(_uris(honest.path))


def test_other_miners_objects_never_count(fresh, keys, staging) -> None:
    victim, thief = keys["miner0"], keys["miner1"]
    batch = make_batch(staging, victim.ss58_address, rows=100, seed=608)
    plugin.storage_upload(fresh.context(victim), batch)
    result = validate(fresh.context(keys["validator"]), thief.ss58_address, uris_of(batch))
    assert result.found == frozenset() and result.objects_scanned == 0


def test_content_encoded_objects_are_invalid_and_the_rest_still_validates(fresh, keys, staging) -> None:
    """Issue 19 item 1: an object stored with ``Content-Encoding: gzip`` is read raw and refused, alone."""
    miner = keys["miner0"]
    hotkey = miner.ss58_address
    honest = make_batch(staging / "honest", hotkey, rows=300, chunks=2, seed=613)
    plugin.storage_upload(fresh.context(miner), honest)
    day = recent_day(3)
    # (a) a valid chunk under its content-address name, labelled gzip: a decoding reader fails on the whole check
    labelled = write_chunk(make_table(100, "x", seed=614, day=day), "x", staging / "labelled")
    labelled_key = object_key(hotkey, "x", day.isoformat(), labelled.sha256)
    admin_put(fresh, labelled_key, labelled.path.read_bytes(), sha256=labelled.sha256, ContentEncoding="gzip")
    # (b) a gzipped chunk named after its stored (compressed) bytes: a decoding reader would see other bytes
    inner = write_chunk(make_table(100, "x", seed=615, day=day), "x", staging / "inner")
    packed = gzip.compress(inner.path.read_bytes())
    packed_sha = hashlib.sha256(packed).hexdigest()
    packed_key = object_key(hotkey, "x", day.isoformat(), packed_sha)
    admin_put(fresh, packed_key, packed, sha256=packed_sha, ContentEncoding="gzip")
    assert fresh.seaweed.admin.head_object(Bucket=fresh.bucket, Key=packed_key)["ContentEncoding"] == "gzip"

    planted = _uris(labelled.path) + _uris(inner.path)
    result = validate(fresh.context(keys["validator"]), hotkey, uris_of(honest) + planted)  # no exception
    assert result.found == frozenset(uris_of(honest))
    assert not result.found & set(planted)
    problems = {p.key: p.problem for p in result.problems}
    assert set(problems) == {labelled_key, packed_key}, problems
    assert all("Content-Encoding 'gzip'" in problem for problem in problems.values())


class _Body(httpx.SyncByteStream):
    """A body the client streams (httpx reads a ``content=`` body at once, and the store reads raw streams)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


class _Tamper(httpx.BaseTransport):
    """A transport that alters S3's answers to object GETs of one key (headers or body), as a broken path could."""

    def __init__(self, key: str, change: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.key, self.change = key, change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "list-type" in str(request.url) or self.key.rsplit("/", 1)[1] not in request.url.path:
            return response
        body = response.read()
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-range")}
        content_range = response.headers.get("content-range", "")
        if self.change == "short":
            body = body[:-1]
        elif self.change == "shifted":
            first, rest = content_range[len("bytes "):].split("-", 1)
            content_range = f"bytes {int(first) + 1}-{rest}"
        elif self.change == "garbled":
            content_range = "bytes */garbage"
        elif self.change == "not-found":
            return httpx.Response(404, stream=_Body(b"<Error><Code>NoSuchKey</Code></Error>"))
        elif self.change == "conflict":
            return httpx.Response(409, stream=_Body(b"<Error><Code>OperationAborted</Code></Error>"))
        if content_range:
            headers["content-range"] = content_range
        return httpx.Response(response.status_code, headers=headers, stream=_Body(body))

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("change", "needle"), [
    ("short", "a body of"), ("shifted", "asked for bytes"), ("garbled", "unparsable Content-Range"),
    ("not-found", "no such object"), ("conflict", "HTTP 409"),
])
def test_an_odd_answer_for_one_object_is_that_objects_problem(fresh, keys, staging, change, needle) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=200, chunks=2, seed=616)
    plugin.storage_upload(fresh.context(miner), batch)
    odd, fine = batch.files
    odd_key = key_for(miner.ss58_address, odd)
    options = S3Options.from_mapping(fresh.context(keys["validator"]).options)
    with httpx.Client(transport=_Tamper(odd_key, change)) as http, \
            S3Store(options, keys["validator"], miner.ss58_address, http=http) as store:
        result = check_claims(store, "s3", miner.ss58_address, uris_of(batch))
    assert [p.key for p in result.problems] == [odd_key]
    assert needle in result.problems[0].problem, result.problems[0].problem
    assert result.found == frozenset(_uris(fine.path))


def test_object_deleted_after_listing_is_its_own_problem(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=200, chunks=2, seed=617)
    plugin.storage_upload(fresh.context(miner), batch)
    with plugin.storage_reader(fresh.context(keys["validator"]), miner.ss58_address) as store:
        gone = list(store.list_objects())[0].key
        fresh.seaweed.admin.delete_object(Bucket=fresh.bucket, Key=gone)
        with pytest.raises(ObjectError, match="no such object"):
            store.read_tail(gone, 100)


def test_expired_read_urls_are_renewed(deploy, keys, staging) -> None:
    deployment = deploy(read_grant_ttl=2)
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=100, seed=609)
    plugin.storage_upload(deployment.context(miner), batch)

    class SlowFirstObjectRead(httpx.Client):
        slept = False
        statuses: list[int] = []

        def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            is_read = "X-Amz-Signature" in str(request.url) and "list-type" not in str(request.url)
            if is_read and not self.slept:
                SlowFirstObjectRead.slept = True
                time.sleep(3)  # the read grant (2 s) expires meanwhile: S3 answers 403, the store renews
            response = super().send(request, **kwargs)
            if is_read:
                self.statuses.append(response.status_code)
            return response

    options = S3Options.from_mapping(deployment.context(keys["validator"]).options)
    with SlowFirstObjectRead() as http, S3Store(options, keys["validator"], miner.ss58_address, http=http) as store:
        result = check_claims(store, "s3", miner.ss58_address, uris_of(batch)[:2])
    assert SlowFirstObjectRead.slept and SlowFirstObjectRead.statuses[0] == 403 and 206 in SlowFirstObjectRead.statuses
    assert result.found == frozenset(uris_of(batch)[:2]) and result.problems == ()


def test_a_refused_fresh_grant_is_the_backends_failure(fresh, keys, staging) -> None:
    """S3 refusing a GET the grant service just signed says nothing about the miner: "could not validate"."""
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=100, seed=618)
    plugin.storage_upload(fresh.context(miner), batch)

    class BadSignatures(httpx.Client):
        def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            if "list-type" not in str(request.url) and "X-Amz-Signature" in str(request.url):
                request = self.build_request("GET", str(request.url).replace("X-Amz-Signature=", "X-Amz-Signature=0"),
                                             headers=request.headers)
            return super().send(request, **kwargs)

    options = S3Options.from_mapping(fresh.context(keys["validator"]).options)
    with BadSignatures() as http, S3Store(options, keys["validator"], miner.ss58_address, http=http) as store:
        with pytest.raises(TransferError, match="403 on a fresh read grant"):
            check_claims(store, "s3", miner.ss58_address, uris_of(batch))


def test_grant_service_down_means_could_not_validate(deploy, keys, staging) -> None:
    deployment = deploy()
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=100, seed=619)
    plugin.storage_upload(deployment.context(miner), batch)
    deployment.server.stop()
    context = deployment.context(keys["validator"], max_attempts=2)
    with pytest.raises(BackendError, match="gave up after 2 attempts"):
        validate(context, miner.ss58_address, uris_of(batch))
    # Through the dispatcher: the backend's part failed, so every URI is "unknown", never "invalid".
    config = parse_config({"backends": {"s3": {"enabled": True, "rollout_percent": 100,
                                               "options": dict(context.options)}}})
    registry = PluginRegistry(points=[], environ={}, extra_plugins={"s3": plugin})
    report = Dispatcher(registry, config, lambda _backend: context).validate(miner.ss58_address, uris_of(batch)[:3])
    assert [o.status for o in report.outcomes] == ["failed"]
    assert set(report.verdicts.values()) == {UNKNOWN}
    assert "could not validate" in report.reason(uris_of(batch)[0])


def test_s3_failing_after_retries_means_could_not_validate(deploy, keys, staging, seaweed) -> None:
    with fault_proxy("127.0.0.1", int(seaweed.endpoint_url.rsplit(":", 1)[1])) as proxy:
        deployment = deploy(presign_endpoint_url=proxy.url)
        miner = keys["miner0"]
        batch = make_batch(staging, miner.ss58_address, rows=100, seed=620)
        plugin.storage_upload(deployment.context(miner), batch)
        context = deployment.context(keys["validator"], max_attempts=3)
        proxy.fail_next(2, "error", error_status=503)
        assert validate(context, miner.ss58_address, uris_of(batch)).found == frozenset(uris_of(batch))
        proxy.set_mode("error", error_status=503)
        with pytest.raises(TransferError, match="503"):
            validate(context, miner.ss58_address, uris_of(batch))


def test_reader_refuses_a_bad_hotkey(shared, keys) -> None:
    with pytest.raises(Exception, match="not an ss58 hotkey"):
        plugin.storage_reader(shared.context(keys["validator"]), "../etc")


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
    with pytest.raises(TransferError, match="size"):
        parse_list_page(body.replace(b"<Size>12</Size>", b"<Size>-1</Size>"))
