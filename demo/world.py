"""LocalSubnet: a whole subnet on 127.0.0.1 — dev chain, SeaweedFS + grant service, dev Hub, wallets.

Everything it starts is stopped by ``stop()`` (also on Ctrl-C when used as a context manager): the
SeaweedFS process by its pid, the grant service and the Hub by stopping their uvicorn threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import attrs  # noqa: E402

from storage_core.chain.commitments import CommitReceipt, commit_payload  # noqa: E402
from storage_core.chain.keys import create_wallet, keypair_from_uri  # noqa: E402
from storage_core.chain.membership import ChainMembership  # noqa: E402
from storage_core.chain.source import ConfigSource  # noqa: E402
from storage_core.config import StorageConfig, encode_for_chain, parse_config  # noqa: E402
from storage_core.node import StorageNode  # noqa: E402
from storage_core.testing.devchain import DevChain  # noqa: E402
from storage_core_huggingface.identity import repo_id_for  # noqa: E402
from storage_core_huggingface.testing.hub_server import DevHub, RunningHub, start_hub  # noqa: E402
from storage_core_s3.grants import GrantSettings, create_app  # noqa: E402
from storage_core_s3.server import ServerThread  # noqa: E402
from storage_core_s3.testing import SeaweedFS  # noqa: E402

log = logging.getLogger(__name__)
HF_PREFIX = "sn13"


@attrs.frozen
class Participant:
    """A wallet on disk and its registration."""

    name: str
    wallet: Any = attrs.field(repr=False)
    uid: int

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address


class LocalSubnet:
    """One subnet with ``miners`` miners and one validator, and the storage services they use."""

    def __init__(self, root: Path, *, netuid: int = 13, miners: int = 8, bucket: str = "sn13-demo",
                 hf_namespace: str = "sn13-demo", membership_refresh_s: float = 1.0) -> None:
        self.root = Path(root)
        self.netuid = netuid
        self.miner_count = miners
        self.bucket_name = bucket
        self.hf_namespace = hf_namespace
        self.membership_refresh_s = membership_refresh_s
        self.chain: DevChain | None = None
        self.seaweed: SeaweedFS | None = None
        self.grants: ServerThread | None = None
        self.hub: RunningHub | None = None
        self.owner: Participant | None = None
        self.validator: Participant | None = None
        self.miners: list[Participant] = []
        self.hf_tokens: dict[str, str] = {}
        self.service_key = keypair_from_uri("//storage-core-demo-grant-service")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalSubnet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        wallets = self.root / "wallets"
        self.chain = DevChain.create(self.root / "devchain.json")
        owner_wallet = create_wallet("owner", "default", wallets)
        self.chain.create_subnet(self.netuid, owner_wallet.hotkey.ss58_address)
        self.owner = Participant("owner", owner_wallet, 0)
        for index in range(self.miner_count):
            wallet = create_wallet(f"miner{index}", "default", wallets)
            uid = self.chain.register(self.netuid, wallet.hotkey.ss58_address)
            self.miners.append(Participant(f"miner{index}", wallet, uid))
        validator_wallet = create_wallet("validator", "default", wallets)
        uid = self.chain.register(self.netuid, validator_wallet.hotkey.ss58_address, validator_permit=True)
        self.validator = Participant("validator", validator_wallet, uid)

        self.seaweed = SeaweedFS(self.root / "seaweed").start()
        self.seaweed.create_bucket(self.bucket_name)
        settings = GrantSettings(
            bucket=self.bucket_name, service_hotkey=self.service_key.ss58_address,
            endpoint_url=self.seaweed.endpoint_url, access_key=self.seaweed.access_key,
            secret_key=self.seaweed.secret_key,
        )
        membership = ChainMembership(self.chain.subtensor(), self.netuid, refresh_seconds=self.membership_refresh_s)
        self.grants = ServerThread(create_app(settings, membership)).start()

        hub = DevHub(self.root / "hub")
        members = []
        for miner in self.miners:
            token = f"hf_{miner.name}_token"
            hub.add_token(token, miner.name, repos=[repo_id_for(self.hf_namespace, HF_PREFIX, miner.hotkey)])
            self.hf_tokens[miner.hotkey] = token
            members.append(miner.name)
        self.hf_tokens[self.validator.hotkey] = "hf_validator_token"
        hub.add_token("hf_validator_token", "validator", write=False)
        hub.add_org(self.hf_namespace, members)
        self.hub = start_hub(hub)
        log.info("local subnet %d up: chain %s, S3 %s, grants %s, hub %s", self.netuid, self.chain_path,
                 self.seaweed.endpoint_url, self.grants.url, self.hub.url)

    def stop(self) -> None:
        """Stop every service this subnet started; safe to call twice."""
        for name in ("hub", "grants"):
            service = getattr(self, name)
            if service is not None:
                try:
                    service.stop()
                except Exception:  # keep stopping the others
                    log.exception("stopping %s failed", name)
                setattr(self, name, None)
        if self.seaweed is not None:
            self.seaweed.stop()
            self.seaweed = None

    def __enter__(self) -> LocalSubnet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the owner's config

    @property
    def chain_path(self) -> Path:
        return self.root / "devchain.json"

    def s3_options(self) -> dict[str, Any]:
        assert self.grants is not None
        return {"bucket": self.bucket_name, "grant_url": self.grants.url, "backoff_base": 0.05, "backoff_max": 0.5}

    def hf_options(self) -> dict[str, Any]:
        assert self.hub is not None
        return {"namespace": self.hf_namespace, "endpoint": self.hub.url, "repo_prefix": HF_PREFIX,
                "backoff_base_s": 0.05}

    def config(self, s3_percent: float, hf_enabled: bool = True, policy: str = "any") -> StorageConfig:
        """The demo's storage config: S3 at ``s3_percent``, HuggingFace on for everyone, S3 first."""
        return parse_config({
            "backends": {
                "s3": {"enabled": True, "rollout_percent": s3_percent, "options": self.s3_options()},
                "huggingface": {"enabled": hf_enabled, "rollout_percent": 100, "options": self.hf_options()},
            },
            "validation_policy": policy,
            "fallback_order": ["s3", "huggingface"],
        })

    def publish(self, config: StorageConfig) -> CommitReceipt:
        """The owner commits ``config`` to the chain (inline compact form) and a new epoch starts."""
        assert self.chain is not None and self.owner is not None
        receipt = commit_payload(self.chain.subtensor(), self.netuid, self.owner.wallet, encode_for_chain(config))
        self.chain.advance_epochs(self.netuid, 1)  # the next commit gets a fresh space quota
        return receipt

    # ------------------------------------------------------------------ nodes

    def node_flags(self, who: str, state: Path | None = None, netuid: int | None = None) -> list[str]:
        """The chain and wallet flags of a ``storage-core`` command run as participant ``who``."""
        flags = ["--netuid", str(netuid or self.netuid), "--subtensor.network", f"devchain:{self.chain_path}",
                 "--wallet.name", who, "--wallet.hotkey", "default", "--wallet.path", str(self.root / "wallets")]
        return flags + (["--state-dir", str(state)] if state is not None else [])

    def node(self, participant: Participant, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> StorageNode:
        """A StorageNode reading the config from the dev chain, with this participant's HF token as a local override."""
        assert self.chain is not None
        token = self.hf_tokens.get(participant.hotkey)
        local = {"backends": {"huggingface": {"options": {"token": token}}}} if token else {}
        source = ConfigSource(
            self.chain.subtensor(), self.netuid, cache_path=self.root / "cache" / f"{participant.name}.json",
            environ={}, overrides={**local, **(overrides or {})},
        )
        return StorageNode(self.netuid, participant.wallet, source=source,
                           state_dir=self.root / "nodes" / participant.name, **kwargs)

    # ------------------------------------------------------------------ what is really stored

    def stored_uris(self, backend: str, hotkey: str) -> dict[str, int]:
        """URI -> how many stored objects hold it, reading every object of the miner in ``backend``."""
        import io
        from collections import Counter

        import pyarrow.parquet as pq

        from storage_core.layout import miner_prefix

        counts: Counter[str] = Counter()
        if backend == "s3":
            assert self.seaweed is not None
            for key in self.seaweed.list_keys(self.bucket_name, miner_prefix(hotkey)):
                body = self.seaweed.admin.get_object(Bucket=self.bucket_name, Key=key)["Body"].read()
                counts.update(pq.read_table(io.BytesIO(body), columns=["uri"]).column("uri").to_pylist())
        elif backend == "huggingface":
            assert self.hub is not None and self.validator is not None
            from huggingface_hub import HfFileSystem

            repo = repo_id_for(self.hf_namespace, HF_PREFIX, hotkey)
            fs = HfFileSystem(endpoint=self.hub.url, token=self.hf_tokens[self.validator.hotkey])
            for path in self.hub.hub.repo_files(repo):
                if path.endswith(".parquet"):
                    with fs.open(f"datasets/{repo}/{path}", "rb") as handle:
                        counts.update(pq.read_table(handle, columns=["uri"]).column("uri").to_pylist())
        else:
            raise ValueError(f"unknown backend {backend!r}")
        return dict(counts)
