"""The grant service as a service: health, limits, logs, replay state shared by workers, membership, CLI."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from storage_core.chain import http_auth
from storage_core.errors import StorageCoreError
from storage_core.testing.data import make_batch
from storage_core_s3 import plugin, protocol
from storage_core_s3.grants import BucketAccess, GrantSettings, create_app, settings_from_env
from storage_core_s3.membership import chain_membership, static_membership
from storage_core_s3.nonces import SqliteNonceStore
from storage_core_s3.ratelimit import RateLimiter
from storage_core_s3.server import ServerThread
from s3_helpers import grant_request, signed_post


def test_health_and_info(shared, keys) -> None:
    assert httpx.get(shared.url + protocol.PATH_HEALTH).json() == {"status": "ok"}
    assert httpx.get(shared.url + protocol.PATH_HEALTH + "?deep=1").json() == {"status": "ok"}
    info = httpx.get(shared.url + protocol.PATH_INFO).json()
    assert info["service_hotkey"] == keys["service"].ss58_address and info["bucket"] == shared.bucket
    assert info["freshness_window"] == 60.0
    health = plugin.storage_health(shared.context(keys["miner0"]))
    assert health.ok, health.detail
    wrong = plugin.storage_health(shared.context(keys["miner0"], bucket="another-bucket"))
    assert not wrong.ok and "another-bucket" in wrong.detail
    down = plugin.storage_health(shared.context(keys["miner0"], grant_url="http://127.0.0.1:9", max_attempts=1))
    assert not down.ok


def test_deep_health_reports_an_unreachable_bucket(deploy) -> None:
    deployment = deploy()
    deployment.seaweed.admin.delete_bucket(Bucket=deployment.bucket)
    response = httpx.get(deployment.url + protocol.PATH_HEALTH + "?deep=1")
    assert response.status_code == 503 and response.json()["status"] == "unhealthy"


def test_rate_limit_per_hotkey(deploy, keys, staging) -> None:
    deployment = deploy(rate_limit=0.5, rate_burst=2)
    staged = make_batch(staging, keys["miner0"].ss58_address, rows=20, seed=801).files[0]
    receiver = keys["service"].ss58_address
    answers = [signed_post(deployment.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"], receiver)[0]
               for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limited" and int(answers[2].headers["retry-after"]) >= 1
    other = make_batch(staging / "o", keys["miner1"].ss58_address, rows=20, seed=802).files[0]
    assert signed_post(deployment.url, protocol.PATH_UPLOAD, grant_request(other), keys["miner1"], receiver)[0].status_code == 200


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert limiter.acquire("a") is None and limiter.acquire("a") is None
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("a") is None
    assert RateLimiter(0, 1).acquire("a") is None


def test_structured_logs(shared, keys, staging, caplog) -> None:
    staged = make_batch(staging, keys["miner0"].ss58_address, rows=20, seed=803).files[0]
    with caplog.at_level(logging.INFO, logger="storage_core_s3.grants"):
        signed_post(shared.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"], keys["service"].ss58_address)
        signed_post(shared.url, protocol.PATH_UPLOAD, grant_request(staged), keys["outsider"], keys["service"].ss58_address)
    events = [record.grant_event for record in caplog.records if hasattr(record, "grant_event")]
    assert events[-2]["status"] == 200 and events[-2]["hotkey"] == keys["miner0"].ss58_address and "key" in events[-2]
    assert events[-1]["status"] == 403 and events[-1]["reason"] == "not_registered"
    assert json.loads(caplog.records[-1].getMessage())["status"] == 403


def test_replays_are_refused_across_workers_sharing_a_nonce_db(seaweed, keys, membership, tmp_path, staging) -> None:
    bucket = seaweed.create_bucket()
    settings = GrantSettings(bucket=bucket, service_hotkey=keys["service"].ss58_address, endpoint_url=seaweed.endpoint_url,
                             access_key=seaweed.access_key, secret_key=seaweed.secret_key)
    workers = []
    for _ in range(2):
        store = SqliteNonceStore(tmp_path / "nonces.sqlite", retention=130)
        app = create_app(settings, membership, nonce_store=store, bucket=BucketAccess(settings, client=seaweed.admin))
        workers.append(ServerThread(app).start())
    try:
        staged = make_batch(staging, keys["miner0"].ss58_address, rows=20, seed=804).files[0]
        first, headers, body = signed_post(workers[0].url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"],
                                           keys["service"].ss58_address)
        assert first.status_code == 200
        replay = httpx.post(workers[1].url + protocol.PATH_UPLOAD, content=body, headers=headers)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed_request"
    finally:
        for worker in workers:
            worker.stop()
    assert seaweed.list_keys(bucket) == []


def test_sqlite_nonce_store_is_safe_under_concurrency(tmp_path) -> None:
    stores = [SqliteNonceStore(tmp_path / "n.sqlite") for _ in range(4)]
    results: list[bool] = []
    lock = threading.Lock()

    def hammer(store: SqliteNonceStore) -> None:
        for nonce in range(200):
            accepted = store.check_and_store("5hotkey", nonce)
            with lock:
                results.append(accepted)

    threads = [threading.Thread(target=hammer, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 200  # each nonce accepted exactly once


def test_gateway_that_strips_a_path_prefix(seaweed, keys, membership, staging) -> None:
    bucket = seaweed.create_bucket()
    settings = GrantSettings(bucket=bucket, service_hotkey=keys["service"].ss58_address, endpoint_url=seaweed.endpoint_url,
                             access_key=seaweed.access_key, secret_key=seaweed.secret_key, path_prefix="/s3-grants")
    inner = create_app(settings, membership, bucket=BucketAccess(settings, client=seaweed.admin))

    async def gateway(scope: dict[str, Any], receive: Any, send: Any) -> None:  # like nginx `location /s3-grants/`
        if scope["type"] == "http":
            if not scope["path"].startswith("/s3-grants/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            path = scope["path"][len("/s3-grants"):]
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await inner(scope, receive, send)

    with ServerThread(gateway) as server:
        miner = keys["miner0"]
        batch = make_batch(staging, miner.ss58_address, rows=30, seed=805)
        from storage_core.values import BackendContext

        context = BackendContext(backend_id="s3", options={"bucket": bucket, "grant_url": server.url + "/s3-grants"},
                                 hotkey=miner.ss58_address, signer=miner)
        receipt = plugin.storage_upload(context, batch)
    assert seaweed.list_keys(bucket) == [receipt.objects[0].key]


def test_chain_membership_from_the_dev_chain(seaweed, keys, tmp_path, staging, monkeypatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    from storage_core.testing.devchain import DevChain

    chain = DevChain.create(tmp_path / "chain.json")
    chain.create_subnet(13, keys["service"].ss58_address)
    chain.register(13, keys["miner0"].ss58_address)
    chain.register(13, keys["validator"].ss58_address, validator_permit=True)
    membership = chain_membership(13, f"devchain:{tmp_path / 'chain.json'}", refresh_seconds=0.0)
    assert membership.is_registered(keys["miner0"].ss58_address)
    assert not membership.is_registered(keys["outsider"].ss58_address)
    assert membership.has_validator_permit(keys["validator"].ss58_address)
    assert not membership.has_validator_permit(keys["miner0"].ss58_address)
    bucket = seaweed.create_bucket()
    settings = GrantSettings(bucket=bucket, service_hotkey=keys["service"].ss58_address, endpoint_url=seaweed.endpoint_url,
                             access_key=seaweed.access_key, secret_key=seaweed.secret_key)
    with ServerThread(create_app(settings, membership, bucket=BucketAccess(settings, client=seaweed.admin))) as server:
        staged = make_batch(staging, keys["miner0"].ss58_address, rows=20, seed=806).files[0]
        ok, _, _ = signed_post(server.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"], keys["service"].ss58_address)
        assert ok.status_code == 200
        chain.deregister(13, keys["miner0"].ss58_address)
        gone, _, _ = signed_post(server.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"], keys["service"].ss58_address)
        assert gone.status_code == 403 and gone.json()["error"]["code"] == "not_registered"


def test_static_membership_from_a_file(tmp_path, keys) -> None:
    path = tmp_path / "allow.json"
    path.write_text(json.dumps({"miners": [keys["miner0"].ss58_address], "validators": [keys["validator"].ss58_address]}))
    membership = static_membership(allowlist=path)
    assert membership.is_registered(keys["miner0"].ss58_address) and membership.has_validator_permit(keys["validator"].ss58_address)
    path.write_text(json.dumps({"miners": ["not-a-hotkey"]}))
    with pytest.raises(StorageCoreError, match="not an ss58 hotkey"):
        static_membership(allowlist=path)
    path.write_text("{")
    with pytest.raises(StorageCoreError, match="cannot read the allow-list"):
        static_membership(allowlist=path)


def test_settings_validation_and_environment(keys) -> None:
    hotkey = keys["service"].ss58_address
    with pytest.raises(ValueError, match="freshness_window"):
        GrantSettings(bucket="b", service_hotkey=hotkey, freshness_window=0)
    with pytest.raises(ValueError, match="ss58"):
        GrantSettings(bucket="b", service_hotkey="nope")
    settings = settings_from_env({"STORAGE_CORE_S3_BUCKET": "b", "STORAGE_CORE_S3_SERVICE_HOTKEY": hotkey,
                                  "STORAGE_CORE_S3_FRESHNESS_WINDOW": "30", "AWS_ACCESS_KEY_ID": "AK"})
    assert settings.freshness_window == 30.0 and settings.access_key == "AK" and settings.bucket == "b"
    with pytest.raises(ValueError, match="STORAGE_CORE_S3_RATE_LIMIT"):
        settings_from_env({"STORAGE_CORE_S3_BUCKET": "b", "STORAGE_CORE_S3_SERVICE_HOTKEY": hotkey,
                           "STORAGE_CORE_S3_RATE_LIMIT": "fast"})
    with pytest.raises(ValueError, match="BUCKET"):
        settings_from_env({})
    assert "secret" not in repr(GrantSettings(bucket="b", service_hotkey=hotkey, secret_key="secret"))


# -- signing wrapper -------------------------------------------------------------------------------------


def test_http_auth_wrapper_maps_every_failure(keys) -> None:
    signer, service = keys["miner0"], keys["service"].ss58_address
    store = http_auth.memory_nonce_store(130)
    headers = http_auth.sign_request(signer, "POST", "/p", b"{}", service)
    assert http_auth.verify_request(headers, b"{}", "POST", "/p", service, nonce_store=store) == signer.ss58_address
    cases = [
        (headers, b"{}", "/p", http_auth.ReplayedRequestError),
        (http_auth.sign_request(signer, "POST", "/p", b"{}", service), b"{x}", "/p", http_auth.BadSignatureError),
        (http_auth.sign_request(signer, "POST", "/p", b"{}", service), b"{}", "/q", http_auth.BadSignatureError),
        (http_auth.sign_request(signer, "POST", "/p", b"{}", keys["miner1"].ss58_address), b"{}", "/p", http_auth.WrongReceiverError),
        ({"X-Bittensor-Version": "1"}, b"{}", "/p", http_auth.MalformedAuthError),
        (http_auth.sign_request(signer, "POST", "/p", b"{}", service, nonce_ns=time.time_ns() - 61 * 10**9), b"{}", "/p",
         http_auth.StaleRequestError),
    ]
    for case_headers, body, path, error in cases:
        with pytest.raises(error) as raised:
            http_auth.verify_request(case_headers, body, "POST", path, service, nonce_store=store)
        assert isinstance(raised.value, StorageCoreError) and str(raised.value)
    with pytest.raises(StorageCoreError, match="freshness window"):
        http_auth.verify_request(headers, b"{}", "POST", "/p", service, nonce_store=http_auth.memory_nonce_store(5))
    with pytest.raises(StorageCoreError, match="no signer"):
        http_auth.sign_request(None, "POST", "/p")


def test_nonces_are_unique_under_concurrency(keys) -> None:
    nonces: list[int] = []
    lock = threading.Lock()

    def sign() -> None:
        for _ in range(300):
            headers = http_auth.sign_request(keys["miner0"], "POST", "/p", b"", keys["service"].ss58_address)
            with lock:
                nonces.append(int(headers["X-Bittensor-Nonce"]))

    threads = [threading.Thread(target=sign) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(nonces)) == len(nonces) == 1200


def test_wallet_signer(tmp_path, keys) -> None:
    from storage_core.chain.keys import create_wallet

    wallet = create_wallet("w", "h", tmp_path)
    headers = http_auth.sign_request(wallet, "POST", "/p", b"x", keys["service"].ss58_address)
    assert http_auth.verify_request(headers, b"x", "POST", "/p", keys["service"].ss58_address) == wallet.hotkey.ss58_address


# -- CLI -----------------------------------------------------------------------------------------------------


def _cli() -> click.Group:
    @click.group()
    def root() -> None:
        pass

    plugin.storage_register_commands(cli=root)
    return root


def test_serve_command_check_mode(keys, tmp_path) -> None:
    allow = tmp_path / "allow.json"
    allow.write_text(json.dumps({"miners": [keys["miner0"].ss58_address]}))
    result = CliRunner().invoke(
        _cli(),
        ["s3", "serve", "--bucket", "b", "--endpoint-url", "http://127.0.0.1:1", "--allowlist", str(allow),
         "--service-hotkey", keys["service"].ss58_address, "--check"],
        env={"STORAGE_CORE_S3_ACCESS_KEY": "AK", "STORAGE_CORE_S3_SECRET_KEY": "SK"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["bucket"] == "b" and summary["membership"].startswith("static: 1 miners")
    assert "SK" not in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bucket", "b"], "--netuid"),
        (["--bucket", "b", "--allow-miner", "x"], "not an ss58 hotkey"),
        (["--bucket", "b", "--allow-miner", "5Cu7eemgkcL9TDbxmbtiaL8VcL4YHqKURDJ5DLpxge888krt", "--netuid", "13"], "not both"),
        (["--bucket", "b", "--allowlist", "/nonexistent/allow.json"], "allow-list"),
        (["--bucket", "b", "--freshness-window", "-1", "--allow-miner", "5Cu7eemgkcL9TDbxmbtiaL8VcL4YHqKURDJ5DLpxge888krt"],
         "freshness_window"),
        ([], "--bucket"),
    ],
)
def test_serve_command_bad_input(args: list[str], needle: str, keys) -> None:
    result = CliRunner().invoke(_cli(), ["s3", "serve", *args, "--service-hotkey", keys["service"].ss58_address, "--check"])
    assert result.exit_code != 0
    assert needle in (result.output + str(result.exception or ""))


def test_serve_command_is_in_the_storage_core_cli() -> None:
    from storage_core.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["s3", "serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--netuid" in result.output and "--allowlist" in result.output


def test_serve_command_runs_the_service(keys, tmp_path, seaweed, staging) -> None:
    """`storage-core s3 serve` as a real process: it answers, logs JSON lines, and stops by its pid."""
    from storage_core_s3.testing import GrantServiceProcess

    bucket = seaweed.create_bucket()
    service = GrantServiceProcess(
        bucket=bucket, endpoint_url=seaweed.endpoint_url, access_key=seaweed.access_key,
        secret_key=seaweed.secret_key, service_hotkey=keys["service"].ss58_address,
        miners=[keys["miner0"].ss58_address], extra_args=["--nonce-db", str(tmp_path / "nonces.sqlite")],
        log_path=tmp_path / "service.log",
    )
    with service:
        assert httpx.get(service.url + "/v1/info").json()["bucket"] == bucket
        miner = keys["miner0"]
        batch = make_batch(staging, miner.ss58_address, rows=30, seed=808)
        from storage_core.values import BackendContext

        context = BackendContext(backend_id="s3", options={"bucket": bucket, "grant_url": service.url},
                                 hotkey=miner.ss58_address, signer=miner)
        receipt = plugin.storage_upload(context, batch)
        pid = service.pid
    assert service.pid is None and pid is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
    lines = [json.loads(line) for line in (tmp_path / "service.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("path") == protocol.PATH_UPLOAD and line.get("status") == 200 for line in lines)
    assert seaweed.list_keys(bucket) == [receipt.objects[0].key]
    assert (tmp_path / "nonces.sqlite").exists()


def test_service_with_wrong_store_credentials_answers_502(seaweed, keys, membership, staging) -> None:
    bucket = seaweed.create_bucket()
    settings = GrantSettings(bucket=bucket, service_hotkey=keys["service"].ss58_address, endpoint_url=seaweed.endpoint_url,
                             access_key=seaweed.access_key, secret_key="not-the-secret")
    with ServerThread(create_app(settings, membership)) as server:
        staged = make_batch(staging, keys["miner0"].ss58_address, rows=20, seed=807).files[0]
        response, _, _ = signed_post(server.url, protocol.PATH_UPLOAD, grant_request(staged), keys["miner0"],
                                     keys["service"].ss58_address)
        assert response.status_code == 502 and response.json()["error"]["code"] == "storage_error"
        assert "not-the-secret" not in response.text and "SignatureDoesNotMatch" not in response.text
        assert httpx.get(server.url + protocol.PATH_HEALTH + "?deep=1").status_code == 503
    assert seaweed.list_keys(bucket) == []
