"""The dev chain behind the real bittensor SDK: subtensor's commitment rules, and one chain across processes."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import bittensor as bt
import pytest
from bittensor_core import Keypair

from storage_core.testing.devchain import MAX_SPACE, MIN_USED_SPACE, DevChain, DevChainError, epoch_index

NETUID = 13


def commit(sub, signer, fields, netuid=NETUID):
    call = bt.calls.Commitments.set_commitment(netuid=netuid, info={"fields": fields})
    return sub.submit_call(call, signer, signer="hotkey")


def raw(data: bytes) -> dict[str, str]:
    return {f"Raw{len(data)}": "0x" + data.hex()}


def test_sdk_reads_registration_owner_and_permits(chain, owner):
    miner = Keypair.create_from_uri("//devchain-miner")
    validator = Keypair.create_from_uri("//devchain-validator")
    assert chain.register(NETUID, miner.ss58_address) == 1
    assert chain.register(NETUID, validator.ss58_address, validator_permit=True) == 2
    assert chain.register(NETUID, miner.ss58_address) == 1  # idempotent
    sub = chain.subtensor()
    assert sub.query(bt.storage.SubtensorModule.SubnetOwnerHotkey, [NETUID]) == owner.ss58_address
    assert sub.read("uid", hotkey_ss58=miner.ss58_address, netuid=NETUID) == 1
    assert sub.read("uid", hotkey_ss58=Keypair.create_from_uri("//nobody").ss58_address, netuid=NETUID) is None
    assert sub.query(bt.storage.SubtensorModule.ValidatorPermit, [NETUID]) == [True, False, True]
    assert sub.read("netuids_for_hotkey", hotkey_ss58=miner.ss58_address) == [NETUID]
    neurons = sub.read("neurons", netuid=NETUID)
    assert [(n.uid, n.hotkey, n.validator_permit) for n in neurons] == [
        (0, owner.ss58_address, True), (1, miner.ss58_address, False), (2, validator.ss58_address, True)
    ]


def test_commitment_round_trips_through_the_sdk(chain, owner):
    sub = chain.subtensor()
    result = commit(sub, owner, [raw(b"hello "), raw(b"world")])
    assert result.success, result.message
    stored = sub.identity.commitment(NETUID, owner.ss58_address)
    assert stored.data == "hello world"
    assert stored.block == chain.block


def test_unregistered_signer_is_refused_and_nothing_changes(chain, owner):
    sub = chain.subtensor()
    stranger = Keypair.create_from_uri("//devchain-stranger")
    result = commit(sub, stranger, [raw(b"x")])
    assert not result.success
    assert result.error.name == "AccountNotAllowedCommit"
    assert sub.read("commitment", netuid=NETUID, hotkey_ss58=stranger.ss58_address) is None
    # unknown subnet: same rule
    assert commit(sub, owner, [raw(b"x")], netuid=99).error.name == "AccountNotAllowedCommit"


def test_field_count_and_field_size_limits(chain, owner):
    sub = chain.subtensor()
    result = commit(sub, owner, [raw(b"a"), raw(b"b"), raw(b"c"), raw(b"d")])
    assert result.error.name == "TooManyFieldsInCommitmentInfo"
    assert commit(sub, owner, [raw(b"a" * 128)] * 3).success
    with pytest.raises(ValueError, match="Raw129"):
        commit(sub, owner, [raw(b"a" * 129)])
    with pytest.raises(ValueError, match="exactly 4 bytes"):
        commit(sub, owner, [{"Raw4": "0x00"}])
    assert sub.identity.commitment(NETUID, owner.ss58_address).data == "a" * 384


def test_space_quota_per_epoch(chain, owner):
    sub = chain.subtensor()
    allowed = MAX_SPACE // MIN_USED_SPACE  # small commitments count as 100 bytes each
    for index in range(allowed):
        assert commit(sub, owner, [raw(str(index).encode())]).success
    before = sub.identity.commitment(NETUID, owner.ss58_address)
    refused = commit(sub, owner, [raw(b"over")])
    assert refused.error.name == "SpaceLimitExceeded"
    assert sub.identity.commitment(NETUID, owner.ss58_address) == before
    chain.advance_epochs(NETUID)
    assert commit(sub, owner, [raw(b"next epoch")]).success


def test_epoch_arithmetic_follows_subtensor(chain):
    tempo = 360
    assert epoch_index(NETUID, 0, tempo) == 0
    assert epoch_index(NETUID, 361 - NETUID - 1, tempo) == 1
    start = chain.block
    block = chain.advance_epochs(NETUID, 2)
    assert epoch_index(NETUID, block, tempo) == epoch_index(NETUID, start, tempo) + 2
    assert epoch_index(NETUID, block - 1, tempo) == epoch_index(NETUID, start, tempo) + 1


def test_admin_errors_name_the_problem(chain, tmp_path):
    with pytest.raises(DevChainError, match="already exists"):
        chain.create_subnet(NETUID, "x")
    with pytest.raises(DevChainError, match="subnet 7 does not exist"):
        chain.register(7, "x")
    with pytest.raises(DevChainError, match="no dev chain"):
        DevChain(tmp_path / "missing.json").block  # noqa: B018


def test_another_process_sees_the_same_chain(chain, owner):
    miner = Keypair.create_from_uri("//devchain-other-process")
    script = (
        "import sys; from storage_core.testing.devchain import DevChain; "
        "print(DevChain(sys.argv[1]).register(13, sys.argv[2], validator_permit=True))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(chain.path), miner.ss58_address],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    sub = chain.subtensor()
    assert sub.read("uid", hotkey_ss58=miner.ss58_address, netuid=NETUID) == 1


def _register_many(path: str, worker: int) -> None:
    chain = DevChain(path)
    for index in range(10):
        chain.register(NETUID, f"hotkey-{worker}-{index}")


def test_concurrent_writers_lose_nothing(chain):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_register_many, args=(str(chain.path), n)) for n in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    neurons = chain.read_state()["subnets"][str(NETUID)]["neurons"]
    assert len({n["uid"] for n in neurons}) == len(neurons) == 41
