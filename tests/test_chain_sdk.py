"""storage_core.chain behind one seam for bittensor 10.3 (subnet 13's pin) and 11.x: the same tests pass on both.

Run under `make test` (11.x) and `make test-sn13` (10.3). The btauth/1 interop tests check our own signer and
verifier against bittensor 11's ``bt.http_auth`` byte for byte, so a 10.3 miner talks to an 11.x service.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from storage_core.chain import btauth, sdk
from storage_core.chain.commitments import commit_payload, hotkey_uid, read_commitment, read_owner_hotkey
from storage_core.chain.http_auth import BadSignatureError, ReplayedRequestError, sign_request, verify_request
from storage_core.chain.keys import create_wallet, hotkey_address, keypair_from_uri, load_wallet
from storage_core.chain.membership import read_membership
from storage_core.chain.subtensor import open_subtensor
from storage_core.errors import ChainError, StorageCoreError
from storage_core.facades import create_config_from_chain_or_env

NETUID = 13


def test_commitments_round_trip_and_chain_errors(chain, owner):
    sub = chain.subtensor()
    receipt = commit_payload(sub, NETUID, owner, "z" * 300)
    assert [len(field) for field in receipt.fields] == [128, 128, 44] and receipt.block_hash
    record = read_commitment(sub, NETUID, owner.ss58_address)
    assert record is not None and record.payload == b"z" * 300 and record.block == chain.block
    assert read_owner_hotkey(sub, NETUID) == owner.ss58_address
    assert hotkey_uid(sub, NETUID, owner.ss58_address) == 0
    stranger = keypair_from_uri("//sdk-stranger")
    assert hotkey_uid(sub, NETUID, stranger.ss58_address) is None
    with pytest.raises(ChainError, match=f"hotkey {stranger.ss58_address} is not registered on subnet 13"):
        commit_payload(sub, NETUID, stranger, "x")
    with pytest.raises(ChainError, match="subnet 99 has no owner hotkey"):
        read_owner_hotkey(sub, 99)


def test_a_wallet_on_disk_commits_and_signs(chain, tmp_path):
    wallet = create_wallet("sdk", "hot", tmp_path / "wallets")
    assert isinstance(wallet, sdk.Wallet)
    chain.register(NETUID, hotkey_address(wallet))
    commit_payload(chain.subtensor(), NETUID, wallet, "from a wallet")
    assert read_commitment(chain.subtensor(), NETUID, hotkey_address(wallet)).payload == b"from a wallet"
    loaded = load_wallet("sdk", "hot", tmp_path / "wallets")
    headers = sign_request(loaded, "POST", "/v1/x", b"{}", receiver_ss58="5" * 48)
    assert headers[btauth.HEADER_HOTKEY] == hotkey_address(wallet)
    with pytest.raises(StorageCoreError, match="cannot open wallet 'nobody' hotkey 'hot'"):
        load_wallet("nobody", "hot", tmp_path / "wallets")


def test_membership_and_the_config_facade(chain, owner, tmp_path):
    miner = keypair_from_uri("//sdk-miner")
    chain.register(NETUID, miner.ss58_address)
    view = read_membership(chain.subtensor(), NETUID)
    assert view.registered == {owner.ss58_address, miner.ss58_address} and view.validators == {owner.ss58_address}
    commit_payload(chain.subtensor(), NETUID, owner, "sc1;p=all;f=")
    config = create_config_from_chain_or_env(chain.subtensor(), NETUID, cache_path=tmp_path / "c.json", environ={})
    assert config.source_of("backends") in {"chain", "default"}


def test_the_dev_chain_is_one_chain_across_processes(chain, owner):
    commit_payload(chain.subtensor(), NETUID, owner, "seen elsewhere")
    code = ("import sys; from storage_core.chain.commitments import read_commitment; "
            "from storage_core.chain.subtensor import open_subtensor; "
            f"print(read_commitment(open_subtensor('devchain:' + sys.argv[1]), {NETUID}, sys.argv[2]).payload.decode())")
    out = subprocess.run([sys.executable, "-c", code, str(chain.path), owner.ss58_address],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "seen elsewhere"


def test_bad_network_names_are_one_clear_line():
    with pytest.raises(ChainError, match="Unknown network") as caught:
        open_subtensor("no-such-network")
    assert "\n" not in str(caught.value)


def test_btauth_fallback_signs_and_verifies():
    client, server = keypair_from_uri("//sdk-client"), keypair_from_uri("//sdk-server")
    headers = btauth.sign(client, method="post", path="/v1/a?b=1", body=b"body", receiver_ss58=server.ss58_address)
    store = btauth.InMemoryNonceStore(retention=120)
    caller = btauth.verify(headers, b"body", method="POST", path="/v1/a?b=1", self_hotkey_ss58=server.ss58_address,
                           max_age=60, allowed_skew=60, nonce_store=store)
    assert caller.hotkey_ss58 == client.ss58_address
    with pytest.raises(btauth.ReplayedRequest):
        btauth.verify(headers, b"body", method="POST", path="/v1/a?b=1", self_hotkey_ss58=server.ss58_address,
                      max_age=60, allowed_skew=60, nonce_store=store)
    with pytest.raises(btauth.BadSignature):
        btauth.verify(headers, b"other", method="POST", path="/v1/a?b=1", self_hotkey_ss58=server.ss58_address,
                      max_age=60, allowed_skew=60, nonce_store=store)


def test_http_auth_wrapper_works_on_either_sdk():
    client, server = keypair_from_uri("//sdk-client"), keypair_from_uri("//sdk-server")
    headers = sign_request(client, "POST", "/v1/grant", b"{}", receiver_ss58=server.ss58_address)
    assert verify_request(headers, b"{}", "POST", "/v1/grant", server.ss58_address) == client.ss58_address
    with pytest.raises(ReplayedRequestError):
        verify_request(headers, b"{}", "POST", "/v1/grant", server.ss58_address)
    fresh = sign_request(client, "POST", "/v1/grant", b"{}", receiver_ss58=server.ss58_address)
    with pytest.raises(BadSignatureError):
        verify_request(fresh, b"{ }", "POST", "/v1/grant", server.ss58_address)


@pytest.mark.skipif(not sdk.HAS_HTTP_AUTH, reason="bittensor 11's bt.http_auth is the reference; absent in 10.3")
def test_btauth_fallback_is_byte_compatible_with_bt_http_auth():
    from bittensor import http_auth

    client, server = keypair_from_uri("//sdk-client"), keypair_from_uri("//sdk-server")
    nonce = time.time_ns()
    ours = btauth.sign(client, method="PUT", path="/p?q", body=b"b", receiver_ss58=server.ss58_address, nonce_ns=nonce)
    theirs = http_auth.sign(client, method="PUT", path="/p?q", body=b"b", receiver_ss58=server.ss58_address,
                            nonce_ns=nonce)
    assert {k: v for k, v in ours.items() if k != btauth.HEADER_SIGNATURE} == {
        k: v for k, v in theirs.items() if k != http_auth.HEADER_SIGNATURE}
    assert btauth.build_payload(method="PUT", path="/p?q", body=b"b", nonce_ns=nonce, sender_ss58=client.ss58_address,
                                receiver_ss58=server.ss58_address) == http_auth.build_payload(
        scheme="sr25519", method="PUT", path="/p?q", body=b"b", nonce_ns=nonce, sender_ss58=client.ss58_address,
        receiver_ss58=server.ss58_address)
    # a 10.3 miner's request (our signer) verifies on an 11.x service, and the reverse
    assert http_auth.verify(ours, b"b", method="PUT", path="/p?q", self_hotkey_ss58=server.ss58_address,
                            nonce_store=http_auth.InMemoryNonceStore()).hotkey_ss58 == client.ss58_address
    assert btauth.verify(theirs, b"b", method="PUT", path="/p?q", self_hotkey_ss58=server.ss58_address,
                         nonce_store=btauth.InMemoryNonceStore()).hotkey_ss58 == client.ss58_address


def test_undecodable_bytes_on_chain_keep_the_last_known_good_config(chain, owner, tmp_path):
    from storage_core.chain.source import ConfigSource
    from storage_core.config import DEFAULT_CONFIG, encode_compact

    sub = chain.subtensor()
    wanted = DEFAULT_CONFIG.evolve_backend("s3", rollout_percent=25)
    node = ConfigSource(sub, NETUID, cache_path=tmp_path / "cache.json", environ={})
    commit_payload(sub, NETUID, owner, encode_compact(wanted))
    assert node.refresh().config == wanted
    assert sdk.set_commitment(sub, NETUID, owner, [b"sc1;p=any;f=\xff\xfe"]).success  # not UTF-8: no text API can
    resolved = node.refresh()
    assert resolved.config == wanted and resolved.source_of("backends.s3.rollout_percent") == "chain (last known good)"
