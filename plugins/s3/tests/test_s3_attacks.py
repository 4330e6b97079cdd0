"""A hostile miner's attacks that got through before (issue 19), each against real SeaweedFS and the real
grant service under uvicorn: object headers, multipart objects not matching their name, replacing a stored
object, work that was not charged, encoded paths, forwarded addresses, and replays across a restart."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage_core.chain.http_auth import sign_request
from storage_core.testing.data import make_batch
from storage_core_s3 import protocol
from storage_core_s3.grants import BucketAccess, create_app
from storage_core_s3.server import ServerThread
from storage_core_s3.uploader import part_checksums
from s3_helpers import big_chunk, grant_request, post_upload, signed_post

MiB = 1024 * 1024


@pytest.fixture
def chunks(staging: Path, keys: dict[str, Any]):
    return make_batch(staging, keys["miner0"].ss58_address, rows=400, seed=901, chunks=2).files


def _receiver(keys: dict[str, Any]) -> str:
    return keys["service"].ss58_address


def _ask(deployment, keys, path: str, payload: dict[str, Any], who: str = "miner0") -> httpx.Response:
    return signed_post(deployment.url, path, payload, keys[who], _receiver(keys))[0]


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def _head(deployment, key: str) -> dict[str, Any]:
    return deployment.seaweed.admin.head_object(Bucket=deployment.bucket, Key=key)


# -- 1. object headers --------------------------------------------------------------------------------------

PINNED = {"ContentType": protocol.PARQUET_CONTENT_TYPE, "ContentEncoding": "identity",
          "ContentDisposition": "attachment", "CacheControl": "no-transform"}


@pytest.mark.parametrize(("field", "value"), [("Content-Encoding", "gzip"), ("content-encoding", "gzip"),
                                              ("Content-Type", "text/html"), ("Content-Disposition", "inline"),
                                              ("Cache-Control", "max-age=9")])
def test_post_form_field_cannot_change_an_object_header(fresh, keys, chunks, field: str, value: str) -> None:
    grant = _ask(fresh, keys, protocol.PATH_UPLOAD, grant_request(chunks[0])).json()
    response = httpx.post(grant["url"], files=[(name, (None, text)) for name, text in grant["fields"].items()]
                          + [(field, (None, value)), ("file", ("c.parquet", chunks[0].path.read_bytes()))])
    if response.status_code == 204:  # the store kept the pinned value, never the miner's
        head = _head(fresh, grant["key"])
        assert {name: head.get(name) for name in PINNED} == PINNED
    else:
        assert response.status_code == 403 and "Policy" in response.text, response.text
        assert fresh.keys() == []


@pytest.mark.parametrize(("header", "value"), [("Content-Encoding", "gzip"), ("Content-Type", "text/html"),
                                               ("Content-Disposition", "inline"), ("Cache-Control", "max-age=9")])
def test_put_header_cannot_change_an_object_header(deploy, keys, chunks, header: str, value: str) -> None:
    deployment = deploy(upload_method="put")
    grant = _ask(deployment, keys, protocol.PATH_UPLOAD, grant_request(chunks[0])).json()
    data = chunks[0].path.read_bytes()
    assert httpx.put(grant["url"], content=data, headers={**grant["headers"], header: value}).status_code == 403
    assert deployment.keys() == []
    assert httpx.put(grant["url"], content=data, headers=grant["headers"]).status_code == 200
    head = _head(deployment, grant["key"])
    assert {name: head.get(name) for name in PINNED} == PINNED


def test_header_the_store_keeps_unasked_is_detected(fresh, keys, chunks) -> None:
    # SeaweedFS keeps Content-Language from an unlisted form field and knows no policy condition for it.
    grant = _ask(fresh, keys, protocol.PATH_UPLOAD, grant_request(chunks[0])).json()
    response = post_upload(grant, chunks[0].path.read_bytes(), {**grant["fields"], "Content-Language": "fr"})
    assert response.status_code == 204
    again = _ask(fresh, keys, protocol.PATH_UPLOAD, grant_request(chunks[0]))
    _refused(again, 409, "object_exists")  # never "present": the object was not stored as granted
    assert "ContentLanguage" in again.json()["error"]["message"]


# -- 2. multipart objects against their name; no replacing ------------------------------------------------


def _multipart(deployment, keys, claimed, content_file, part_size: int = 5 * MiB) -> dict[str, Any]:
    parts = part_checksums(content_file.path, content_file.size_bytes, part_size)
    payload = {**grant_request(claimed), "size": content_file.size_bytes, "part_size": part_size, "part_sha256": parts}
    response = _ask(deployment, keys, protocol.PATH_MULTIPART, payload)
    assert response.status_code == 200, response.text
    return response.json()


def _send_parts(grant: dict[str, Any], content_file) -> dict[str, Any]:
    data = content_file.path.read_bytes()
    uploaded = []
    for part in grant["parts"]:
        offset = (part["part_number"] - 1) * grant["part_size"]
        piece = data[offset: offset + part["size"]]
        response = httpx.put(part["url"], content=piece, headers=part["headers"], timeout=60)
        assert response.status_code == 200, response.text
        uploaded.append({"part_number": part["part_number"], "etag": response.headers["etag"].strip('"'),
                         "sha256": hashlib.sha256(piece).hexdigest()})
    return {"key": grant["key"], "upload_id": grant["upload_id"], "ticket": grant["ticket"], "parts": uploaded}


@pytest.fixture(scope="module")
def two_big(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("big")
    return big_chunk(directory / "a", 6, seed=931), big_chunk(directory / "b", 6.5, seed=932)


def test_multipart_bytes_that_do_not_hash_to_the_name_are_removed(fresh, keys, two_big) -> None:
    named, other = two_big  # the key is named after `named`, the parts are `other`'s bytes
    grant = _multipart(fresh, keys, named, other)
    response = _ask(fresh, keys, protocol.PATH_COMPLETE, _send_parts(grant, other))
    _refused(response, 409, "sha256_mismatch")
    assert fresh.keys() == []


def test_a_stored_object_is_never_replaced(fresh, keys, two_big) -> None:
    real, other = two_big
    # two uploads granted while nothing is stored; the honest one completes first
    honest = _multipart(fresh, keys, real, real)
    hostile = _multipart(fresh, keys, real, other)
    honest_done, hostile_done = _send_parts(honest, real), _send_parts(hostile, other)
    assert _ask(fresh, keys, protocol.PATH_COMPLETE, honest_done).status_code == 200
    _refused(_ask(fresh, keys, protocol.PATH_COMPLETE, hostile_done), 409, "object_exists")
    # the presence check does not grant again on a size mismatch
    parts = part_checksums(real.path, real.size_bytes, 5 * MiB) + ["0" * 64]
    bigger = {**grant_request(real), "size": real.size_bytes + 5 * MiB, "part_size": 5 * MiB, "part_sha256": parts}
    _refused(_ask(fresh, keys, protocol.PATH_MULTIPART, bigger), 409, "object_exists")
    stored = fresh.seaweed.admin.get_object(Bucket=fresh.bucket, Key=honest["key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == real.sha256


# -- 3. work, pending uploads, quota ----------------------------------------------------------------------


def _fake_multipart(staged, parts: int, seed: int = 0) -> dict[str, Any]:
    digests = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(parts)]
    sha256 = hashlib.sha256(f"object-{seed}".encode()).hexdigest()
    return {**grant_request(staged), "sha256": sha256, "size": parts * 5 * MiB, "part_size": 5 * MiB, "part_sha256": digests}


def test_part_urls_are_charged_as_work(deploy, keys, chunks) -> None:
    deployment = deploy(rate_limit=0.5, rate_burst=30, max_body_bytes=256 * 1024)
    assert _ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 200, 1)).status_code == 200
    _refused(_ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 200, 2)), 429, "rate_limited")
    too_many = _ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 1001, 3), who="miner1")
    _refused(too_many, 400, "invalid_part_size")


def test_open_uploads_are_capped_and_stale_ones_aborted(deploy, keys, chunks) -> None:
    deployment = deploy(max_pending_uploads=2, multipart_grant_ttl=1, ticket_grace=1)
    for seed in (1, 2):
        assert _ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 2, seed)).status_code == 200
    _refused(_ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 2, 3)), 429, "too_many_uploads")
    time.sleep(3.5)  # both can no longer be completed: the next grant aborts them
    assert _ask(deployment, keys, protocol.PATH_MULTIPART, _fake_multipart(chunks[0], 2, 4)).status_code == 200
    open_uploads = deployment.seaweed.admin.list_multipart_uploads(Bucket=deployment.bucket).get("Uploads", [])
    assert len(open_uploads) == 1


def test_daily_storage_quota(deploy, keys, chunks) -> None:
    deployment = deploy(daily_quota_bytes=chunks[0].size_bytes + chunks[1].size_bytes // 2)
    assert _ask(deployment, keys, protocol.PATH_UPLOAD, grant_request(chunks[0])).status_code == 200
    _refused(_ask(deployment, keys, protocol.PATH_UPLOAD, grant_request(chunks[1])), 429, "quota_exceeded")


# -- 4. paths, forwarded addresses, restarts --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/read%2fgrant", "/v1/read%2Fgrant", "/v1%2fread/grant", "/v1/read/gr%61nt"])
def test_percent_encoded_path_does_not_reach_a_handler(fresh, keys, path: str) -> None:
    body = json.dumps({"miner_hotkey": keys["miner0"].ss58_address}).encode()
    headers = sign_request(keys["validator"], "POST", path, body, _receiver(keys))
    response = httpx.post(fresh.url + path, content=body, headers=headers)
    _refused(response, 404, "encoded_path")


def _logged_client(deployment, keys, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="storage_core_s3.grants"):
        body = json.dumps({"miner_hotkey": keys["miner0"].ss58_address}).encode()
        headers = sign_request(keys["validator"], "POST", protocol.PATH_READ, body, _receiver(keys))
        response = httpx.post(deployment.url + protocol.PATH_READ, content=body,
                              headers={**headers, "X-Forwarded-For": "203.0.113.7"})
        assert response.status_code == 200
    events = [record.grant_event for record in caplog.records if hasattr(record, "grant_event")]
    return str(events[-1]["client"])


def test_forwarded_for_is_believed_only_from_a_configured_proxy(deploy, keys, caplog) -> None:
    assert _logged_client(deploy(), keys, caplog) == "127.0.0.1"
    assert _logged_client(deploy(trusted_proxies=("127.0.0.1",)), keys, caplog) == "203.0.113.7"


def test_request_signed_before_a_restart_is_refused(fresh, keys, chunks) -> None:
    body = json.dumps(grant_request(chunks[0])).encode()
    headers = sign_request(keys["miner0"], "POST", protocol.PATH_UPLOAD, body, _receiver(keys))
    assert httpx.post(fresh.url + protocol.PATH_UPLOAD, content=body, headers=headers).status_code == 200
    fresh.server.stop()
    time.sleep(0.01)
    restarted = create_app(fresh.settings, fresh.app.state.service.membership,
                           bucket=BucketAccess(fresh.settings, client=fresh.seaweed.admin))
    with ServerThread(restarted) as server:  # an empty in-memory replay store
        replay = httpx.post(server.url + protocol.PATH_UPLOAD, content=body, headers=headers)
        _refused(replay, 401, "signed_before_start")
        fresh_body, fresh_headers = body, sign_request(keys["miner0"], "POST", protocol.PATH_UPLOAD, body, _receiver(keys))
        assert httpx.post(server.url + protocol.PATH_UPLOAD, content=fresh_body, headers=fresh_headers).status_code == 200
