"""Fuzzing the grant service's request parsing: properly signed requests carrying arbitrary bytes, arbitrary
JSON and near-valid grant requests, to every grant endpoint, through the real app (a Starlette TestClient)
backed by a real SeaweedFS. Every answer is a 2xx or a 4xx with a JSON error naming the problem: never a
5xx, never a crash, and the service keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from storage_core.chain.http_auth import AUTH_HEADERS, HEADER_SIGNATURE, sign_request
from storage_core.chain.keys import keypair_from_uri
from storage_core.layout import miner_prefix
from storage_core.membership import StaticMembership
from storage_core_s3 import protocol
from storage_core_s3.grants import GrantSettings, create_app
from storage_core_s3.testing import SeaweedFS

MINER = keypair_from_uri("//fuzz-miner")
VALIDATOR = keypair_from_uri("//fuzz-validator")
SERVICE = keypair_from_uri("//fuzz-grant-service")
ENDPOINTS = (protocol.PATH_UPLOAD, protocol.PATH_MULTIPART, protocol.PATH_COMPLETE, protocol.PATH_ABORT,
             protocol.PATH_READ)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with SeaweedFS(Path(tmp_path_factory.mktemp("fuzz-seaweed"))) as seaweed:
        bucket = seaweed.create_bucket("fuzz-grants")
        settings_ = GrantSettings(bucket=bucket, service_hotkey=SERVICE.ss58_address, endpoint_url=seaweed.endpoint_url,
                                  access_key=seaweed.access_key, secret_key=seaweed.secret_key, rate_limit=0)
        app = create_app(settings_, StaticMembership({MINER.ss58_address}, {VALIDATOR.ss58_address}))
        with TestClient(app, raise_server_exceptions=True) as test_client:
            yield test_client


def post(client: TestClient, path: str, body: bytes, signer: Any = MINER) -> Any:
    headers = sign_request(signer, "POST", path, body, SERVICE.ss58_address)
    return client.post(path, content=body, headers=headers)


def assert_handled(response: Any) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()
        assert isinstance(error, dict) and json.dumps(error).strip("{}"), "a refusal must name the problem"
        assert any(isinstance(value, (str, dict)) and value for value in error.values())


def assert_still_serving(client: TestClient) -> None:
    assert client.get(protocol.PATH_HEALTH).status_code == 200


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
              st.text(max_size=40)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)),
    max_leaves=20,
)
hexes = st.one_of(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), st.text(max_size=70),
                  st.from_regex(r"[0-9A-F]{64}", fullmatch=True))
sizes = st.one_of(st.integers(-10, 10**6), st.sampled_from([0, 1, 5 * 2**20, 5 * 2**30, 5 * 2**40, 2**63, 2**64 + 1]))
texts = st.one_of(st.sampled_from(["x", "reddit", "2026-11-20", "2026-02-30", "..", "a/b", "\x00", "é", " ", ""]),
                  st.text(max_size=80))
keys = st.one_of(texts, st.builds(lambda tail: miner_prefix(MINER.ss58_address) + tail, texts),
                 st.builds(lambda tail: miner_prefix(VALIDATOR.ss58_address) + tail, texts))
anything = st.one_of(json_values, texts, sizes)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Usually the right kind of value, sometimes any JSON value."""
    return st.one_of(strategy, strategy, strategy, anything)


NEAR_VALID = {
    protocol.PATH_UPLOAD: st.fixed_dictionaries(
        {"sha256": maybe(hexes), "size": maybe(sizes), "source": maybe(texts), "date": maybe(texts)},
        optional={"extra": anything}),
    protocol.PATH_MULTIPART: st.fixed_dictionaries(
        {"sha256": maybe(hexes), "size": maybe(sizes), "source": maybe(texts), "date": maybe(texts),
         "part_size": maybe(sizes), "part_sha256": maybe(st.lists(hexes, max_size=6))}),
    protocol.PATH_COMPLETE: st.fixed_dictionaries(
        {"key": maybe(keys), "upload_id": maybe(texts), "ticket": maybe(texts),
         "parts": maybe(st.lists(st.fixed_dictionaries({"part_number": maybe(sizes), "etag": maybe(texts),
                                                         "sha256": maybe(hexes)}), max_size=4))}),
    protocol.PATH_ABORT: st.fixed_dictionaries({"key": maybe(keys), "upload_id": maybe(texts)}),
    protocol.PATH_READ: st.fixed_dictionaries(
        {"miner_hotkey": maybe(st.one_of(st.just(MINER.ss58_address), texts))},
        optional={"list": maybe(st.booleans()), "continuation_token": maybe(st.one_of(st.none(), texts)),
                  "max_keys": maybe(st.one_of(st.none(), sizes)), "keys": maybe(st.lists(keys, max_size=5))}),
}


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_with_a_4xx(client: TestClient, path: str, raw: bytes) -> None:
    response = post(client, path, raw, VALIDATOR if path == protocol.PATH_READ else MINER)
    assert_handled(response)
    assert response.status_code >= 400


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(document=json_values)
def test_arbitrary_json_is_refused_with_a_4xx(client: TestClient, path: str, document: Any) -> None:
    response = post(client, path, json.dumps(document).encode(), VALIDATOR if path == protocol.PATH_READ else MINER)
    assert_handled(response)


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(data=st.data())
def test_near_valid_requests_get_a_grant_or_a_4xx(client: TestClient, path: str, data: st.DataObject) -> None:
    document = data.draw(NEAR_VALID[path])
    signer = data.draw(st.sampled_from([MINER, VALIDATOR])) if path == protocol.PATH_READ else MINER
    response = post(client, path, json.dumps(document).encode(), signer)
    assert_handled(response)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(AUTH_HEADERS),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)),
       body=st.binary(max_size=200), path=st.sampled_from(ENDPOINTS))
def test_forged_or_garbled_auth_headers_get_a_4xx(client: TestClient, headers: dict[str, str], body: bytes,
                                                  path: str) -> None:
    signed = sign_request(MINER, "POST", path, body, SERVICE.ss58_address)
    garbled = {**signed, **headers}
    if garbled == signed:
        garbled[HEADER_SIGNATURE] = "00"
    response = client.post(path, content=body, headers=garbled)
    assert_handled(response)
    assert response.status_code >= 400


def test_the_service_still_serves_after_the_fuzzing(client: TestClient) -> None:
    assert_still_serving(client)
    response = post(client, protocol.PATH_READ, json.dumps({"miner_hotkey": MINER.ss58_address}).encode(), VALIDATOR)
    assert response.status_code == 200 and response.json()["list_url"]
