"""`python -m demo --resume DIR` starts a kept subnet's services again on its kept data, and stops them on Ctrl-C.

The kept directory is what `python -m demo --keep DIR` leaves (chain, wallets, SeaweedFS data, Hub repos,
databases, with one round uploaded), made here in-process to keep the test fast. The resumed services answer
the README's `storage-core` commands at the URLs the config on chain names; Ctrl-C stops every process the
resume started, by its own pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import process_alive
from demo.world import LocalSubnet
from storage_core.chain.source import read_chain_config
from storage_core.miner import MinerStorage
from storage_core.testing.devchain import DevChain
from storage_core.testing.minerdb import create_miner_db

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = 10


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Path:
    """A subnet as `--keep` leaves it: config on chain, one miner's round uploaded to S3 and the Hub, all stopped."""
    root = tmp_path_factory.mktemp("kept")
    with LocalSubnet(root, miners=1) as world:
        world.publish(world.config(100))
        miner = world.miners[0]
        db = root / "dbs" / f"{miner.name}.sqlite"
        create_miner_db(db, 200, seed=3)
        storage = MinerStorage(world.node(miner), db)
        try:
            assert storage.upload_data().result.ok
        finally:
            storage.close()
    return root


def _chain(root: Path) -> DevChain:
    return DevChain(root / "devchain.json")


def _resume(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "demo", "--resume", str(root)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_resume_serves_the_kept_data_to_storage_core_and_ctrl_c_stops_it(kept):
    config = read_chain_config(_chain(kept).subtensor(), 13).config
    grant_url = config.backends["s3"].options["grant_url"]
    hub_url = config.backends["huggingface"].options["endpoint"]
    assert not _listening(grant_url) and not _listening(hub_url)
    process = _resume(kept)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "services are up" in line or time.monotonic() > deadline:
            break
    output = "".join(lines)
    try:
        assert "services are up" in output, output[-3000:]
        seaweed_pid = int(re.search(r"SeaweedFS at \S+ \(pid (\d+)\)", output).group(1))
        assert process_alive(seaweed_pid) and _listening(grant_url) and _listening(hub_url)  # the URLs on chain again
        env = dict(os.environ)
        for name, value in re.findall(r"^export (STORAGE_CORE_\w+)=(\S+)$", output, re.M):
            env[name] = value
        assert env["STORAGE_CORE_DEVCHAIN"] == str((kept / "devchain.json").resolve())
        wallet = re.search(r'^WALLET="(.*)"$', output, re.M).group(1).split()
        miner = re.search(r"--miner (\S+)", output).group(1)
        env.update(HF_TOKEN="hf_validator_token", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
        validate = subprocess.run(
            [sys.executable, "-m", "storage_core", "validate", "--wallet.name", "validator", *wallet, "--miner", miner,
             "--sample", str(SAMPLE), "--db", str(kept / "dbs" / "miner0.sqlite"), "--json"],
            env=env, cwd=kept, capture_output=True, text=True, timeout=120)
        assert validate.returncode == 0, validate.stdout[-2000:] + validate.stderr[-2000:]
        answer = json.loads(validate.stdout)
        assert answer["counts"]["valid"] == SAMPLE
        assert {o["backend"]: (o["status"], o["found"]) for o in answer["outcomes"]} == {
            "s3": ("ok", SAMPLE), "huggingface": ("ok", SAMPLE)}  # the kept objects, from both resumed stores
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest[-2000:]
    assert "stopped every service it started" in rest
    assert not process_alive(seaweed_pid) and not _listening(grant_url) and not _listening(hub_url)



def test_a_taken_port_moves_the_service_and_the_owner_republishes_its_url(kept):
    config = read_chain_config(_chain(kept).subtensor(), 13).config
    old_grant_url = config.backends["s3"].options["grant_url"]
    port = int(old_grant_url.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with LocalSubnet.kept(kept) as world:
            assert world.moved == ["s3"] and world.grants.url != old_grant_url
            options = read_chain_config(_chain(kept).subtensor(), 13).config.backends["s3"].options
            assert options["grant_url"] == world.grants.url and options["bucket"] == "sn13-demo"
            assert world.hub.url == config.backends["huggingface"].options["endpoint"]  # its port was free
            assert world.seaweed.list_keys(world.bucket_name, "")  # the kept objects
            seaweed_pid, grant_url = world.seaweed.pid, world.grants.url
        assert not process_alive(seaweed_pid) and not _listening(grant_url)


def test_resume_without_a_kept_subnet_says_so(tmp_path, capsys):
    from demo.__main__ import resume

    assert resume(tmp_path) == 2
    assert "no kept subnet" in capsys.readouterr().out
