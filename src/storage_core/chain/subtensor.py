"""Open a blocking bittensor ``Subtensor`` (10.3 or 11) for a network name, a ws(s) endpoint, or the file-backed dev chain.

Network selection, in order: ``devchain:PATH`` or ``devchain`` with ``chain_endpoint=PATH``; a ws(s)://
``chain_endpoint``; a network name (finney, test, local, ...). With no network given, the
``STORAGE_CORE_DEVCHAIN`` environment variable (a dev chain file) wins over ``STORAGE_CORE_NETWORK``,
which wins over finney.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from storage_core.errors import ChainError

DEVCHAIN = "devchain"
DEVCHAIN_ENV = "STORAGE_CORE_DEVCHAIN"
NETWORK_ENV = "STORAGE_CORE_NETWORK"
DEFAULT_NETWORK = "finney"


@attrs.frozen
class ChainTarget:
    """Where to connect: a bittensor network/endpoint, or a dev chain file."""

    network: str
    endpoint: str | None = None
    devchain_path: Path | None = None

    def describe(self) -> str:
        if self.devchain_path is not None:
            return f"devchain:{self.devchain_path}"
        return self.endpoint or self.network


def resolve_target(
    network: str | None = None, chain_endpoint: str | None = None, environ: dict[str, str] | None = None
) -> ChainTarget:
    """Turn the ``--subtensor.network`` / ``--subtensor.chain_endpoint`` pair into a :class:`ChainTarget`."""
    env = os.environ if environ is None else environ
    if not network:
        if env.get(DEVCHAIN_ENV) and not chain_endpoint:
            return ChainTarget(DEVCHAIN, devchain_path=Path(env[DEVCHAIN_ENV]))
        network = env.get(NETWORK_ENV) or DEFAULT_NETWORK
    if network == DEVCHAIN or network.startswith(f"{DEVCHAIN}:"):
        path = network.partition(":")[2] or chain_endpoint or env.get(DEVCHAIN_ENV)
        if not path:
            raise ChainError(
                "the devchain network needs a state file: --subtensor.network devchain:PATH, "
                f"--subtensor.chain_endpoint PATH or {DEVCHAIN_ENV}=PATH"
            )
        return ChainTarget(DEVCHAIN, devchain_path=Path(path))
    if chain_endpoint:
        if not chain_endpoint.startswith(("ws://", "wss://")):
            raise ChainError(f"--subtensor.chain_endpoint must be a ws:// or wss:// URL, got {chain_endpoint!r}")
        return ChainTarget(network, endpoint=chain_endpoint)
    return ChainTarget(network)


def open_subtensor(
    network: str | None = None, chain_endpoint: str | None = None, environ: dict[str, str] | None = None
) -> Any:
    """A blocking ``bittensor.Subtensor`` (11.x connects on first use, 10.x at once)."""
    from storage_core.chain import sdk

    target = resolve_target(network, chain_endpoint, environ)
    if target.devchain_path is not None:
        if not target.devchain_path.is_file():
            raise ChainError(f"no dev chain state file at {target.devchain_path}")
        return sdk.dev_subtensor(target.devchain_path)
    return sdk.network_subtensor(target.endpoint or target.network)
