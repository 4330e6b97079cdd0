"""Shared fixtures for the core's tests."""

from __future__ import annotations

import pytest

from storage_core.chain.keys import keypair_from_uri


@pytest.fixture(scope="session")
def miner_keys():
    """Deterministic development keypairs for miners and a validator."""
    return [keypair_from_uri(f"//miner-{index}") for index in range(4)]


@pytest.fixture(scope="session")
def validator_key():
    return keypair_from_uri("//validator-0")
