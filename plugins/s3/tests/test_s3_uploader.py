"""The uploader: multipart, streaming, retries with back-off through injected faults, receipts."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import attrs
import pytest

from storage_core.backoff import Backoff as CoreBackoff
from storage_core.errors import BackendError, InvalidBatchError
from storage_core.layout import key_for
from storage_core.testing.data import make_batch, uris_of
from storage_core.testing.faultproxy import fault_proxy
from storage_core.values import UploadBatch
from storage_core_s3 import plugin
from storage_core_s3.client import Backoff
from storage_core_s3.options import S3Options
from s3_helpers import big_chunk, validate


def test_large_file_goes_up_in_parts_and_round_trips(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    staged = big_chunk(staging, 12, seed=701)
    batch = UploadBatch(miner_hotkey=miner.ss58_address, files=(staged,))
    context = fresh.context(miner, multipart_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024, concurrency=3)
    receipt = plugin.storage_upload(context, batch)
    stored = receipt.objects[0]
    assert stored.key == key_for(miner.ss58_address, staged) and stored.etag and stored.etag.endswith("-3")
    body = fresh.seaweed.admin.get_object(Bucket=fresh.bucket, Key=stored.key)
    assert body["ContentLength"] == staged.size_bytes and body["Metadata"]["sha256"] == staged.sha256
    assert body["Body"].read() == staged.path.read_bytes()
    again = plugin.storage_upload(context, batch)
    assert again.objects[0].already_present
    found = validate(fresh.context(keys["validator"]), miner.ss58_address,
                                    ("https://x.com/big701/status/000000000007",))
    assert len(found.found) == 1


def test_upload_streams_without_whole_file_buffers(fresh, keys, staging) -> None:
    miner = keys["miner0"]
    staged = big_chunk(staging, 30, seed=702)
    batch = UploadBatch(miner_hotkey=miner.ss58_address, files=(staged,))
    for round_index, threshold in enumerate((64 * 1024 * 1024, 5 * 1024 * 1024)):  # one POST, then 5 MiB parts
        if round_index:
            fresh.seaweed.admin.delete_object(Bucket=fresh.bucket, Key=key_for(miner.ss58_address, staged))
        context = fresh.context(miner, multipart_threshold=threshold, part_size=5 * 1024 * 1024, concurrency=2)
        tracemalloc.start()
        try:
            receipt = plugin.storage_upload(context, batch)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert not receipt.objects[0].already_present
        assert peak < min(10 * 1024 * 1024, staged.size_bytes / 3), f"peak {peak} B for a {staged.size_bytes}-byte file"


def test_s3_errors_and_dropped_connections_are_retried(deploy, keys, staging, seaweed) -> None:
    with fault_proxy("127.0.0.1", int(seaweed.endpoint_url.rsplit(":", 1)[1])) as proxy:
        deployment = deploy(presign_endpoint_url=proxy.url)
        miner = keys["miner0"]
        batch = make_batch(staging, miner.ss58_address, rows=400, chunks=2, seed=704)
        proxy.fail_next(3, "error", error_status=503)
        receipt = plugin.storage_upload(deployment.context(miner, concurrency=1), batch)
        assert len(receipt.objects) == 2 and proxy.connections >= 4  # 3 refused, then a kept-alive one
        batch2 = make_batch(staging / "2", miner.ss58_address, rows=400, seed=705)
        proxy.fail_next(2, "drop", drop_after=10)
        assert plugin.storage_upload(deployment.context(miner), batch2).objects[0].etag
        assert set(deployment.keys()) == {o.key for o in receipt.objects} | {key_for(miner.ss58_address, batch2.files[0])}


def test_grant_service_outage_is_retried_then_reported(fresh, keys, staging) -> None:
    port = int(fresh.url.rsplit(":", 1)[1])
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=100, seed=706)
    with fault_proxy("127.0.0.1", port) as proxy:
        context = fresh.context(miner, grant_url=proxy.url, grant_hotkey=keys["service"].ss58_address, max_attempts=4)
        proxy.fail_next(2, "refuse")
        assert len(plugin.storage_upload(context, batch).objects) == 1
        proxy.set_mode("error", error_status=503)
        batch2 = make_batch(staging / "2", miner.ss58_address, rows=100, seed=707)
        with pytest.raises(BackendError, match="gave up after 4 attempts") as raised:
            plugin.storage_upload(context, batch2)
        assert raised.value.retryable
        assert batch2.files[0].path.name in str(raised.value)
    assert key_for(miner.ss58_address, batch2.files[0]) not in fresh.keys()


def test_refusals_are_not_retried(fresh, keys, staging) -> None:
    outsider = keys["outsider"]
    batch = make_batch(staging, outsider.ss58_address, rows=50, seed=708)
    with pytest.raises(BackendError, match="not registered") as raised:
        plugin.storage_upload(fresh.context(outsider, max_attempts=5, backoff_base=5), batch)
    assert not raised.value.retryable


def test_batch_of_another_hotkey_is_refused_before_any_request(fresh, keys, staging) -> None:
    batch = make_batch(staging, keys["miner1"].ss58_address, rows=50, seed=709)
    with pytest.raises(InvalidBatchError, match="signing hotkey"):
        plugin.storage_upload(fresh.context(keys["miner0"]), batch)
    assert fresh.keys() == []


def test_missing_signer_is_a_clear_error(fresh, keys, staging) -> None:
    batch = make_batch(staging, keys["miner0"].ss58_address, rows=50, seed=710)
    context = attrs.evolve(fresh.context(keys["miner0"]), signer=None)
    with pytest.raises(Exception, match="hotkey"):
        plugin.storage_upload(context, batch)


def test_concurrent_uploads_of_many_files(shared, keys, staging) -> None:
    miner = keys["miner1"]
    batch = make_batch(staging, miner.ss58_address, rows=2_000, chunks=12, seed=711)
    receipt = plugin.storage_upload(shared.context(miner, concurrency=6), batch)
    assert [o.sha256 for o in receipt.objects] == [f.sha256 for f in batch.files]
    assert all(o.etag for o in receipt.objects)
    result = validate(shared.context(keys["validator"], concurrency=6), miner.ss58_address, tuple(uris_of(batch)))
    assert len(result.found) == 2_000


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({}, "options.bucket'"),
        ({"bucket": "sn13"}, "options.grant_url'"),
        ({"bucket": "sn13", "grant_url": "ftp://x"}, "http"),
        ({"bucket": "Not_A_Bucket", "grant_url": "http://x"}, "not a valid bucket name"),
        ({"bucket": "sn13", "grant_url": "http://x", "concurrency": "many"}, "options.concurrency'"),
        ({"bucket": "sn13", "grant_url": "http://x", "part_size": 1024}, "options.part_size'"),
        ({"bucket": "sn13", "grant_url": "http://x", "page_size": 5000}, "options.page_size'"),
        ({"bucket": "sn13", "grant_url": "http://x", "checksum_check": "maybe"}, "options.checksum_check'"),
        ({"bucket": "sn13", "grant_url": "http://x", "grant_hotkey": "nope"}, "options.grant_hotkey'"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(BackendError, match=needle) as raised:
        S3Options.from_mapping(options)
    assert not raised.value.retryable and "backends.s3.options." in str(raised.value)


def test_options_accept_config_strings() -> None:
    options = S3Options.from_mapping({"bucket": "sn13", "grant_url": "https://g/x/", "concurrency": "8",
                                      "read_timeout": 5})
    assert options.concurrency == 8 and options.read_timeout == 5.0 and options.grant_url == "https://g/x"


def test_the_back_off_is_the_cores_with_full_jitter() -> None:
    backoff = Backoff(6, 0.5, 4.0, rng=random.Random(1))
    delays = list(backoff.delays())
    assert len(delays) == 5 and len(set(delays)) == 5
    assert all(0 <= delay <= min(4.0, 0.5 * 2**attempt) for attempt, delay in enumerate(delays))
    assert isinstance(backoff, CoreBackoff)
