"""``storage-core config``: publish with set/rollout, read back from another process, refuse bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from storage_core.chain.commitments import commit_payload, read_commitment
from storage_core.chain.keys import create_wallet
from storage_core.chain.source import ConfigSource
from storage_core.cli.config_cmd import config_group
from storage_core.errors import ChainError
from storage_core.rollout import is_selected
from storage_core.testing.devchain import DevChain

NETUID = 13
HOTKEYS = [f"5miner-{index:03d}" for index in range(300)]
S3 = ["--bucket_name", "sn13-b", "--auth_endpoint", "https://grant.invalid"]  # what the s3 plugin requires


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    monkeypatch.setenv("STORAGE_CORE_CONFIG_CACHE", str(tmp_path / "config-cache.json"))
    for name in list(os.environ):
        if name.startswith("STORAGE_CORE_") and name != "STORAGE_CORE_CONFIG_CACHE":
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def wallets(tmp_path_factory):
    path = tmp_path_factory.mktemp("wallets")
    owner = create_wallet("owner", "default", path)
    other = create_wallet("other", "default", path)
    return path, owner, other


@pytest.fixture
def chain(tmp_path, wallets) -> DevChain:
    _, owner, _ = wallets
    chain = DevChain.create(tmp_path / "chain.json")
    chain.create_subnet(NETUID, owner.hotkey.ss58_address)
    return chain


def chain_args(chain: DevChain) -> list[str]:
    return ["--netuid", str(NETUID), "--subtensor.network", "devchain", "--subtensor.chain_endpoint", str(chain.path)]


def owner_args(wallets, name: str = "owner") -> list[str]:
    return ["--wallet.name", name, "--wallet.hotkey", "default", "--wallet.path", str(wallets[0])]


def run(args: list[str], input: str | None = None):
    return CliRunner().invoke(config_group, args, input=input, catch_exceptions=False)


def stored(chain: DevChain, wallets) -> bytes | None:
    record = read_commitment(chain.subtensor(), NETUID, wallets[1].hotkey.ss58_address)
    return None if record is None else record.payload


def cli_process(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STORAGE_CORE_CONFIG_CACHE": str(tmp_path / "second-process-cache.json")}
    return subprocess.run([sys.executable, "-m", "storage_core", "config", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_set_then_get_from_a_second_process(chain, wallets, tmp_path):
    result = cli_process(["set", *chain_args(chain), *owner_args(wallets), "--use_s3", "true",
                          "--use_huggingface", "true", "--bucket_name", "sn13-data",
                          "--auth_endpoint", "https://grant.sn13.invalid", "--region", "eu-west-1",
                          "--rollout_percentage", "5", "--backend", "huggingface", "--set", "namespace=sn13-data",
                          "--yes"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backends.s3.rollout_percent: 0 -> 5" in result.stdout
    assert "field 1 Raw" in result.stdout and "committed" in result.stdout
    got = cli_process(["get", "--json", *chain_args(chain)], tmp_path)
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    s3 = data["config"]["backends"]["s3"]
    assert s3 == {"enabled": True, "rollout_percent": 5,
                  "options": {"bucket": "sn13-data", "grant_url": "https://grant.sn13.invalid", "region": "eu-west-1"}}
    assert data["sources"]["backends.s3.options.bucket"] == "chain"
    assert data["chain"]["status"] == "ok" and data["chain"]["owner_hotkey"] == wallets[1].hotkey.ss58_address
    # the environment fills what the chain leaves out, and says so
    env_get = subprocess.run(
        [sys.executable, "-m", "storage_core", "config", "get", "--json", "--netuid", str(NETUID)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "STORAGE_CORE_DEVCHAIN": str(chain.path), "STORAGE_CORE_LOCAL_ENABLED": "true",
             "STORAGE_CORE_CONFIG_CACHE": str(tmp_path / "third.json")},
    )
    assert json.loads(env_get.stdout)["sources"]["backends.local.enabled"] == "environment"


def test_rollout_grows_the_selection_monotonically(chain, wallets, tmp_path):
    assert run(["set", *chain_args(chain), *owner_args(wallets), *S3, "--yes"]).exit_code == 0
    previous: set[str] = set()
    sizes = []
    for percentage in ("5", "25", "100"):
        result = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", percentage, "--yes"])
        assert result.exit_code == 0, result.output
        config = ConfigSource(chain.subtensor(), NETUID, cache_path=tmp_path / "n.json", environ={}).refresh().config
        percent = config.backends["s3"].rollout_percent
        assert percent == float(percentage)
        selected = {hotkey for hotkey in HOTKEYS if is_selected("s3", hotkey, percent)}
        assert previous <= selected
        previous = selected
        sizes.append(len(selected))
    assert sizes[0] < sizes[1] < sizes[2] == len(HOTKEYS)
    assert 0 < sizes[0]


def test_owner_procedure_ends_with_huggingface_off(chain, wallets):
    for args in (["set", *S3], ["rollout", "--percentage", "100"], ["set", "--use_huggingface", "false"]):
        assert run([args[0], *chain_args(chain), *owner_args(wallets), *args[1:], "--yes"]).exit_code == 0
    got = run(["get", "--json", *chain_args(chain)])
    backends = json.loads(got.output)["config"]["backends"]
    assert backends["huggingface"]["enabled"] is False and backends["s3"]["rollout_percent"] == 100


def test_generic_backend_options_and_policy(chain, wallets):
    result = run(["set", *chain_args(chain), *owner_args(wallets), "--backend", "r2", "--set", "enabled=true",
                  "--set", "rollout_percent=10", "--set", "account=abc", "--set", "parts=4",
                  "--policy", "all", "--fallback-order", "s3,r2,huggingface", "--allow-unknown-backend", "--yes"])
    assert result.exit_code == 0, result.output
    data = json.loads(run(["get", "--json", *chain_args(chain)]).output)["config"]
    assert data["backends"]["r2"] == {"enabled": True, "rollout_percent": 10, "options": {"account": "abc", "parts": 4}}
    assert data["validation_policy"] == "all" and data["fallback_order"] == ["s3", "r2", "huggingface"]


def test_dry_run_and_declined_confirmation_commit_nothing(chain, wallets):
    five = ["set", *chain_args(chain), *owner_args(wallets), *S3, "--rollout_percentage", "5"]
    result = run([*five, "--dry-run"])
    assert result.exit_code == 0 and "dry run: nothing committed" in result.output
    assert "backends.s3.rollout_percent: 0 -> 5" in result.output
    declined = run(five, input="n\n")
    assert declined.exit_code == 1 and "Commit this to subnet 13" in declined.output
    assert stored(chain, wallets) is None
    accepted = run(five, input="y\n")
    assert accepted.exit_code == 0 and stored(chain, wallets) is not None


@pytest.fixture
def published(chain, wallets) -> bytes:
    result = run(["set", *chain_args(chain), *owner_args(wallets), *S3, "--rollout_percentage", "5", "--yes"])
    assert result.exit_code == 0, result.output
    return stored(chain, wallets)


def test_bad_values_are_refused(chain, wallets, published):
    result = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "150", "--yes"])
    assert result.exit_code == 1 and "backends.s3.rollout_percent" in result.output and "0..100" in result.output
    result = run(["set", *chain_args(chain), *owner_args(wallets), "--set", "enabled=perhaps", "--yes"])
    assert result.exit_code == 2 and "expects true or false" in result.output
    assert stored(chain, wallets) == published


def test_invalid_utf8_and_bad_json_documents(chain, wallets, published, tmp_path):
    bad_utf8 = tmp_path / "bad-utf8.json"
    bad_utf8.write_bytes(b'{"validation_policy": "\xff"}')
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"version": 1, "backends": ')
    for path, problem in ((bad_utf8, "not valid UTF-8"), (bad_json, "not valid JSON")):
        result = run(["set", *chain_args(chain), *owner_args(wallets), "--document", str(path), "--yes"])
        assert result.exit_code == 1 and problem in result.output and str(path) in result.output
        check = run(["check", "--file", str(path)])
        assert check.exit_code == 1 and problem in check.output
    assert stored(chain, wallets) == published


def test_oversized_config_needs_a_pointer(chain, wallets, published, tmp_path):
    args = ["set", *chain_args(chain), *owner_args(wallets), "--backend", "r2", "--allow-unknown-backend",
            "--set", "note=" + "x" * 400, "--yes"]
    result = run(args)
    assert result.exit_code == 1 and "over the chain's 384" in result.output and "URL" in result.output
    assert stored(chain, wallets) == published
    document = tmp_path / "published.json"
    result = run([*args, "--pointer-url", "https://owner.invalid/sn13.json", "--document-out", str(document)])
    assert result.exit_code == 0, result.output
    assert stored(chain, wallets).startswith(b"sc1p;")
    mirrored = run(["get", "--json", *chain_args(chain), "--config-mirror", str(document)])
    assert json.loads(mirrored.output)["config"]["backends"]["r2"]["options"]["note"] == "x" * 400


def test_unregistered_hotkey_is_explained(chain, wallets, published):
    chain.deregister(NETUID, wallets[1].hotkey.ss58_address)
    result = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "25", "--yes"])
    assert result.exit_code == 1
    assert f"hotkey {wallets[1].hotkey.ss58_address} is not registered on subnet 13" in result.output
    assert "Nothing was changed" in result.output
    assert stored(chain, wallets) == published


def test_quota_error_is_explained(chain, wallets, published):
    with pytest.raises(ChainError, match="quota"):  # use up this epoch's commitment space
        for _ in range(100):
            commit_payload(chain.subtensor(), NETUID, wallets[1], published.decode())
    result = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "25", "--yes"])
    assert result.exit_code == 1 and "commitment space quota" in result.output and "next epoch" in result.output
    assert stored(chain, wallets) == published
    chain.advance_epochs(NETUID)
    assert run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "25", "--yes"]).exit_code == 0


def test_non_owner_wallet_is_refused(chain, wallets, published):
    chain.register(NETUID, wallets[2].hotkey.ss58_address)
    result = run(["rollout", *chain_args(chain), *owner_args(wallets, "other"), "--percentage", "25", "--yes"])
    assert result.exit_code == 1 and "is not the owner hotkey" in result.output
    assert stored(chain, wallets) == published


def test_get_and_check_with_an_unusable_commitment(chain, wallets, published, tmp_path):
    assert run(["check", *chain_args(chain)]).exit_code == 0
    assert run(["get", *chain_args(chain)]).exit_code == 0  # caches the good config
    commit_payload(chain.subtensor(), NETUID, wallets[1], "sc1;b=s3:1:150:")
    check = run(["check", *chain_args(chain)])
    assert check.exit_code == 1 and "must be within 0..100" in check.output
    got = json.loads(run(["get", "--json", *chain_args(chain)]).output)
    assert got["chain"]["status"] == "invalid" and "0..100" in got["chain"]["error"]
    assert got["config"]["backends"]["s3"]["rollout_percent"] == 5
    assert got["sources"]["backends.s3.rollout_percent"] == "chain (last known good)"
    refused = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "25", "--yes"])
    assert refused.exit_code == 1 and "--replace" in refused.output
    assert run(["check", "--payload", "sc1;p=sometimes"]).exit_code == 1


def test_missing_netuid_and_unknown_chain(tmp_path):
    assert "--netuid is required" in run(["get"]).output
    result = run(["get", "--netuid", "13", "--subtensor.network", f"devchain:{tmp_path / 'none.json'}"])
    assert result.exit_code == 1 and "no dev chain state file" in result.output


def test_set_from_a_document_and_check_it(chain, wallets, tmp_path):
    document = tmp_path / "doc.json"
    document.write_text(json.dumps({
        "version": 1,
        "backends": {"s3": {"enabled": True, "rollout_percent": 50,
                            "options": {"bucket": "from-doc", "grant_url": "https://g.invalid"}}},
        "validation_policy": "primary",
        "fallback_order": ["s3"],
    }))
    check = run(["check", "--file", str(document)])
    assert check.exit_code == 0 and "valid" in check.output and "sc1;p=primary;f=s3;b=s3:1:50:bucket=from-doc,grant_url=https://g.invalid" in check.output
    result = run(["set", *chain_args(chain), *owner_args(wallets), "--document", str(document), "--region", "ap-1",
                  "--yes"])
    assert result.exit_code == 0, result.output
    assert stored(chain, wallets) == b"sc1;p=primary;f=s3;b=s3:1:50:bucket=from-doc,grant_url=https://g.invalid,region=ap-1"
    assert run(["check", "--payload", stored(chain, wallets).decode()]).exit_code == 0


def test_set_checks_options_against_the_installed_plugins(chain, wallets, published):
    """Bug 6: misspelt names, wrong types, non-URLs, missing required options and unknown backends are refused."""
    base = ["set", *chain_args(chain), *owner_args(wallets), "--yes"]
    cases = [
        (["--set", "bukcet=x"], "backends.s3.options.bukcet", "did you mean 'bucket'?"),
        (["--set", "concurrency=many"], "backends.s3.options.concurrency", "must be a whole number"),
        (["--auth_endpoint", "grant.example.org"], "backends.s3.options.grant_url", "http(s):// URL"),
        (["--backend", "huggingface", "--set", "repo_prefix=sn13"], "backends.huggingface.options.namespace",
         "is required by the huggingface plugin"),
        (["--backend", "hugginface", "--set", "enabled=true"], "backends.hugginface",
         "no installed plugin provides this backend"),
        (["--backend", "huggingface", "--set", "token=hf_x", "--set", "namespace=n"],
         "backends.huggingface.options.token", "is a secret"),
    ]
    for args, field, problem in cases:
        result = run([*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert field in result.output and problem in result.output and "nothing committed" in result.output
    assert stored(chain, wallets) == published
    typed = run([*base, "--set", "concurrency=8", "--set", "bucket=123"])  # "123" is a bucket name, not a number
    assert typed.exit_code == 0, typed.output
    options = json.loads(run(["get", "--json", *chain_args(chain)]).output)["config"]["backends"]["s3"]["options"]
    assert options["concurrency"] == 8 and options["bucket"] == "123"


def test_unset_an_option_remove_a_backend_and_warn_on_a_lower_rollout(chain, wallets, published):
    base = ["set", *chain_args(chain), *owner_args(wallets), "--yes"]
    assert run([*base, "--region", "eu-1"]).exit_code == 0
    result = run([*base, "--unset", "region"])
    assert result.exit_code == 0 and 'backends.s3.options.region: "eu-1" -> (unset)' in result.output
    assert run([*base, "--unset", "nope"]).exit_code == 2
    added = run([*base, "--backend", "r2", "--allow-unknown-backend", "--set", "enabled=true",
                 "--fallback-order", "s3,r2"])
    assert added.exit_code == 0 and "warning: backends.r2: no installed plugin" in added.output
    result = run([*base, "--remove-backend", "r2"])
    assert result.exit_code == 0, result.output
    config = json.loads(run(["get", "--json", *chain_args(chain)]).output)["config"]
    assert "r2" not in config["backends"] and config["fallback_order"] == ["s3"]
    kept = run([*base, "--remove-backend", "huggingface"])  # the defaults would bring it back: say how instead
    assert kept.exit_code == 2 and "--backend huggingface --set enabled=false" in kept.output
    lowered = run(["rollout", *chain_args(chain), *owner_args(wallets), "--percentage", "1", "--yes"])
    assert lowered.exit_code == 0 and "warning: rollout of s3 lowered from 5% to 1%" in lowered.output


def test_get_without_a_config_exits_non_zero(chain):
    result = run(["get", *chain_args(chain)])
    assert result.exit_code == 1 and "subnet 13 has no storage config" in result.output


def test_set_refuses_a_bucket_name_that_s3_would_refuse(chain, wallets, published):
    base = ["set", *chain_args(chain), *owner_args(wallets), "--yes"]
    for bad, why in [("Sn13_Data", "lower-case letters, digits, dots and hyphens"), ("ab", "3 to 63 characters"),
                     ("sn13..data", "'..'"), ("192.168.1.10", "IP address"), ("sn13-data-", "start and end")]:
        result = run([*base, "--bucket_name", bad])
        assert result.exit_code == 2, (bad, result.output)
        [line] = [line for line in result.output.splitlines() if "backends.s3.options.bucket" in line]
        assert repr(bad) in line and "not a valid bucket name" in line and why in line
    assert stored(chain, wallets) == published
    assert run([*base, "--bucket_name", "sn13.data-2"]).exit_code == 0
