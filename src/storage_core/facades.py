"""Names from the subnet's integration guide, as thin wrappers over the core.

``create_config_from_chain_or_env(subtensor, netuid)`` returns the effective storage config (chain,
else last known good, else environment and defaults) with the attributes a subnet's code reads:
``use_s3``, ``use_huggingface``, ``s3_rollout_percentage``, ``bucket_name``, ``auth_endpoint``,
``region``, and ``use_<id>`` / ``<id>_rollout_percentage`` for any backend id.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from storage_core.config import OptionValue, ResolvedConfig, StorageConfig


@attrs.frozen
class SubnetStorageConfig:
    """The resolved config as the integration guide names it; ``storage`` is the core StorageConfig."""

    netuid: int
    resolved: ResolvedConfig

    @property
    def storage(self) -> StorageConfig:
        return self.resolved.config

    def uses(self, backend: str) -> bool:
        """Whether the backend is enabled at all (each miner is further selected by the rollout)."""
        entry = self.storage.backends.get(backend)
        return bool(entry and entry.enabled)

    def rollout_percentage(self, backend: str) -> float:
        entry = self.storage.backends.get(backend)
        return float(entry.rollout_percent) if entry else 0.0

    def option(self, backend: str, name: str, default: OptionValue | None = None) -> OptionValue | None:
        entry = self.storage.backends.get(backend)
        return entry.options.get(name, default) if entry else default

    def is_selected(self, backend: str, hotkey: str) -> bool:
        """Whether ``hotkey`` is on ``backend``: enabled and inside the rollout."""
        from storage_core.rollout import is_selected

        return self.uses(backend) and is_selected(backend, hotkey, self.rollout_percentage(backend))

    def source_of(self, path: str) -> str:
        return self.resolved.source_of(path)

    @property
    def use_s3(self) -> bool:
        return self.uses("s3")

    @property
    def use_huggingface(self) -> bool:
        return self.uses("huggingface")

    @property
    def s3_rollout_percentage(self) -> float:
        return self.rollout_percentage("s3")

    @property
    def bucket_name(self) -> str | None:
        value = self.option("s3", "bucket")
        return None if value is None else str(value)

    @property
    def auth_endpoint(self) -> str | None:
        value = self.option("s3", "grant_url")
        return None if value is None else str(value)

    @property
    def region(self) -> str | None:
        value = self.option("s3", "region")
        return None if value is None else str(value)

    def _backend_id(self, attribute: str) -> str:
        """An attribute spelling (``my_store``) back to the backend id (``my-store`` if that one exists)."""
        dashed = attribute.replace("_", "-")
        return dashed if dashed in self.storage.backends and attribute not in self.storage.backends else attribute

    def __getattr__(self, name: str) -> Any:
        # use_<backend> and <backend>_rollout_percentage for backends the guide does not name
        if name.startswith("_") or name in ("netuid", "resolved"):
            raise AttributeError(name)
        if name.startswith("use_"):
            return self.uses(self._backend_id(name.removeprefix("use_")))
        if name.endswith("_rollout_percentage"):
            return self.rollout_percentage(self._backend_id(name.removesuffix("_rollout_percentage")))
        raise AttributeError(name)


def create_config_from_chain_or_env(
    subtensor: Any,
    netuid: int,
    *,
    cache_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SubnetStorageConfig:
    """Resolve the storage config once: overrides > chain (or its last known good) > environment > defaults.

    ``subtensor`` is a bittensor 11 ``Subtensor`` (or None for environment and defaults only). For a
    long-running node that should follow the owner's changes, use
    ``storage_core.chain.source.ConfigSource(...).start()`` instead.
    """
    from storage_core.chain.source import ConfigSource

    source = ConfigSource(subtensor, netuid, cache_path=cache_path, environ=environ, overrides=overrides)
    return SubnetStorageConfig(netuid=netuid, resolved=source.refresh())


def create_storage_from_config(
    subtensor: Any,
    netuid: int,
    db_path: Path | str,
    miner_hotkey: str,
    wallet: Any,
    encoding_key_manager: Any = None,
    private_encoding_key_manager: Any = None,
    state_file: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    state_dir: Path | str | None = None,
) -> Any:
    """The integration guide's miner entry point: a ``MinerStorage`` whose ``upload_data()`` runs one round.

    The config follows the chain (overrides > chain > environment > defaults). ``encoding_key_manager``
    encrypts ``url`` and ``private_encoding_key_manager`` encrypts ``username`` when given (off by default).
    ``state_file`` maps onto the spool and ledger kept beside it (``{state_file}.spool/``).
    The result also answers ``use_s3``, ``use_huggingface`` and ``use_<id>`` for any backend.
    """
    from storage_core.chain.keys import hotkey_address
    from storage_core.chain.source import ConfigSource
    from storage_core.errors import StorageCoreError
    from storage_core.export.encoding import FieldEncoder
    from storage_core.export.exporter import ExportOptions
    from storage_core.export.spool import Spool
    from storage_core.miner import MinerStorage
    from storage_core.node import StorageNode, default_state_dir

    if hotkey_address(wallet) != miner_hotkey:
        raise StorageCoreError(f"wallet hotkey {hotkey_address(wallet)} is not the miner hotkey {miner_hotkey}")
    state = Path(state_dir) if state_dir else (
        Path(state_file).with_name(Path(state_file).name + ".state") if state_file else default_state_dir(netuid))
    source = ConfigSource(subtensor, netuid, environ=environ, overrides=overrides,
                          cache_path=state / "config-cache.json")
    node = StorageNode(netuid, wallet, source=source, state_dir=state)
    encoder = None
    if encoding_key_manager is not None or private_encoding_key_manager is not None:
        encoder = FieldEncoder.from_keys(url=encoding_key_manager, username=private_encoding_key_manager)
    spool = Spool.for_state_file(state_file) if state_file else Spool(state / "spool")
    return MinerStorage(node, db_path, spool, ExportOptions(encoder=encoder))


def create_validator_storage(subtensor: Any, netuid: int, wallet: Any, *, environ: Mapping[str, str] | None = None,
                             overrides: Mapping[str, Any] | None = None, state_dir: Path | str | None = None) -> Any:
    """A ``ValidatorStorage`` (``validate_miner_data(hotkey, uris)``) following the chain config."""
    from storage_core.chain.source import ConfigSource
    from storage_core.node import StorageNode, default_state_dir
    from storage_core.validator import ValidatorStorage

    state = Path(state_dir) if state_dir else default_state_dir(netuid)
    source = ConfigSource(subtensor, netuid, environ=environ, overrides=overrides,
                          cache_path=state / "config-cache.json")
    return ValidatorStorage(StorageNode(netuid, wallet, source=source, state_dir=state))
