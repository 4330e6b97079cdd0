"""Long-running nodes (issue 20): real `storage-core` processes against a local subnet on the dev chain.

They follow the owner's config changes round by round, keep obligations to a backend whose plugin is broken,
validate fail-closed, exit on Ctrl-C with 130, and never hang on a backend that does not answer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from demo.world import LocalSubnet
from storage_core.testing.minerdb import create_miner_db
from storage_core.testing.packages import write_distribution

HANG = '''
    import threading
    from storage_core import PLUGIN_API_VERSION, BackendDescriptor, hookimpl

    @hookimpl
    def storage_backends():
        return [BackendDescriptor(id="hangstore", api_version=PLUGIN_API_VERSION, package="sc-hang",
                                  version="1", capabilities={"upload"})]

    @hookimpl
    def storage_upload(batch):
        threading.Event().wait()  # never answers
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with LocalSubnet(tmp_path_factory.mktemp("subnet"), miners=1) as subnet:
        subnet.publish(subnet.config(100))
        yield subnet


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two third-party plugins: one whose upload hangs, one that fails to import."""
    root = tmp_path_factory.mktemp("site")
    write_distribution(root, "sc-hang", "1", {"sc_hang": HANG}, {"hangstore": "sc_hang"})
    write_distribution(root, "sc-broken", "1", {"sc_broken": "raise ImportError('needs libfoo')"},
                       {"brokenstore": "sc_broken"})
    return root


def node_args(world: LocalSubnet, who: str, state: Path) -> list[str]:
    return world.node_flags(who, state)


def env_for(world: LocalSubnet, who: str, site: Path | None = None, **extra: str) -> dict[str, str]:
    hotkey = next(p.hotkey for p in [*world.miners, world.validator] if p.name == who)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_CORE_")}
    env.update(HF_TOKEN=world.hf_tokens[hotkey], COLUMNS="120", **extra)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


def storage_core(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storage_core", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture
def miner_db(tmp_path: Path) -> Path:
    path = tmp_path / "miner.sqlite"
    create_miner_db(path, 400, seed=9, days=2)
    return path


def test_a_hung_backend_cannot_keep_a_once_miner_alive(world: LocalSubnet, site: Path, miner_db: Path,
                                                       tmp_path: Path) -> None:
    """Bug 2: --backend-timeout bounds the call; the process exits right after, reporting the time-out."""
    env = env_for(world, "miner0", site, STORAGE_CORE_HANGSTORE_ENABLED="true", STORAGE_CORE_HANGSTORE_ROLLOUT="100")
    started = time.monotonic()
    run = storage_core("upload", "--db", str(miner_db), "--once", "--json", "--backend-timeout", "2s",
                       *node_args(world, "miner0", tmp_path / "state"), env=env, timeout=90)
    assert time.monotonic() - started < 60
    assert run.returncode == 1, run.stderr
    backends = {b["backend"]: b for b in json.loads(run.stdout)["backends"]}
    assert backends["hangstore"]["status"] == "timeout" and "within 2 s" in backends["hangstore"]["error"]
    assert backends["s3"]["status"] == backends["huggingface"]["status"] == "ok"
    # the same limit from the environment
    env["STORAGE_CORE_BACKEND_TIMEOUT"] = "1"
    again = storage_core("upload", "--db", str(miner_db), "--json", *node_args(world, "miner0", tmp_path / "state"),
                         env=env, timeout=90)
    assert again.returncode == 1 and "within 1 s" in again.stdout


def test_a_selected_backend_with_a_broken_plugin_stays_owed(world: LocalSubnet, site: Path, miner_db: Path,
                                                            tmp_path: Path) -> None:
    """Bug 4: the chunks stay owed to brokenstore, upload exits 1 and status says why."""
    env = env_for(world, "miner0", site, STORAGE_CORE_BROKENSTORE_ENABLED="true",
                  STORAGE_CORE_BROKENSTORE_ROLLOUT="100")
    state = tmp_path / "state"
    run = storage_core("upload", "--db", str(miner_db), "--json", *node_args(world, "miner0", state), env=env)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert "brokenstore" in result["selected"] and "needs libfoo" in result["unavailable"]["brokenstore"]
    assert {b["backend"]: b["still_owed_files"] for b in result["backends"]}["brokenstore"] > 0
    status = storage_core("status", "--json", *node_args(world, "miner0", state), env=env)
    assert status.returncode == 1
    report = json.loads(status.stdout)
    assert report["spool"]["brokenstore"]["chunks"] > 0 and "s3" not in report["spool"]
    assert any("brokenstore is selected" in p and "needs libfoo" in p for p in report["problems"])
    people = storage_core("status", *node_args(world, "miner0", state), env=env)
    assert people.returncode == 1 and "yes, plugin unavailable" in people.stdout


def test_a_validator_without_a_plugin_fails_closed(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    """Bug 5: with huggingface disabled on the validator, a URI s3 lacks is "could not validate" (exit 3)."""
    miner = world.miners[0].hotkey
    assert storage_core("upload", "--db", str(miner_db), "--json", *node_args(world, "miner0", tmp_path / "m"),
                        env=env_for(world, "miner0")).returncode == 0
    claims = tmp_path / "claims.txt"
    claims.write_text("https://x.com/never/status/1\n")
    env = env_for(world, "validator", STORAGE_CORE_DISABLE_PLUGINS="huggingface")
    run = storage_core("validate", "--miner", miner, "--uris", str(claims), "--json",
                       *node_args(world, "validator", tmp_path / "v"), env=env)
    report = json.loads(run.stdout)
    assert run.returncode == 3, run.stdout
    assert report["counts"] == {"valid": 0, "invalid": 0, "unknown": 1}
    healthy = storage_core("validate", "--miner", miner, "--uris", str(claims), "--json",
                           *node_args(world, "validator", tmp_path / "v2"), env=env_for(world, "validator"))
    assert healthy.returncode == 1  # a validator with every plugin says invalid


def test_plugins_status_follows_the_chain(world: LocalSubnet) -> None:
    """Bug 7: the chain has s3 at 100% (the built-in defaults say 0%)."""
    args = ["--netuid", str(world.netuid), "--subtensor.network", f"devchain:{world.chain_path}"]
    run = storage_core("plugins", "--json", *args, env=env_for(world, "miner0"))
    assert run.returncode == 0, run.stderr
    status = {entry["id"]: entry["status"] for entry in json.loads(run.stdout)}
    assert status["s3"] == "active (rollout 100%)" and status["huggingface"] == "active (rollout 100%)"
    assert status["local"] == "inactive by config (not configured)"


def test_every_round_follows_the_chain_and_ctrl_c_exits_130(world: LocalSubnet, miner_db: Path,
                                                             tmp_path: Path) -> None:
    """Bugs 3 and 9: `upload --every` picks the owner's change up on its next round, logs it, and exits 130."""
    command = [sys.executable, "-m", "storage_core", "upload", "--db", str(miner_db), "--every", "1s", "--json",
               *node_args(world, "miner0", tmp_path / "state")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env_for(world, "miner0"))
    documents: list[dict] = []
    errors: list[str] = []

    def read_stdout() -> None:
        buffer: list[str] = []
        for line in process.stdout:  # type: ignore[union-attr]
            buffer.append(line)
            if line.rstrip() == "}":
                documents.append(json.loads("".join(buffer)))
                buffer = []

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)]  # type: ignore[arg-type]
    for reader in readers:
        reader.start()

    def wait_for(condition, what: str, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert process.poll() is None, "".join(errors)
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {''.join(errors)[-2000:]}"
            time.sleep(0.2)

    try:
        wait_for(lambda: documents, "the first round")
        assert documents[0]["selected"] == ["s3", "huggingface"]
        world.publish(world.config(100, hf_enabled=False))  # the owner switches HuggingFace off
        wait_for(lambda: documents[-1]["selected"] == ["s3"], "a round under the new config")
        assert any("backends.huggingface.enabled: true -> false" in line for line in errors)
    finally:
        world.publish(world.config(100))
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
    assert code == 130


def test_the_readme_owner_sequence_passes_the_checks(world: LocalSubnet, tmp_path: Path) -> None:
    """Bug 6: every owner command of the README, run literally (on a dev chain, --dry-run), is accepted."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("**Subnet owner**", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("storage-core config")]
    assert len(commands) >= 6
    chain = DevChainArgs(world)
    for command in commands:
        words = [word for word in shlex.split(re.sub(r"\s+#.*$", "", command))[1:]
                 if word not in ("$CHAIN", "$WALLET")]
        if words[1] in ("set", "rollout"):
            words += [*chain.wallet, "--dry-run"]
        run = storage_core(*words, *chain.chain, env=env_for(world, "miner0"))
        assert run.returncode == 0, (command, run.stdout, run.stderr)
        assert "warning: backends" not in run.stderr, (command, run.stderr)


class DevChainArgs:
    """The README's $CHAIN and $WALLET on the local subnet (a fresh subnet id with no config yet)."""

    def __init__(self, world: LocalSubnet) -> None:
        self.chain = ["--netuid", str(world.netuid), "--subtensor.network", f"devchain:{world.chain_path}"]
        self.wallet = ["--wallet.name", "owner", "--wallet.hotkey", "default", "--wallet.path",
                       str(world.root / "wallets")]
