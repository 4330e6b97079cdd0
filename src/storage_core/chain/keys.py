"""Hotkeys and wallets: the signers that miners and validators act with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bittensor as bt
from bittensor_core import Keypair

from storage_core.errors import StorageCoreError


def keypair_from_uri(uri: str) -> Keypair:
    """A deterministic development keypair, e.g. ``//Alice`` or ``//miner-3``."""
    return Keypair.create_from_uri(uri)


def new_keypair() -> Keypair:
    """A fresh random sr25519 keypair."""
    return Keypair.create_from_mnemonic(Keypair.generate_mnemonic(12))


def public_keypair(ss58_address: str) -> Keypair:
    """A verify-only keypair for an ss58 address."""
    return Keypair(ss58_address=ss58_address)


def create_wallet(name: str, hotkey: str, path: Path | str) -> Any:
    """Create (or overwrite) an unencrypted wallet on disk; for demos and tests."""
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    return wallet


def load_wallet(name: str, hotkey: str, path: Path | str | None = None) -> Any:
    """Open an existing wallet's hotkey; a missing wallet is an error naming the files looked for."""
    kwargs: dict[str, Any] = {"name": name, "hotkey": hotkey}
    if path is not None:
        kwargs["path"] = str(path)
    wallet = bt.Wallet(**kwargs)
    try:
        wallet.hotkey  # noqa: B018 - loads the hotkey file
    except Exception as error:  # bittensor raises several types for missing or unreadable files
        where = Path(kwargs.get("path", "~/.bittensor/wallets")).expanduser() / name / "hotkeys" / hotkey
        raise StorageCoreError(f"cannot open wallet {name!r} hotkey {hotkey!r} at {where}: {error}") from error
    return wallet


def hotkey_address(signer: Any) -> str:
    """The ss58 address of a Wallet (its hotkey) or a Keypair."""
    hotkey = getattr(signer, "hotkey", None)
    if hotkey is not None and not isinstance(signer, Keypair):
        return hotkey.ss58_address
    return signer.ss58_address
