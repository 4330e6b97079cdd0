"""Round manifests on S3: stored through a manifest grant whose key the service builds, capped, immutable,
and read back by a validator (range reads, listed with the store's own time)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from storage_core.errors import BackendError
from storage_core.layout import manifest_key
from storage_core.testing.data import make_batch, uris_of
from storage_core.testing.manifests import signed_manifest
from storage_core.verify.manifest_index import load_manifest
from storage_core_s3 import plugin, protocol
from storage_core_s3.checker import parse_list_page
from storage_core_s3.client import TransferError
from s3_helpers import signed_post


def _manifest(hotkey: str, seq: int, size: int = 3000) -> tuple[str, bytes]:
    data = b"SCM2" + os.urandom(size - 4)
    return manifest_key(hotkey, seq, hashlib.sha256(data).hexdigest()), data


def _near_now(moment: datetime | None) -> bool:
    return moment is not None and moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(seconds=60)


@pytest.mark.parametrize("method", ["post", "put"])
def test_a_manifest_is_stored_once_and_a_validator_lists_and_range_reads_it(deploy, keys, staging, method) -> None:
    deployment = deploy(upload_method=method)
    miner = keys["miner0"].ss58_address
    batch = make_batch(staging, miner, rows=200, chunks=2, seed=951)
    receipt = plugin.storage_upload(deployment.context(keys["miner0"]), batch)
    chunks = {o.key: staged.path.read_bytes() for o, staged in zip(receipt.objects, batch.files)}
    key, data = signed_manifest(chunks, miner, keys["miner0"], "s3", seq=7)
    stored = plugin.storage_publish_manifest(deployment.context(keys["miner0"]), miner, key, data)
    assert (stored.key, stored.size_bytes, stored.sha256) == (key, len(data), hashlib.sha256(data).hexdigest())
    assert not stored.already_present
    assert sorted(deployment.keys()) == sorted([key, *chunks])
    head = deployment.seaweed.admin.head_object(Bucket=deployment.bucket, Key=key)
    assert head["ContentLength"] == len(data) and head["Metadata"]["sha256"] == stored.sha256
    # The same bytes again: the service answers "present", nothing is written, no quota is spent.
    again = plugin.storage_publish_manifest(deployment.context(keys["miner0"]), miner, key, data)
    assert again.already_present and again.key == key and len(deployment.keys()) == 3

    with plugin.storage_reader(deployment.context(keys["validator"]), miner) as store:
        listing = list(store.list_objects_timed())
        listed = {item.key: item for item in listing}
        assert set(listed) == {key, *chunks}
        assert all(_near_now(item.stored_at) for item in listing)
        assert listed[key].size == len(data)
        # The listing's grants presigned the manifest's GET too: reading it asks the service nothing more.
        grants = store.counters.grant_requests
        assert store.read_range(key, 100, 1100) == data[100:1100]
        tail = store.read_tail(key, 64)
        assert tail.data == data[-64:] and tail.size == len(data) and tail.sha256 == stored.sha256
        assert store.counters.grant_requests == grants
        # The core believes it, read by ranges through this store: signature, round, chunks, URI filter.
        index = load_manifest(store, listing, miner, "s3")
        assert index is not None and index.key == key and index.manifest.seq == 7
        assert {entry.sha256 for entry in index.whole().chunks} == {f.sha256 for f in batch.files}
        uri = uris_of(batch)[0]
        assert index.candidates([uri])[uri]


def test_the_service_builds_the_manifest_key_from_the_signer(shared, keys) -> None:
    receiver = keys["service"].ss58_address
    miner0, miner1 = keys["miner0"].ss58_address, keys["miner1"].ss58_address
    key, data = _manifest(miner0, 3)
    sha256 = hashlib.sha256(data).hexdigest()
    request = {"sha256": sha256, "size": len(data), "manifest_seq": 3}
    # miner 1 asking for the same manifest gets its own key, never miner 0's.
    grant = signed_post(shared.url, protocol.PATH_UPLOAD, request, keys["miner1"], receiver)[0]
    assert grant.status_code == 200, grant.text
    assert grant.json()["key"] == manifest_key(miner1, 3, sha256) != key
    # A client cannot name the key (unknown fields are refused) nor mix a chunk's partition into a manifest.
    named = signed_post(shared.url, protocol.PATH_UPLOAD, {**request, "key": key}, keys["miner1"], receiver)[0]
    assert named.status_code == 400 and named.json()["error"]["code"] == "invalid_request"
    assert "key" in named.json()["error"]["message"]
    mixed = signed_post(shared.url, protocol.PATH_UPLOAD, {**request, "source": "x"}, keys["miner1"], receiver)[0]
    assert mixed.status_code == 400 and "names no source or date" in mixed.json()["error"]["message"]
    bad_seq = signed_post(shared.url, protocol.PATH_UPLOAD, {**request, "manifest_seq": -1}, keys["miner1"], receiver)[0]
    assert bad_seq.status_code == 400 and "manifest_seq" in bad_seq.json()["error"]["message"]
    # A chunk grant still needs its partition.
    chunk = signed_post(shared.url, protocol.PATH_UPLOAD, {"sha256": sha256, "size": 10}, keys["miner1"], receiver)[0]
    assert chunk.status_code == 400 and "source must be a non-empty string" in chunk.json()["error"]["message"]
    # The hook refuses to ask for another miner's manifest before any request is made.
    with pytest.raises(BackendError, match="signing hotkey is") as raised:
        plugin.storage_publish_manifest(shared.context(keys["miner1"]), miner0, key, data)
    assert not raised.value.retryable
    with pytest.raises(BackendError, match="does not name these bytes"):
        plugin.storage_publish_manifest(shared.context(keys["miner0"]), miner0, key, data + b"x")
    assert shared.keys(f"hotkey={miner0}/manifests/") == []


def test_an_oversized_manifest_is_refused_with_a_clear_error(deploy, keys) -> None:
    deployment = deploy(max_manifest_bytes=2048, daily_quota_bytes=10_000)
    assert httpx.get(deployment.url + protocol.PATH_INFO).json()["max_manifest_bytes"] == 2048
    miner = keys["miner0"].ss58_address
    key, data = _manifest(miner, 1, size=4096)
    with pytest.raises(TransferError, match="manifest_too_large") as raised:
        plugin.storage_publish_manifest(deployment.context(keys["miner0"]), miner, key, data)
    assert raised.value.status == 413 and not raised.value.retryable
    assert "2048" in str(raised.value)
    assert deployment.keys() == []
    # Manifests count against the daily quota like chunks.
    for seq in range(4):  # 4 x 2048 bytes of a 10000-byte quota
        small_key, small = _manifest(miner, 10 + seq, size=2048)
        plugin.storage_publish_manifest(deployment.context(keys["miner0"]), miner, small_key, small)
    assert len(deployment.keys()) == 3  # the oldest was pruned when the fourth was granted
    over_key, over = _manifest(miner, 20, size=2048)
    with pytest.raises(TransferError, match="quota_exceeded"):
        plugin.storage_publish_manifest(deployment.context(keys["miner0"], max_attempts=1), miner, over_key, over)


def test_listing_pages_carry_the_stores_time() -> None:
    page = parse_list_page(
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
        b"<Contents><Key>a</Key><Size>3</Size><LastModified>2026-12-07T11:32:34.000Z</LastModified></Contents>"
        b"<Contents><Key>b</Key><Size>4</Size></Contents></ListBucketResult>"
    )
    assert [(o.key, o.stored_at) for o in page.objects] == [
        ("a", datetime(2026, 12, 7, 11, 32, 34, tzinfo=UTC)), ("b", None)]
    with pytest.raises(TransferError, match="LastModified"):
        parse_list_page(b"<ListBucketResult><Contents><Key>a</Key><Size>3</Size>"
                        b"<LastModified>yesterday</LastModified></Contents></ListBucketResult>")


def test_a_manifest_grant_prunes_only_the_signers_superseded_manifests(deploy, keys) -> None:
    deployment = deploy()
    miner, other = keys["miner0"].ss58_address, keys["miner1"].ss58_address
    theirs, _ = _manifest(other, 1)
    plugin.storage_publish_manifest(deployment.context(keys["miner1"]), other, theirs, _)
    mine = []
    for seq in range(1, 6):
        key, data = _manifest(miner, seq)
        plugin.storage_publish_manifest(deployment.context(keys["miner0"]), miner, key, data)
        mine.append(key)
    held = set(deployment.keys())
    assert theirs in held  # another miner's manifests are never touched
    assert held & set(mine) == set(mine[-3:])  # the new one and the two before it
