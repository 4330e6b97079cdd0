"""Where the grant service learns who is on the subnet: the chain, or a static allow-list for development."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from storage_core.errors import StorageCoreError
from storage_core.layout import check_hotkey
from storage_core.membership import StaticMembership, SubnetMembership


def _checked(hotkeys: Iterable[str], what: str) -> list[str]:
    result = []
    for hotkey in hotkeys:
        try:
            result.append(check_hotkey(str(hotkey).strip()))
        except ValueError as error:
            raise StorageCoreError(f"{what}: {error}") from None
    return result


def static_membership(
    miners: Iterable[str] = (), validators: Iterable[str] = (), allowlist: Path | str | None = None
) -> StaticMembership:
    """A fixed allow-list: hotkeys given directly and/or a JSON file ``{"miners": [...], "validators": [...]}``.

    Validators count as registered too (they may upload like any neuron).
    """
    miner_list = _checked(miners, "allowed miner")
    validator_list = _checked(validators, "allowed validator")
    if allowlist is not None:
        path = Path(allowlist)
        try:
            document: Any = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StorageCoreError(f"cannot read the allow-list {path}: {error}") from None
        if not isinstance(document, dict) or set(document) - {"miners", "validators"}:
            raise StorageCoreError(f"allow-list {path} must be an object with 'miners' and/or 'validators' lists")
        for name in ("miners", "validators"):
            if not isinstance(document.get(name, []), list):
                raise StorageCoreError(f"allow-list {path}: '{name}' must be a list of ss58 hotkeys")
        miner_list += _checked(document.get("miners", []), f"{path} miners")
        validator_list += _checked(document.get("validators", []), f"{path} validators")
    return StaticMembership(registered=frozenset(miner_list), validators=frozenset(validator_list))


def chain_membership(
    netuid: int, network: str | None = None, chain_endpoint: str | None = None, refresh_seconds: float = 60.0
) -> SubnetMembership:
    """The subnet's registrations and validator permits, read from the chain and cached."""
    try:
        from storage_core.chain.membership import ChainMembership
        from storage_core.chain.subtensor import open_subtensor
    except ImportError as error:  # an older core without the chain-backed view
        raise StorageCoreError(f"this storage-core has no chain membership ({error}); use a static allow-list") from None
    membership = ChainMembership(open_subtensor(network, chain_endpoint), netuid, refresh_seconds=refresh_seconds)
    membership.refresh()  # fail at start-up, not on the first request
    return membership


def membership_from_env(environ: dict[str, str] | None = None) -> SubnetMembership:
    """``STORAGE_CORE_S3_ALLOWLIST`` (a JSON file) for a static list, else the chain for ``STORAGE_CORE_NETUID``."""
    env = os.environ if environ is None else environ
    allowlist = env.get("STORAGE_CORE_S3_ALLOWLIST")
    if allowlist:
        return static_membership(allowlist=allowlist)
    netuid = env.get("STORAGE_CORE_NETUID")
    if not netuid:
        raise StorageCoreError("set STORAGE_CORE_NETUID (chain membership) or STORAGE_CORE_S3_ALLOWLIST (a static list)")
    try:
        number = int(netuid)
    except ValueError:
        raise StorageCoreError(f"STORAGE_CORE_NETUID={netuid!r} is not an integer") from None
    refresh = float(env.get("STORAGE_CORE_S3_MEMBERSHIP_REFRESH", "60"))
    return chain_membership(number, env.get("STORAGE_CORE_NETWORK"), env.get("STORAGE_CORE_CHAIN_ENDPOINT"), refresh)
