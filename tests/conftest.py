"""Shared fixtures for the core's tests."""

from __future__ import annotations

import pytest

from storage_core.chain.keys import keypair_from_uri
from storage_core.testing.devchain import DevChain

#: The subnet the dev-chain tests use.
DEV_NETUID = 13


@pytest.fixture(autouse=True)
def _isolated_bittensor_cache(tmp_path, monkeypatch):
    """bittensor's connect writes a token-symbol cache under $HOME; keep every test's in its own tmp dir."""
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))


@pytest.fixture
def owner():
    """The subnet owner's hotkey on the dev chain."""
    return keypair_from_uri("//devchain-owner")


@pytest.fixture
def chain(tmp_path, owner) -> DevChain:
    """A fresh dev chain with subnet 13 owned by ``owner``."""
    chain = DevChain.create(tmp_path / "chain.json")
    chain.create_subnet(DEV_NETUID, owner.ss58_address)
    return chain


@pytest.fixture(scope="session")
def miner_keys():
    """Deterministic development keypairs for miners and a validator."""
    return [keypair_from_uri(f"//miner-{index}") for index in range(4)]


@pytest.fixture(scope="session")
def validator_key():
    return keypair_from_uri("//validator-0")
