"""Hotkeys and wallets: the signers that miners and validators act with (bittensor 10.3 or 11, see ``sdk``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage_core.chain.sdk import Keypair, Wallet
from storage_core.errors import StorageCoreError


def keypair_from_uri(uri: str) -> Any:
    """A deterministic development keypair, e.g. ``//Alice`` or ``//miner-3``."""
    return Keypair.create_from_uri(uri)


def new_keypair() -> Any:
    """A fresh random sr25519 keypair."""
    return Keypair.create_from_mnemonic(Keypair.generate_mnemonic(12))


def public_keypair(ss58_address: str) -> Any:
    """A verify-only keypair for an ss58 address."""
    return Keypair(ss58_address=ss58_address)


def create_wallet(name: str, hotkey: str, path: Path | str) -> Any:
    """Create (or overwrite) an unencrypted wallet on disk; for demos and tests."""
    wallet = Wallet(name=name, hotkey=hotkey, path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    return wallet


def load_wallet(name: str, hotkey: str, path: Path | str | None = None) -> Any:
    """Open an existing wallet's hotkey; a missing wallet is an error naming the files looked for."""
    kwargs: dict[str, Any] = {"name": name, "hotkey": hotkey}
    if path is not None:
        kwargs["path"] = str(path)
    wallet = Wallet(**kwargs)
    where = Path(wallet.hotkey_file.path).expanduser()  # the file the SDK itself will open
    if not where.exists():  # the two SDKs word this differently; say it once, the same way
        raise StorageCoreError(f"cannot open wallet {name!r} hotkey {hotkey!r}: no hotkey file at {where}")
    try:
        wallet.hotkey  # noqa: B018 - loads the hotkey file
    except Exception as error:  # bittensor raises several types for unreadable files
        detail = " ".join(str(error).split())
        raise StorageCoreError(f"cannot open wallet {name!r} hotkey {hotkey!r} at {where}: {detail}") from error
    return wallet


def hotkey_address(signer: Any) -> str:
    """The ss58 address of a Wallet (its hotkey) or a Keypair."""
    hotkey = getattr(signer, "hotkey", None)
    if hotkey is not None and not isinstance(signer, Keypair):
        return hotkey.ss58_address
    return signer.ss58_address
