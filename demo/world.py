"""LocalSubnet: a whole subnet on 127.0.0.1 — dev chain, SeaweedFS + grant service, dev Hub, wallets.

Everything it starts is stopped by ``stop()`` (also on Ctrl-C when used as a context manager): the
SeaweedFS process by its pid, the grant service and the Hub by stopping their uvicorn threads.
``LocalSubnet.kept(root)`` starts the services of a subnet left in ``root`` (``python -m demo --keep``) again,
on its kept chain, objects, repos and wallets, at the URLs its on-chain config names when they are free.
"""

from __future__ import annotations

import json
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
from storage_core.chain.keys import create_wallet, keypair_from_uri, load_wallet  # noqa: E402
from storage_core.chain.membership import ChainMembership  # noqa: E402
from storage_core.chain.source import ConfigSource, read_chain_config  # noqa: E402
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
#: What a subnet's directory records about it, so that ``LocalSubnet.kept`` can start it again.
META_FILE = "subnet.json"


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
                 hf_namespace: str = "sn13-demo", membership_refresh_s: float = 1.0, resume: bool = False) -> None:
        self.root = Path(root)
        self.resume = resume
        #: Services that could not get their old port back on resume (their URL on chain was republished).
        self.moved: list[str] = []
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

    @classmethod
    def kept(cls, root: Path) -> LocalSubnet:
        """The subnet a ``--keep`` run left in ``root``; ``start()`` runs its services again on the kept data."""
        root = Path(root)
        if not (root / "devchain.json").is_file():
            raise FileNotFoundError(f"no kept subnet in {root} (no devchain.json): run `python -m demo --keep {root}`")
        meta = json.loads((root / META_FILE).read_text()) if (root / META_FILE).is_file() else {}
        miners = meta.get("miners")
        if miners is None:  # a directory kept before subnet.json existed: count the miners' wallets
            miners = sum(1 for path in (root / "wallets").glob("miner*") if path.is_dir())
        return cls(root, netuid=int(meta.get("netuid", 13)), miners=int(miners),
                   bucket=meta.get("bucket", "sn13-demo"), hf_namespace=meta.get("hf_namespace", "sn13-demo"),
                   resume=True)

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._load_participants()
        else:
            self._create_participants()
        self._start_services()
        log.info("local subnet %d up: chain %s, S3 %s, grants %s, hub %s", self.netuid, self.chain_path,
                 self.seaweed.endpoint_url if self.seaweed else None, self.grants.url if self.grants else None,
                 self.hub.url if self.hub else None)

    def _create_participants(self) -> None:
        wallets = self.root / "wallets"
        self.chain = DevChain.create(self.chain_path)
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
        meta = {"netuid": self.netuid, "miners": self.miner_count, "bucket": self.bucket_name,
                "hf_namespace": self.hf_namespace}
        (self.root / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    def _load_participants(self) -> None:
        """The kept chain and wallets: nothing is created or registered again."""
        wallets = self.root / "wallets"
        self.chain = DevChain(self.chain_path)
        state = self.chain.read_state()
        neurons = state["subnets"][str(self.netuid)]["neurons"]
        uids = {neuron["hotkey"]: neuron["uid"] for neuron in neurons if neuron}

        def participant(name: str) -> Participant:
            wallet = load_wallet(name, "default", wallets)
            return Participant(name, wallet, uids.get(wallet.hotkey.ss58_address, -1))

        self.owner = participant("owner")
        self.miners = [participant(f"miner{index}") for index in range(self.miner_count)]
        self.validator = participant("validator")

    def _seaweed_credentials(self) -> dict[str, str]:
        """The kept SeaweedFS's admin keys (its identities file), so the kept objects stay readable."""
        path = self.root / "seaweed" / "identities.json"
        if not (self.resume and path.is_file()):
            return {}
        admin = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return {"access_key": admin["accessKey"], "secret_key": admin["secretKey"]}

    def _kept_ports(self) -> dict[str, int]:
        """The grant service's and the Hub's ports as the config on chain names them (0: any free port)."""
        if not self.resume:
            return {"s3": 0, "huggingface": 0}
        from urllib.parse import urlsplit

        assert self.chain is not None
        reading = read_chain_config(self.chain.subtensor(), self.netuid)
        ports = {"s3": 0, "huggingface": 0}
        if reading.config is not None:
            for backend, option in (("s3", "grant_url"), ("huggingface", "endpoint")):
                entry = reading.config.backends.get(backend)
                url = str(entry.options.get(option, "")) if entry is not None else ""
                if urlsplit(url).hostname == "127.0.0.1":
                    ports[backend] = urlsplit(url).port or 0
        return ports

    def _start_services(self) -> None:
        assert self.chain is not None and self.validator is not None
        ports = self._kept_ports()
        self.seaweed = SeaweedFS(self.root / "seaweed", **self._seaweed_credentials()).start()
        self.seaweed.create_bucket(self.bucket_name)  # an existing bucket is kept as it is
        settings = GrantSettings(
            bucket=self.bucket_name, service_hotkey=self.service_key.ss58_address,
            endpoint_url=self.seaweed.endpoint_url, access_key=self.seaweed.access_key,
            secret_key=self.seaweed.secret_key,
        )
        membership = ChainMembership(self.chain.subtensor(), self.netuid, refresh_seconds=self.membership_refresh_s)
        self.grants = self._serve("s3", ports["s3"], lambda port: ServerThread(create_app(settings, membership),
                                                                              port=port).start())
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
        self.hub = self._serve("huggingface", ports["huggingface"], lambda port: start_hub(hub, port=port))
        if self.moved:
            self._republish_urls()

    def _serve(self, backend: str, port: int, start: Any) -> Any:
        """Start a service on ``port`` (its old one on resume); on a free port when that one is taken."""
        try:
            return start(port)
        except (RuntimeError, OSError, SystemExit) as error:
            if port == 0:
                raise
            log.warning("port %d of the %s service is taken (%s); starting it on a free port", port, backend, error)
            self.moved.append(backend)
            return start(0)

    def _republish_urls(self) -> None:
        """The owner points the config on chain at the services' new URLs (a kept subnet whose ports were taken)."""
        assert self.chain is not None
        reading = read_chain_config(self.chain.subtensor(), self.netuid)
        if reading.config is None:
            return
        config = reading.config
        if "s3" in self.moved and "s3" in config.backends:
            config = config.evolve_backend("s3", options={"grant_url": self.s3_options()["grant_url"]})
        if "huggingface" in self.moved and "huggingface" in config.backends:
            config = config.evolve_backend("huggingface", options={"endpoint": self.hf_options()["endpoint"]})
        if config != reading.config:
            self.publish(config)

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
                if not key.endswith(".parquet"):
                    continue  # round manifests
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
