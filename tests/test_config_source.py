"""ConfigSource: overrides > chain > environment > defaults, last known good, pointers, polling; the facade."""

from __future__ import annotations

import http.server
import logging
import threading
import time

import pytest

from storage_core.chain.commitments import commit_payload
from storage_core.chain.source import ChainKey, ConfigSource, DocumentFetcher, LastKnownGood
from storage_core.config import (
    DEFAULT_CONFIG,
    ConfigPointer,
    encode_compact,
    encode_pointer,
)
from storage_core.facades import create_config_from_chain_or_env

NETUID = 13


@pytest.fixture(scope="module")
def documents():
    """A loopback HTTP server answering GET /<name> from a dict the test fills."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = served.get(self.path.lstrip("/"))
            if body is not None and body.startswith(b"REDIRECT "):
                self.send_response(302)
                self.send_header("Location", body.removeprefix(b"REDIRECT ").decode())
                self.end_headers()
                return
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def sub(chain):
    return chain.subtensor()


def source(sub, tmp_path, **kwargs) -> ConfigSource:
    kwargs.setdefault("environ", {})
    return ConfigSource(sub, NETUID, cache_path=tmp_path / "cache" / "config.json", **kwargs)


S3_AT_5 = DEFAULT_CONFIG.evolve_backend("s3", rollout_percent=5, options={"bucket": "sn13"})
S3_AT_25 = S3_AT_5.evolve_backend("s3", rollout_percent=25)


def test_no_chain_uses_environment_then_defaults(tmp_path):
    env = {"STORAGE_CORE_S3_ROLLOUT": "40", "STORAGE_CORE_S3_OPTION_BUCKET": "from-env"}
    resolved = ConfigSource(None, NETUID, cache_path=tmp_path / "c.json", environ=env).refresh()
    assert resolved.config.backends["s3"].rollout_percent == 40
    assert resolved.source_of("backends.s3.rollout_percent") == "environment"
    assert resolved.source_of("backends.s3.options.bucket") == "environment"
    assert resolved.source_of("backends.huggingface.enabled") == "default"


def test_precedence_overrides_chain_environment_defaults(sub, owner, tmp_path):
    commit_payload(sub, NETUID, owner, encode_compact(S3_AT_5))
    env = {"STORAGE_CORE_S3_ROLLOUT": "40", "STORAGE_CORE_LOCAL_ENABLED": "true"}
    overrides = {"backends": {"huggingface": {"rollout_percent": 50}}}
    resolved = source(sub, tmp_path, environ=env, overrides=overrides).refresh()
    assert resolved.config.backends["s3"].rollout_percent == 5
    assert resolved.source_of("backends.s3.rollout_percent") == "chain"
    assert resolved.source_of("backends.local.enabled") == "environment"
    assert resolved.config.backends["huggingface"].rollout_percent == 50
    assert resolved.source_of("backends.huggingface.rollout_percent") == "override"


def test_bad_environment_does_not_stop_the_node(sub, owner, tmp_path, caplog):
    commit_payload(sub, NETUID, owner, encode_compact(S3_AT_5))
    resolved = source(sub, tmp_path, environ={"STORAGE_CORE_S3_ENABLED": "maybe"}).refresh()
    assert resolved.config == S3_AT_5
    assert "STORAGE_CORE_S3_ENABLED" in caplog.text


@pytest.mark.parametrize(
    ("bad_payload", "reason"),
    [
        (b"sc1;p=any;f=\xff\xfe", "not valid UTF-8"),
        (b"sc1;b=s3:1:150:", "must be within 0..100"),
        (b"{\"version\": 1}", "does not start with"),
    ],
)
def test_undecodable_commitment_keeps_last_known_good(sub, owner, tmp_path, caplog, bad_payload, reason):
    good = source(sub, tmp_path)
    commit_payload(sub, NETUID, owner, encode_compact(S3_AT_25))
    assert good.refresh().config == S3_AT_25
    _commit_raw(sub, owner, bad_payload)  # raw bytes: commit_payload only takes valid text
    with caplog.at_level(logging.ERROR):
        resolved = good.refresh()
    assert resolved.config == S3_AT_25
    assert resolved.source_of("backends.s3.rollout_percent") == "chain (last known good)"
    assert reason in caplog.text and "keeping the last known good" in caplog.text
    # a fresh node with the same cache file (a restart) also keeps it
    assert source(sub, tmp_path).refresh().config == S3_AT_25
    # a node with no cache falls back to the defaults
    assert ConfigSource(sub, NETUID, cache_path=tmp_path / "other.json", environ={}).refresh().config == DEFAULT_CONFIG


def _commit_raw(sub, owner, data: bytes) -> None:
    import bittensor as bt

    fields = [{f"Raw{len(data[i:i + 128])}": "0x" + data[i:i + 128].hex()} for i in range(0, len(data), 128)]
    call = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": fields})
    assert sub.submit_call(call, owner, signer="hotkey").success


def test_pointer_is_fetched_and_verified(sub, owner, tmp_path, documents):
    served, base = documents
    big = S3_AT_5.evolve_backend("s3", options={"note": "n" * 500})
    served["good.json"] = big.canonical_json().encode()
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(big.sha256(), f"{base}/good.json")))
    node = source(sub, tmp_path)
    assert node.refresh().config == big
    assert node.last_reading.pointer.url == f"{base}/good.json"


def test_tampered_pointer_document_is_refused(sub, owner, tmp_path, documents, caplog):
    served, base = documents
    node = source(sub, tmp_path)
    served["doc.json"] = S3_AT_5.canonical_json().encode()
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_5.sha256(), f"{base}/doc.json")))
    assert node.refresh().config == S3_AT_5
    tampered = S3_AT_5.evolve_backend("s3", options={"bucket": "attacker"})
    served["doc.json"] = tampered.canonical_json().encode()
    with caplog.at_level(logging.ERROR):
        resolved = node.refresh()
    assert resolved.config == S3_AT_5
    assert node.last_reading.status == "invalid" and "sha256" in node.last_reading.error
    assert "keeping the last known good" in caplog.text
    served["doc.json"] = b"{not json"
    assert node.refresh().config == S3_AT_5
    assert "sha256" in node.last_reading.error


def test_pointer_from_a_local_mirror_and_refused_schemes(sub, owner, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{S3_AT_25.sha256()}.json").write_text(S3_AT_25.canonical_json())
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_25.sha256(), "https://owner.invalid/c.json")))
    assert source(sub, tmp_path, fetcher=DocumentFetcher(mirror=mirror)).refresh().config == S3_AT_25
    secret = tmp_path / "secret.json"
    secret.write_text(S3_AT_25.canonical_json())
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_25.sha256(), f"file://{secret}")))
    node = source(sub, tmp_path / "fresh")
    assert node.refresh().config == DEFAULT_CONFIG
    assert "is not http(s)" in node.last_reading.error


def test_corrupt_cache_file_is_ignored(chain, sub, owner, tmp_path, caplog):
    cache = LastKnownGood(tmp_path / "cache.json")
    cache.path.write_text("{ half a file")
    assert cache.load(ChainKey(chain.genesis_hash, NETUID)) is None
    assert "unreadable config cache" in caplog.text
    _commit_raw(sub, owner, b"garbage")
    node = ConfigSource(sub, NETUID, cache_path=cache.path, environ={})
    assert node.refresh().config == DEFAULT_CONFIG


def test_poller_picks_up_changes_without_restart(sub, owner, tmp_path):
    commit_payload(sub, NETUID, owner, encode_compact(S3_AT_5))
    node = source(sub, tmp_path, interval=0.05)
    changes = []
    node.on_change(lambda resolved: changes.append(resolved.config))
    assert node.current().config == S3_AT_5
    with node:
        commit_payload(sub, NETUID, owner, encode_compact(S3_AT_25))
        deadline = time.monotonic() + 20
        while node.current().config != S3_AT_25 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert node.current().config == S3_AT_25
    assert changes[-1] == S3_AT_25


def test_facade_exposes_the_integration_guide_attributes(sub, owner, tmp_path):
    config = create_config_from_chain_or_env(None, NETUID, cache_path=tmp_path / "a.json", environ={})
    assert config.use_huggingface and config.use_s3 and config.s3_rollout_percentage == 0
    commit_payload(sub, NETUID, owner, encode_compact(
        S3_AT_25.evolve_backend("s3", options={"grant_url": "https://grant.invalid", "region": "eu-1"})
        .evolve_backend("huggingface", enabled=False)
    ))
    config = create_config_from_chain_or_env(sub, NETUID, cache_path=tmp_path / "b.json", environ={})
    assert config.use_s3 and not config.use_huggingface
    assert config.s3_rollout_percentage == 25 and config.huggingface_rollout_percentage == 100
    assert (config.bucket_name, config.auth_endpoint, config.region) == ("sn13", "https://grant.invalid", "eu-1")
    assert config.storage.backends["s3"].enabled and config.source_of("backends.s3.enabled") == "chain"
    assert config.use_local is False
    with pytest.raises(AttributeError):
        config.no_such_attribute  # noqa: B018


def test_pointer_redirects_only_to_http(sub, owner, tmp_path, documents):
    served, base = documents
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_5.sha256(), f"{base}/missing.json")))
    node = source(sub, tmp_path)
    assert node.refresh().config == DEFAULT_CONFIG
    assert "cannot fetch" in node.last_reading.error and "404" in node.last_reading.error
    secret = tmp_path / "secret.json"
    secret.write_text(S3_AT_5.canonical_json())
    served["to-file.json"] = b"REDIRECT file://" + str(secret).encode()
    served["to-good.json"] = b"REDIRECT " + f"{base}/good5.json".encode()
    served["good5.json"] = S3_AT_5.canonical_json().encode()
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_5.sha256(), f"{base}/to-file.json")))
    assert node.refresh().config == DEFAULT_CONFIG
    assert "file://" in node.last_reading.error and "redirect" in node.last_reading.error.lower()
    commit_payload(sub, NETUID, owner, encode_pointer(ConfigPointer(S3_AT_5.sha256(), f"{base}/to-good.json")))
    assert node.refresh().config == S3_AT_5
