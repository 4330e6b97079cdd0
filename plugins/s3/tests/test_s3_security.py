"""Security of the grant service and of the grants themselves, against a real S3 server (SeaweedFS).

Each test shows the request refused *and* nothing stored: it lists the test's own bucket afterwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage_core.chain.http_auth import sign_request
from storage_core.layout import key_for, miner_prefix
from storage_core.testing.data import make_batch
from storage_core_s3 import protocol
from s3_helpers import big_chunk, grant_request, post_upload, signed_post


@pytest.fixture
def chunk(staging: Path, keys: dict[str, Any]):
    return make_batch(staging, keys["miner0"].ss58_address, rows=200, seed=501).files[0]


def _receiver(keys: dict[str, Any]) -> str:
    return keys["service"].ss58_address


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


# -- signatures, freshness, replay, membership -------------------------------------------------------


def test_forged_signature_is_refused(fresh, keys, chunk) -> None:
    body = grant_request(chunk)
    raw = json.dumps(body).encode()
    headers = sign_request(keys["miner0"], "POST", protocol.PATH_UPLOAD, raw, _receiver(keys))
    signature = bytearray(bytes.fromhex(headers["X-Bittensor-Signature"][2:]))
    signature[10] ^= 0xFF
    headers["X-Bittensor-Signature"] = "0x" + signature.hex()
    response = httpx.post(fresh.url + protocol.PATH_UPLOAD, content=raw, headers=headers)
    _refused(response, 401, "bad_signature")
    assert fresh.keys() == []


def test_signature_by_another_hotkey_is_refused(fresh, keys, chunk) -> None:
    raw = json.dumps(grant_request(chunk)).encode()
    headers = sign_request(keys["miner1"], "POST", protocol.PATH_UPLOAD, raw, _receiver(keys))
    headers["X-Bittensor-Hotkey"] = keys["miner0"].ss58_address  # claims to be miner0
    response = httpx.post(fresh.url + protocol.PATH_UPLOAD, content=raw, headers=headers)
    _refused(response, 401, "bad_signature")
    assert fresh.keys() == []


def test_body_changed_after_signing_is_refused(fresh, keys, chunk) -> None:
    raw = json.dumps(grant_request(chunk)).encode()
    headers = sign_request(keys["miner0"], "POST", protocol.PATH_UPLOAD, raw, _receiver(keys))
    tampered = json.dumps(grant_request(chunk, source="reddit")).encode()
    _refused(httpx.post(fresh.url + protocol.PATH_UPLOAD, content=tampered, headers=headers), 401, "bad_signature")
    assert fresh.keys() == []


def test_request_signed_for_another_service_is_refused(fresh, keys, chunk) -> None:
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"],
                                 keys["miner2"].ss58_address)
    _refused(response, 401, "wrong_receiver")
    assert fresh.keys() == []


def test_replayed_request_is_refused(fresh, keys, chunk) -> None:
    first, headers, body = signed_post(fresh.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"], _receiver(keys))
    assert first.status_code == 200 and first.json()["status"] == "upload"
    replay = httpx.post(fresh.url + protocol.PATH_UPLOAD, content=body, headers=headers)
    _refused(replay, 401, "replayed_request")
    assert fresh.keys() == []


@pytest.mark.parametrize("offset_s", [-600, 600], ids=["10-minutes-old", "10-minutes-ahead"])
def test_stale_or_future_timestamp_is_refused(fresh, keys, chunk, offset_s: int) -> None:
    nonce = time.time_ns() + offset_s * 10**9
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"], _receiver(keys),
                                 nonce_ns=nonce)
    _refused(response, 401, "stale_request")
    assert fresh.keys() == []


def test_freshness_window_is_configurable(deploy, keys, chunk) -> None:
    strict = deploy(freshness_window=5.0)
    late = time.time_ns() - 20 * 10**9  # inside the default 60 s, outside 5 s
    response, _, _ = signed_post(strict.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"], _receiver(keys),
                                 nonce_ns=late)
    _refused(response, 401, "stale_request")
    assert strict.keys() == []


def test_unsigned_request_is_refused(fresh, chunk) -> None:
    response = httpx.post(fresh.url + protocol.PATH_UPLOAD, json=grant_request(chunk))
    _refused(response, 401, "malformed_auth")
    assert fresh.keys() == []


def test_unregistered_hotkey_gets_no_grant(fresh, keys, staging) -> None:
    outsider = keys["outsider"]
    staged = make_batch(staging, outsider.ss58_address, rows=50, seed=502).files[0]
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, grant_request(staged), outsider, _receiver(keys))
    _refused(response, 403, "not_registered")
    assert fresh.keys() == []


def test_validator_grant_needs_a_permit(fresh, keys) -> None:
    payload = {"miner_hotkey": keys["miner1"].ss58_address}
    response, _, _ = signed_post(fresh.url, protocol.PATH_READ, payload, keys["miner0"], _receiver(keys))
    _refused(response, 403, "no_validator_permit")
    outsider, _, _ = signed_post(fresh.url, protocol.PATH_READ, payload, keys["outsider"], _receiver(keys))
    _refused(outsider, 403, "no_validator_permit")
    assert fresh.keys() == []


# -- what the grant pins, enforced by the S3 server ---------------------------------------------------


def _grant(deployment, keys, staged, miner: str = "miner0") -> dict[str, Any]:
    response, _, _ = signed_post(deployment.url, protocol.PATH_UPLOAD, grant_request(staged), keys[miner], _receiver(keys))
    assert response.status_code == 200, response.text
    grant = response.json()
    assert grant["status"] == "upload" and grant["method"] == "post"
    return grant


def test_server_builds_the_key_from_the_signer(fresh, keys, chunk) -> None:
    grant = _grant(fresh, keys, chunk)
    assert grant["key"] == key_for(keys["miner0"].ss58_address, chunk)
    assert grant["fields"]["key"] == grant["key"]
    assert post_upload(grant, chunk.path.read_bytes()).status_code == 204
    assert fresh.keys() == [grant["key"]]


def test_swapping_the_key_for_another_miners_key_is_refused_by_s3(fresh, keys, chunk) -> None:
    grant = _grant(fresh, keys, chunk)
    victim_key = key_for(keys["miner1"].ss58_address, chunk)
    for forged in (victim_key, grant["key"].replace(".parquet", "-other.parquet"), miner_prefix(keys["miner0"].ss58_address) + "x.parquet"):
        response = post_upload(grant, chunk.path.read_bytes(), {**grant["fields"], "key": forged})
        assert response.status_code == 403, response.text
        assert "AccessDenied" in response.text
    assert fresh.keys() == []


def test_body_larger_than_the_granted_range_is_refused_by_s3(fresh, keys, chunk) -> None:
    grant = _grant(fresh, keys, chunk)
    response = post_upload(grant, chunk.path.read_bytes() + b"\0" * 1024)
    assert response.status_code == 400 and "EntityTooLarge" in response.text, response.text
    shorter = post_upload(grant, chunk.path.read_bytes()[:-10])
    assert shorter.status_code == 400, shorter.text
    assert fresh.keys() == []


def test_other_content_of_the_granted_size_fails_the_checksum(fresh, keys, chunk) -> None:
    grant = _grant(fresh, keys, chunk)
    content = bytearray(chunk.path.read_bytes())
    content[100] ^= 0xFF
    response = post_upload(grant, bytes(content))
    assert response.status_code == 400 and "BadDigest" in response.text, response.text
    assert fresh.keys() == []


def test_expired_grant_is_refused_by_s3(deploy, keys, chunk) -> None:
    short = deploy(upload_grant_ttl=1)
    grant = _grant(short, keys, chunk)
    time.sleep(2.5)
    response = post_upload(grant, chunk.path.read_bytes())
    assert response.status_code == 403, response.text
    assert short.keys() == []


def test_size_over_the_service_limit_is_refused(deploy, keys, chunk) -> None:
    small = deploy(max_object_bytes=1000)
    response, _, _ = signed_post(small.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"], _receiver(keys))
    _refused(response, 413, "object_too_large")
    assert small.keys() == []


# -- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("source", "../hotkey=5Other", "'..'"),
        ("source", "x/../../etc", "'..'"),
        ("source", "x/y", "path separator"),
        ("source", "x\u0000", "control characters"),
        ("source", "x\n", "control characters"),
        ("source", "s" * 65, "at most 64"),
        ("source", "", "non-empty"),
        ("date", "2026-13-01", "calendar date"),
        ("date", "../2026-11-01", "'..'"),
        ("sha256", "../" + "a" * 61, "64 lower-case hex"),
    ],
)
def test_bad_names_are_refused(fresh, keys, chunk, field: str, value: str, needle: str) -> None:
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, grant_request(chunk, **{field: value}), keys["miner0"], _receiver(keys))
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]
    assert fresh.keys() == []


def test_client_cannot_choose_the_key(fresh, keys, chunk) -> None:
    payload = {**grant_request(chunk), "key": key_for(keys["miner1"].ss58_address, chunk)}
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, payload, keys["miner0"], _receiver(keys))
    _refused(response, 400, "invalid_request")
    assert "key" in response.json()["error"]["message"]
    assert fresh.keys() == []


# -- bad bodies ------------------------------------------------------------------------------------------


def _still_serving(deployment, keys, staged) -> None:
    assert httpx.get(deployment.url + protocol.PATH_HEALTH).json() == {"status": "ok"}
    response, _, _ = signed_post(deployment.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"], _receiver(keys))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'{"sha256": 5}', b"\xff\xfe\x00garbage", b'{"sha256": "a"' * 100])
def test_malformed_json_gets_400_and_the_service_keeps_serving(fresh, keys, chunk, raw: bytes) -> None:
    signed, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, None, keys["miner0"], _receiver(keys), raw=raw)
    assert signed.status_code == 400, signed.text
    assert signed.json()["error"]["code"] in ("malformed_json", "invalid_request")
    unsigned = httpx.post(fresh.url + protocol.PATH_UPLOAD, content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= unsigned.status_code < 500
    _still_serving(fresh, keys, chunk)
    assert fresh.keys() == []


def test_ten_megabyte_body_gets_413_and_the_service_keeps_serving(fresh, keys, chunk) -> None:
    huge = b'{"sha256": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    response, _, _ = signed_post(fresh.url, protocol.PATH_UPLOAD, None, keys["miner0"], _receiver(keys), raw=huge)
    _refused(response, 413, "body_too_large")
    chunked = httpx.post(fresh.url + protocol.PATH_UPLOAD, content=iter([huge[i:i + 65536] for i in range(0, len(huge), 65536)]))
    assert chunked.status_code == 413
    _still_serving(fresh, keys, chunk)
    assert fresh.keys() == []


def test_wrong_method_and_unknown_path_are_4xx(fresh) -> None:
    assert httpx.get(fresh.url + protocol.PATH_UPLOAD).status_code == 405
    assert httpx.post(fresh.url + "/v1/../admin").status_code == 404


# -- read grants --------------------------------------------------------------------------------------------


def test_read_grant_is_scoped_to_one_miner(fresh, keys) -> None:
    miner0 = keys["miner0"].ss58_address
    other_key = miner_prefix(keys["miner1"].ss58_address) + "source=x/date=2026-11-01/" + "a" * 32 + ".parquet"
    response, _, _ = signed_post(fresh.url, protocol.PATH_READ, {"miner_hotkey": miner0, "keys": [other_key]},
                                 keys["validator"], _receiver(keys))
    _refused(response, 403, "outside_prefix")
    sneaky = miner_prefix(miner0) + "../" + other_key
    response, _, _ = signed_post(fresh.url, protocol.PATH_READ, {"miner_hotkey": miner0, "keys": [sneaky]},
                                 keys["validator"], _receiver(keys))
    _refused(response, 400, "invalid_key")
    bucket_wide, _, _ = signed_post(fresh.url, protocol.PATH_READ, {"miner_hotkey": ""}, keys["validator"], _receiver(keys))
    _refused(bucket_wide, 400, "invalid_hotkey")


def test_read_grant_lists_only_the_miners_prefix(fresh, keys, staging) -> None:
    from storage_core_s3 import plugin

    for index, name in enumerate(("miner0", "miner1")):
        batch = make_batch(staging / name, keys[name].ss58_address, rows=50, seed=510 + index)
        plugin.storage_upload(fresh.context(keys[name]), batch)
    miner0 = keys["miner0"].ss58_address
    response, _, _ = signed_post(fresh.url, protocol.PATH_READ, {"miner_hotkey": miner0}, keys["validator"], _receiver(keys))
    listing = httpx.get(response.json()["list_url"])
    assert listing.status_code == 200
    assert miner0 in listing.text and keys["miner1"].ss58_address not in listing.text
    # The listing URL cannot be widened: dropping or changing the prefix breaks its signature.
    widened = httpx.get(response.json()["list_url"].replace("prefix=hotkey%3D" + miner0, "prefix=hotkey%3D"))
    assert widened.status_code == 403


# -- multipart ----------------------------------------------------------------------------------------------


def _multipart(deployment, keys, staged, part_size: int) -> dict[str, Any]:
    from storage_core_s3.uploader import part_checksums

    parts = part_checksums(staged.path, staged.size_bytes, part_size)
    payload = {**grant_request(staged), "part_size": part_size, "part_sha256": parts}
    response, _, _ = signed_post(deployment.url, protocol.PATH_MULTIPART, payload, keys["miner0"], _receiver(keys))
    assert response.status_code == 200, response.text
    return response.json()


def test_multipart_parts_are_pinned_and_completion_checks_the_ticket(shared, keys, staging) -> None:
    deployment = shared
    part_size = 5 * 1024 * 1024
    chunk = big_chunk(staging, 11, seed=520)
    grant = _multipart(deployment, keys, chunk, part_size)
    assert len(grant["parts"]) == 3
    data = chunk.path.read_bytes()
    first = grant["parts"][0]
    # a part of another length or content is refused by S3
    wrong_length = httpx.put(first["url"], content=data[: part_size - 1], headers={**first["headers"], "Content-Length": str(part_size - 1)})
    assert wrong_length.status_code == 403
    wrong_content = httpx.put(first["url"], content=b"\0" * part_size, headers=first["headers"])
    assert wrong_content.status_code == 400 and "BadDigest" in wrong_content.text
    uploaded = []
    for part in grant["parts"]:
        offset = (part["part_number"] - 1) * part_size
        response = httpx.put(part["url"], content=data[offset: offset + part["size"]], headers=part["headers"])
        assert response.status_code == 200, response.text
        uploaded.append({"part_number": part["part_number"], "etag": response.headers["etag"].strip('"'),
                         "sha256": hashlib.sha256(data[offset: offset + part["size"]]).hexdigest()})
    complete = {"key": grant["key"], "upload_id": grant["upload_id"], "ticket": grant["ticket"], "parts": uploaded}
    # another miner cannot complete it, a forged ticket or a dropped part is refused
    response, _, _ = signed_post(deployment.url, protocol.PATH_COMPLETE, complete, keys["miner1"], _receiver(keys))
    _refused(response, 403, "outside_prefix")
    forged = {**complete, "ticket": grant["ticket"][:-4] + "AAAA"}
    response, _, _ = signed_post(deployment.url, protocol.PATH_COMPLETE, forged, keys["miner0"], _receiver(keys))
    _refused(response, 403, "invalid_ticket")
    dropped = {**complete, "parts": uploaded[:-1]}
    response, _, _ = signed_post(deployment.url, protocol.PATH_COMPLETE, dropped, keys["miner0"], _receiver(keys))
    _refused(response, 400, "invalid_parts")
    assert deployment.keys(miner_prefix(keys["miner0"].ss58_address)) == [] or grant["key"] not in deployment.keys()
    response, _, _ = signed_post(deployment.url, protocol.PATH_COMPLETE, complete, keys["miner0"], _receiver(keys))
    assert response.status_code == 200, response.text
    assert grant["key"] in deployment.keys()
    stored = deployment.seaweed.client().get_object(Bucket=deployment.bucket, Key=grant["key"])["Body"].read()
    assert stored == data


# -- presigned PUT mode (for stores without POST policies, e.g. Cloudflare R2) -------------------------------


def test_put_grants_pin_key_size_and_checksum(deploy, keys, chunk) -> None:
    deployment = deploy(upload_method="put")
    response, _, _ = signed_post(deployment.url, protocol.PATH_UPLOAD, grant_request(chunk), keys["miner0"], _receiver(keys))
    grant = response.json()
    assert grant["method"] == "put"
    data = chunk.path.read_bytes()
    longer = httpx.put(grant["url"], content=data + b"x", headers={**grant["headers"], "Content-Length": str(len(data) + 1)})
    assert longer.status_code == 403
    other_meta = httpx.put(grant["url"], content=data, headers={**grant["headers"], "x-amz-meta-sha256": "0" * 64})
    assert other_meta.status_code == 403
    elsewhere = httpx.put(grant["url"].replace(keys["miner0"].ss58_address, keys["miner1"].ss58_address), content=data,
                          headers=grant["headers"])
    assert elsewhere.status_code == 403
    assert deployment.keys() == []
    assert httpx.put(grant["url"], content=data, headers=grant["headers"]).status_code == 200
    assert deployment.keys() == [grant["key"]]
