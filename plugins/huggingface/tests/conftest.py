"""Shared fixtures: one development Hub per session, a fresh organisation (namespace) per test.

huggingface_hub reads HF_* variables at import, so they are set here before anything imports it.
"""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)

import hashlib  # noqa: E402
import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import attrs  # noqa: E402
import pytest  # noqa: E402
from huggingface_hub import constants  # noqa: E402

from huggingface_hub import CommitOperationAdd, HfApi  # noqa: E402
from huggingface_hub.utils.sha import git_hash  # noqa: E402

from storage_core.chain.keys import keypair_from_uri  # noqa: E402
from storage_core.values import BackendContext, ValidationResult  # noqa: E402
from storage_core.verify.check import CheckSettings, check_claims  # noqa: E402
from storage_core_huggingface import plugin  # noqa: E402
from storage_core_huggingface.identity import repo_id_for  # noqa: E402
from storage_core_huggingface.testing.hub_server import DevHub, RunningHub, start_hub  # noqa: E402

# In case huggingface_hub was imported before this conftest (another plugin), force the same settings.
constants.HF_HUB_DISABLE_XET = True
constants.HF_HUB_DISABLE_TELEMETRY = True

PREFIX = "sn13"
_namespaces = itertools.count()
_KEYS: dict[str, Any] = {}


def keypair(name: str) -> Any:
    if name not in _KEYS:
        _KEYS[name] = keypair_from_uri(f"//hf-{name}")
    return _KEYS[name]


@pytest.fixture(scope="session")
def dev_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    running = start_hub(DevHub(tmp_path_factory.mktemp("devhub")))
    yield running
    running.stop()


@attrs.frozen
class HfWorld:
    """One test's organisation on the dev Hub: two miners with repo-scoped tokens and a read-only validator."""

    running: RunningHub
    namespace: str
    miners: tuple[Any, Any]
    validator: Any
    tokens: dict[str, str]  # hotkey -> token

    @property
    def hub(self) -> DevHub:
        return self.running.hub

    def repo_of(self, signer: Any) -> str:
        return repo_id_for(self.namespace, PREFIX, signer.ss58_address)

    def options(self, signer: Any, **overrides: Any) -> dict[str, Any]:
        options = {"namespace": self.namespace, "endpoint": self.running.url, "repo_prefix": PREFIX,
                   "token": self.tokens[signer.ss58_address], "backoff_base_s": 0.0}
        options.update(overrides)
        return {key: value for key, value in options.items() if value is not None}

    def context(self, signer: Any, **overrides: Any) -> BackendContext:
        return BackendContext(backend_id="huggingface", options=self.options(signer, **overrides),
                              hotkey=signer.ss58_address, signer=signer, netuid=13)

    def check(self, miner_hotkey: str, uris: list[str] | tuple[str, ...], full_checks: int = 5,
              **overrides: Any) -> ValidationResult:
        """The core's check of ``uris`` against the miner's repo, read as the validator (raises if the Hub fails)."""
        store = plugin.storage_reader(self.context(self.validator, **overrides), miner_hotkey)
        settings = CheckSettings(seed="hf-tests", full_checks=full_checks)
        try:
            return check_claims(store, "huggingface", miner_hotkey, list(uris), settings)
        finally:
            store.close()

    def put_raw(self, key: str, data: bytes, signer: Any = None) -> None:
        """Commit ``data`` at path ``key`` of the signer's repo (miner 0 by default) with its own token, as a
        miner could without the uploader. The same bytes already there make no commit (huggingface_hub 0.27
        fails to describe the empty commit it would skip against a Hub that is not huggingface.co)."""
        signer = signer or self.miners[0]
        repo = self.repo_of(signer)
        api = HfApi(endpoint=self.running.url, token=self.tokens[signer.ss58_address])
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        held = api.get_paths_info(repo, [key], repo_type="dataset")
        lfs = getattr(held[0], "lfs", None) if held else None
        if held and (getattr(held[0], "blob_id", None) == git_hash(data)
                     or (lfs is not None and lfs.sha256 == hashlib.sha256(data).hexdigest())):
            return
        api.create_commit(repo, [CommitOperationAdd(key, data)], commit_message=f"raw {key}", repo_type="dataset")


class RecordingSleep:
    """A back-off's sleep that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def hf_world(dev_hub: RunningHub) -> Iterator[HfWorld]:
    index = next(_namespaces)
    namespace = f"sn13-test{index}"
    miners = (keypair("miner-a"), keypair("miner-b"))
    validator = keypair("validator")
    tokens = {}
    members = []
    for number, miner in enumerate(miners):
        user = f"miner{number}-t{index}"
        token = f"hf_miner{number}_t{index}"
        dev_hub.hub.add_token(token, user, repos=[repo_id_for(namespace, PREFIX, miner.ss58_address)])
        tokens[miner.ss58_address] = token
        members.append(user)
    dev_hub.hub.add_token(f"hf_validator_t{index}", f"validator-t{index}", write=False)
    tokens[validator.ss58_address] = f"hf_validator_t{index}"
    dev_hub.hub.add_org(namespace, members)
    yield HfWorld(running=dev_hub, namespace=namespace, miners=miners, validator=validator, tokens=tokens)
    dev_hub.hub.clear_failures()  # injected failures and headers never leak into the next test


def pytest_configure(config: pytest.Config) -> None:
    # huggingface_hub's LFS upload passes a file object as `data=`; httpx2 warns about it on every upload.
    config.addinivalue_line("filterwarnings", "ignore:Use 'content=<...>':DeprecationWarning")
