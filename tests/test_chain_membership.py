"""ChainMembership: registrations and validator permits from a cached view of the subnet."""

from __future__ import annotations

import pytest
from bittensor_core import Keypair

from storage_core.chain.membership import ChainMembership
from storage_core.errors import ChainError
from storage_core.membership import SubnetMembership
from storage_core.testing.devchain import DevChain

NETUID = 13


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def chain(tmp_path) -> DevChain:
    chain = DevChain.create(tmp_path / "chain.json")
    chain.create_subnet(NETUID, Keypair.create_from_uri("//membership-owner").ss58_address)
    return chain


def test_registration_and_permits(chain):
    miner, validator = "5miner", "5validator"
    chain.register(NETUID, miner)
    chain.register(NETUID, validator, validator_permit=True)
    membership: SubnetMembership = ChainMembership(chain.subtensor(), NETUID)
    assert membership.is_registered(miner) and not membership.has_validator_permit(miner)
    assert membership.is_registered(validator) and membership.has_validator_permit(validator)
    assert not membership.is_registered("5stranger") and not membership.has_validator_permit("5stranger")


def test_view_is_refreshed_after_the_interval(chain):
    clock = FakeClock()
    membership = ChainMembership(chain.subtensor(), NETUID, refresh_seconds=30, clock=clock)
    assert not membership.is_registered("5late")
    chain.register(NETUID, "5late")
    clock.now = 29
    assert not membership.is_registered("5late")  # cached
    clock.now = 31
    assert membership.is_registered("5late")
    chain.deregister(NETUID, "5late")
    clock.now = 62
    assert not membership.is_registered("5late")


def test_chain_failure_keeps_the_last_view(chain):
    clock = FakeClock()
    chain.register(NETUID, "5kept")
    membership = ChainMembership(chain.subtensor(), NETUID, refresh_seconds=1, clock=clock)
    assert membership.is_registered("5kept")
    chain.path.write_text("{ not json")
    clock.now = 5
    assert membership.is_registered("5kept")


def test_no_view_at_all_raises(tmp_path, chain):
    chain.path.write_text("{ not json")
    with pytest.raises(ChainError, match="cannot read the neurons of subnet 13"):
        ChainMembership(chain.subtensor(), NETUID).is_registered("5x")
