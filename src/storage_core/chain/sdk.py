"""The one module that knows which bittensor SDK is installed: 10.3 (subnet 13's pin) or 11.x.

Subnet 13's miners and validators run bittensor 10.3 (``bittensor_wallet`` keys, ``Subtensor.query_*``,
``compose_call`` + ``sign_and_send_extrinsic``); 11.x is a rewrite (``bittensor_core`` keys, ``read``/``query``
with storage descriptors, ``bt.calls`` + ``submit_call``). Both talk to the same pallets, so the bytes on
chain are one. Everything else in ``storage_core.chain`` calls the functions here and never branches on
the SDK itself. All functions are blocking; an awaited (async) client is refused with a clear error.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from storage_core.errors import ChainError


def _import_bittensor() -> Any:
    """Import bittensor, keeping the logging set up before it: 10.x, on its first import, silences every existing
    logger (level CRITICAL, handlers removed) as "third-party". A process that imported bittensor first (a subnet's
    miner) is left exactly as it is."""
    if "bittensor" in sys.modules:
        return importlib.import_module("bittensor")
    loggers = [item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    saved = [(item, item.level, list(item.handlers)) for item in loggers]
    module = importlib.import_module("bittensor")
    for item, level, handlers in saved:
        item.setLevel(level)
        for handler in handlers:
            if handler not in item.handlers:
                item.addHandler(handler)
    return module


bt: Any = _import_bittensor()

VERSION: str = str(getattr(bt, "__version__", "0"))
#: True under bittensor 10.x (subnet 13's pin), False under 11.x.
LEGACY: bool = int(VERSION.split(".")[0]) < 11

#: The SDK's sr25519 ``Keypair`` class (``bittensor_wallet`` in 10.x, ``bittensor_core`` in 11.x).
Keypair: Any = importlib.import_module("bittensor_wallet" if LEGACY else "bittensor_core").Keypair
#: ``bt.Wallet`` in both (``bittensor_wallet.Wallet`` in 10.x).
Wallet: Any = bt.Wallet
#: True when the SDK ships ``bt.http_auth`` (``btauth/1``); otherwise ``storage_core.chain.btauth`` does it.
HAS_HTTP_AUTH: bool = hasattr(bt, "http_auth")


def verify_signature(message: bytes, signature: bytes, ss58_address: str) -> bool:
    """sr25519 check of ``signature`` over ``message`` by ``ss58_address``; ValueError for a malformed one."""
    if LEGACY:
        return bool(Keypair(ss58_address=ss58_address).verify(message, signature))
    from bittensor_core import verify

    return bool(verify(message, signature, ss58_address))


def signing_keypair(signer: Any) -> Any:
    """The keypair that signs for ``signer``: a Wallet's hotkey, or the Keypair itself."""
    if isinstance(signer, Keypair):
        return signer
    hotkey = getattr(signer, "hotkey", None)
    return signer if hotkey is None else hotkey


def blocking_result(value: Any) -> Any:
    """Refuse the awaited (async) client: storage-core's chain calls are blocking."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise ChainError("storage-core needs a blocking bittensor.Subtensor (not awaited); pass bt.Subtensor(network)")
    return value


def _value(item: Any) -> Any:
    """10.x wraps query answers in SCALE objects; the decoded value is ``.value``."""
    return getattr(item, "value", item)


# --------------------------------------------------------------------------- opening a connection


def network_subtensor(network: str) -> Any:
    """A blocking ``bt.Subtensor`` for a network name or ws(s):// endpoint (ChainError when unusable)."""
    if LEGACY:
        from bittensor.core.settings import NETWORKS

        if network not in NETWORKS and not network.startswith(("ws://", "wss://")):
            raise ChainError(f"Unknown network {network!r}. Known networks: {sorted(NETWORKS)}, "
                             "or pass a ws:// / wss:// endpoint directly.")
    try:
        return bt.Subtensor(network)  # 10.x connects here, 11.x on first use
    except ValueError as error:  # 11.x: an unknown network name
        raise ChainError(one_line(error)) from error
    except Exception as error:  # ValueError for names, OSError/websocket errors for endpoints
        raise ChainError(f"cannot connect to {network}: {one_line(error)}") from error


def dev_subtensor(path: Path) -> Any:
    """A blocking ``bt.Subtensor`` over the file-backed dev chain at ``path``, through public seams only.

    11.x takes the in-memory Substrate as ``Subtensor(..., substrate=)``. 10.x has no such argument: it is
    built with its documented test switch ``mock=True`` (no connection) and its public ``substrate``
    attribute is then pointed at the dev chain, the same way bittensor's own ``MockSubtensor`` does.
    """
    if LEGACY:
        from storage_core.testing.devchain_legacy import LegacyDevSubstrate

        legacy_subtensor: Any = bt.Subtensor  # 10.x's signature, which 11.x's type stubs do not know
        subtensor = legacy_subtensor("local", mock=True)
        subtensor.substrate = LegacyDevSubstrate(path)
        return subtensor
    from storage_core.testing.devchain import DevSubstrate

    return bt.Subtensor("local", substrate=DevSubstrate(path), fallback_endpoints=[], archive_endpoints=[])


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- reads


def _hash_text(value: Any) -> str | None:
    """A 32-byte hash as ``0x`` + 64 lower-case hex digits, from the shapes SDKs decode it into; None otherwise."""
    value = _value(value)
    if isinstance(value, (list, tuple)) and len(value) == 32 and all(isinstance(item, int) for item in value):
        value = bytes(value)
    text = "0x" + bytes(value).hex() if isinstance(value, (bytes, bytearray)) else str(value or "").lower()
    digits = text.removeprefix("0x")
    if len(digits) != 64 or not all(c in "0123456789abcdef" for c in digits) or not digits.strip("0"):
        return None
    return "0x" + digits


def genesis_hash(subtensor: Any) -> str:
    """The hash of block 0: what identifies a chain (its network label does not: every dev chain is "local").
    10.x: ``get_block_hash(0)``; 11.x: ``System.BlockHash[0]``, which the runtime keeps for good so a pruned
    node answers it too, else ``block_info(0)``. ChainError when neither gives a hash."""
    if LEGACY:
        found = _hash_text(blocking_result(subtensor.get_block_hash(0)))
    else:
        found = _hash_text(blocking_result(subtensor.query(bt.storage.System.BlockHash, [0])))
        if found is None:
            found = _hash_text(getattr(blocking_result(subtensor.block_info(0)), "hash", None))
    if found is None:
        raise ChainError("the chain answered no usable genesis hash")
    return found


def owner_hotkey(subtensor: Any, netuid: int) -> str | None:
    """``SubtensorModule.SubnetOwnerHotkey[netuid]``."""
    if LEGACY:
        return _value(blocking_result(subtensor.query_subtensor("SubnetOwnerHotkey", [netuid]))) or None
    return blocking_result(subtensor.query(bt.storage.SubtensorModule.SubnetOwnerHotkey, [netuid])) or None


def hotkey_uid(subtensor: Any, netuid: int, hotkey: str) -> int | None:
    """The hotkey's uid on ``netuid``, None when it is not registered there."""
    if LEGACY:
        uid = _value(blocking_result(subtensor.query_subtensor("Uids", [netuid, hotkey])))
    else:
        uid = blocking_result(subtensor.read("uid", hotkey_ss58=hotkey, netuid=netuid))
    return None if uid is None else int(uid)


@attrs.frozen
class RawCommitment:
    """A ``Commitments.CommitmentOf`` entry: its block and its fields as the SDK decoded them."""

    block: int
    fields: list[Any]


def commitment(subtensor: Any, netuid: int, hotkey: str) -> RawCommitment | None:
    """``Commitments.CommitmentOf[netuid, hotkey]``, None when the hotkey has committed nothing."""
    if LEGACY:
        value = _value(blocking_result(subtensor.query_module("Commitments", "CommitmentOf", [netuid, hotkey])))
        if not value:
            return None
        return RawCommitment(block=int(value["block"]), fields=list(value["info"]["fields"]))
    record = blocking_result(subtensor.read("commitment", netuid=netuid, hotkey_ss58=hotkey))
    return None if record is None else RawCommitment(block=int(record.block), fields=list(record.fields))


def neurons(subtensor: Any, netuid: int) -> tuple[dict[int, str], list[bool], int]:
    """The subnet's hotkeys by uid, its validator permits by uid, and the block they were read at."""
    if LEGACY:
        keys: Iterable[Any] = blocking_result(subtensor.query_map_subtensor("Keys", [netuid]))
        permits = _value(blocking_result(subtensor.query_subtensor("ValidatorPermit", [netuid])))
        block = subtensor.get_current_block()
    else:
        keys = blocking_result(subtensor.query_map(bt.storage.SubtensorModule.Keys, [netuid]))
        permits = blocking_result(subtensor.query(bt.storage.SubtensorModule.ValidatorPermit, [netuid]))
        block = subtensor.block
    by_uid = {int(_value(uid)): str(_value(hotkey)) for uid, hotkey in keys}
    return by_uid, [bool(p) for p in (permits or [])], int(blocking_result(block))


# --------------------------------------------------------------------------- writes


@attrs.frozen
class Submission:
    """What the chain said about an extrinsic: success, or the pallet error's name and a message."""

    success: bool
    message: str = ""
    error_name: str | None = None
    block_hash: str | None = None
    extrinsic_id: str | None = None


class _HotkeyOnly:
    """10.x signs extrinsics from a wallet-shaped object; a bare Keypair is given as its hotkey."""

    def __init__(self, keypair: Any) -> None:
        self.hotkey = keypair


def set_commitment(subtensor: Any, netuid: int, signer: Any, fields: list[bytes]) -> Submission:
    """Submit ``Commitments.set_commitment`` with one ``Raw<len>`` field per chunk, signed by the hotkey."""
    if LEGACY:
        from bittensor.core.extrinsics.pallets import Commitments

        # 10.x's own publish_metadata_extrinsic wraps the field list once more (the BoundedVec newtype)
        info = {"fields": [[{f"Raw{len(chunk)}": chunk} for chunk in fields]]}
        call = blocking_result(Commitments(subtensor).set_commitment(netuid=netuid, info=info))
        wallet = _HotkeyOnly(signer) if isinstance(signer, Keypair) else signer
        response = blocking_result(subtensor.sign_and_send_extrinsic(
            call=call, wallet=wallet, sign_with="hotkey", wait_for_inclusion=True, wait_for_finalization=True))
        if response.success:
            receipt = response.extrinsic_receipt
            return Submission(True, str(response.message), block_hash=getattr(receipt, "block_hash", None),
                              extrinsic_id=getattr(receipt, "extrinsic_hash", None))
        error = response.error
        name = error.get("name") if isinstance(error, dict) else getattr(error, "name", None)
        return Submission(False, str(response.message or ""), error_name=name)
    info11 = {"fields": [{f"Raw{len(chunk)}": "0x" + chunk.hex()} for chunk in fields]}
    call11 = bt.calls.Commitments.set_commitment(netuid=netuid, info=info11)
    result = blocking_result(subtensor.submit_call(call11, signer, signer="hotkey"))
    if result.success:
        return Submission(True, str(result.message), block_hash=result.block_hash, extrinsic_id=result.extrinsic_id)
    return Submission(False, str(result.message or ""), error_name=getattr(result.error, "name", None))
