"""One miner's or validator's storage node: its config source, plugins, signer and dispatcher.

Both the CLI and the integration-guide facades build a StorageNode, so every entry point resolves the
config, selects backends and builds backend contexts the same way.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storage_core.config import ResolvedConfig, StorageConfig
from storage_core.dispatch import Dispatcher, Selection, default_timeout, select
from storage_core.plugins import PluginRegistry
from storage_core.values import BackendContext

log = logging.getLogger(__name__)
STATE_DIR_ENV = "STORAGE_CORE_STATE_DIR"
#: Calls to ``follow()`` closer together than this reuse the config just read (one chain read per round).
FOLLOW_MIN_INTERVAL_S = 1.0


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {path: leaf for key, value in data.items() for path, leaf in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: data}


def config_changes(old: StorageConfig, new: StorageConfig) -> list[str]:
    """Changed fields as ``path: old -> new`` (what a node logs when the owner changes the config)."""
    before, after = _leaves(old.to_dict()), _leaves(new.to_dict())
    show = lambda flat, path: json.dumps(flat[path]) if path in flat else "(unset)"  # noqa: E731
    return [f"{path}: {show(before, path)} -> {show(after, path)}" for path in sorted(before.keys() | after.keys())
            if before.get(path, ...) != after.get(path, ...)]


def default_state_dir(netuid: int) -> Path:
    """Where a node keeps its spool, ledger and caches: $STORAGE_CORE_STATE_DIR or ~/.storage-core/netuid-N."""
    root = os.environ.get(STATE_DIR_ENV)
    return Path(root) if root else Path.home() / ".storage-core" / f"netuid-{netuid}"


class StorageNode:
    """Config + plugins + identity for one hotkey on one subnet."""

    def __init__(
        self,
        netuid: int,
        signer: Any,
        *,
        source: Any = None,
        config: StorageConfig | None = None,
        registry: PluginRegistry | None = None,
        state_dir: Path | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``source`` is a ``storage_core.chain.source.ConfigSource`` (followed on every round); a fixed
        ``config`` is for tests and dry runs. One of them is required. ``timeout_s`` bounds each backend call
        (default: $STORAGE_CORE_BACKEND_TIMEOUT, else 900 s)."""
        if source is None and config is None:
            raise ValueError("StorageNode needs a config source or a fixed config")
        self.netuid = netuid
        self.signer = signer
        self.source = source
        self._fixed = ResolvedConfig(config, {}) if config is not None else None
        self.registry = registry or PluginRegistry()
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(netuid)
        self.timeout_s = default_timeout() if timeout_s is None else timeout_s
        self._followed_at = float("-inf")

    @property
    def hotkey(self) -> str:
        from storage_core.chain.keys import hotkey_address

        return hotkey_address(self.signer)

    @property
    def resolved(self) -> ResolvedConfig:
        """The effective config now (the source caches it and refreshes it on its own schedule)."""
        return self._fixed if self._fixed is not None else self.source.current()

    @property
    def config(self) -> StorageConfig:
        return self.resolved.config

    def context_for(self, backend: str, config: StorageConfig | None = None) -> BackendContext:
        """The context a backend's hooks receive: its options, this node's identity, a cache directory."""
        entry = (config or self.config).backends.get(backend)
        return BackendContext(
            backend_id=backend,
            options=dict(entry.options) if entry else {},
            netuid=self.netuid,
            hotkey=self.hotkey,
            signer=self.signer,
            state_dir=self.state_dir / "backends" / backend,
        )

    def selections(self, hotkey: str | None = None) -> tuple[Selection, ...]:
        """Which backends serve ``hotkey`` (default: this node's) and why."""
        return select(self.config, self.registry, hotkey or self.hotkey)

    def follow(self) -> list[str]:
        """Read the config the chain holds now (the source falls back to the last known good one) and return
        what changed; a failed read keeps the current config. Long-running nodes call this every round."""
        if self.source is None or time.monotonic() - self._followed_at < FOLLOW_MIN_INTERVAL_S:
            return []
        before = self.source.current().config
        try:
            after = self.source.refresh().config
        except Exception as error:  # a bad read must not stop a round: keep what we have
            log.error("could not re-read the storage config of subnet %d (%s); keeping the current one",
                      self.netuid, error)
            return []
        self._followed_at = time.monotonic()
        changes = config_changes(before, after)
        for change in changes:
            log.warning("storage config of subnet %d changed: %s", self.netuid, change)
        return changes

    def dispatcher(self) -> Dispatcher:
        """A dispatcher bound to the config the chain holds now (one per round or validation pass, so a round
        never sees two configs and no round uses a stale one)."""
        self.follow()
        config = self.config
        return Dispatcher(self.registry, config, lambda backend: self.context_for(backend, config), self.timeout_s)

    def log_selection(self) -> None:
        """Say which backends this node uses and why, as the integration guide asks."""
        resolved = self.resolved
        for selection in self.selections():
            source = resolved.source_of(f"backends.{selection.backend}.rollout_percent")
            log.info("backend %s: %s — %s (config from %s)", selection.backend,
                     "selected" if selection.selected else "not selected", selection.reason, source)

    def options_view(self) -> Mapping[str, Mapping[str, Any]]:
        return {name: dict(entry.options) for name, entry in self.config.backends.items()}
