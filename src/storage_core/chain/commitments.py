"""The subnet owner's hotkey and its commitment: where the storage config lives on chain.

Readers find the owner through ``SubtensorModule.SubnetOwnerHotkey`` and read that hotkey's
``Commitments.CommitmentOf`` on the subnet; the owner writes it with ``Commitments.set_commitment``
signed by the owner hotkey. Chain failures become :class:`storage_core.errors.ChainError` with a
message a subnet owner can act on.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import attrs

from storage_core.chain import sdk
from storage_core.chain.sdk import blocking_result
from storage_core.config import COMMITMENT_FIELD_BYTES, COMMITMENT_FIELDS, split_commitment_fields
from storage_core.errors import ChainError

logger = logging.getLogger(__name__)

_RAW_VARIANT = re.compile(r"^Raw\d+$")
SPACE_QUOTA_BYTES = 3100
MIN_COMMITMENT_BYTES = 100


@attrs.frozen
class CommitmentRecord:
    """A hotkey's commitment as stored: the block it was set at and its raw bytes (Raw fields joined)."""

    hotkey: str
    block: int
    payload: bytes


@attrs.frozen
class CommitReceipt:
    """What ``set_commitment`` did: the exact fields committed and where the extrinsic landed."""

    netuid: int
    hotkey: str
    payload: bytes
    fields: tuple[bytes, ...]
    block_hash: str | None
    extrinsic_id: str | None


def _network(subtensor: Any) -> str:
    return str(getattr(subtensor, "network", "the chain"))


def _reading(subtensor: Any, what: str, read: Any) -> Any:
    try:
        return read()
    except ChainError:
        raise
    except Exception as error:  # the SDK raises connection, RPC and decoding errors of several types
        raise ChainError(f"cannot read {what} from {_network(subtensor)}: {sdk.one_line(error)}") from error


def read_genesis_hash(subtensor: Any) -> str:
    """The chain's genesis hash (ChainError when the chain cannot be read)."""
    return str(_reading(subtensor, "the genesis hash", lambda: sdk.genesis_hash(subtensor)))


def read_owner_hotkey(subtensor: Any, netuid: int) -> str:
    """The subnet owner's hotkey (ChainError when the subnet does not exist or has none)."""
    owner = _reading(subtensor, f"the owner hotkey of subnet {netuid}", lambda: sdk.owner_hotkey(subtensor, netuid))
    if not owner:
        raise ChainError(f"subnet {netuid} has no owner hotkey on {_network(subtensor)}: does the subnet exist?")
    return str(owner)


def hotkey_uid(subtensor: Any, netuid: int, hotkey: str) -> int | None:
    """The hotkey's uid on the subnet, or None when it is not registered there."""
    return _reading(
        subtensor,
        f"the registration of {hotkey} on subnet {netuid}",
        lambda: sdk.hotkey_uid(subtensor, netuid, hotkey),
    )


def _field_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)) and len(value) == 1 and not isinstance(value[0], int):
        return _field_bytes(value[0])  # a newtype wrapper around the bytes
    return bytes(value)  # a sequence of byte values


def _raw_bytes(fields: list[Any]) -> bytes:
    """The Raw fields' bytes joined; the two SDKs decode fields as variant dicts, maybe inside a newtype list."""
    data = b""
    for entry in fields:
        if isinstance(entry, (list, tuple)) and entry and not isinstance(entry[0], str):
            data += _raw_bytes(list(entry))
            continue
        items = entry.items() if isinstance(entry, dict) else [tuple(entry)]
        for variant, value in items:
            if _RAW_VARIANT.match(str(variant)):
                data += _field_bytes(value)
    return data


def read_commitment(subtensor: Any, netuid: int, hotkey: str) -> CommitmentRecord | None:
    """The hotkey's commitment on the subnet as raw bytes, or None when it has none."""
    commitment = _reading(
        subtensor,
        f"the commitment of {hotkey} on subnet {netuid}",
        lambda: sdk.commitment(subtensor, netuid, hotkey),
    )
    if commitment is None:
        return None
    return CommitmentRecord(hotkey=hotkey, block=commitment.block, payload=_raw_bytes(commitment.fields))


def commitment_fields(payload: str) -> list[dict[str, str]]:
    """The ``info.fields`` argument of ``set_commitment`` for a payload (ConfigError when it does not fit)."""
    return [{f"Raw{len(chunk)}": "0x" + chunk.hex()} for chunk in split_commitment_fields(payload)]


def _explain_failure(name: str | None, message: str, netuid: int, hotkey: str) -> str:
    if name == "AccountNotAllowedCommit":
        return (
            f"the chain refused the commitment: hotkey {hotkey} is not registered on subnet {netuid} "
            "(only registered hotkeys may commit; sign with the subnet owner's registered hotkey). Nothing was changed."
        )
    if name == "SpaceLimitExceeded":
        return (
            f"the chain refused the commitment: hotkey {hotkey} has used its commitment space quota on subnet "
            f"{netuid} for this epoch (about {SPACE_QUOTA_BYTES} bytes per epoch, each commitment counting at "
            f"least {MIN_COMMITMENT_BYTES}). Wait for the next epoch and try again. Nothing was changed."
        )
    if name == "TooManyFieldsInCommitmentInfo":
        return (
            f"the chain refused the commitment: more than {COMMITMENT_FIELDS} fields. Nothing was changed."
        )
    return f"the chain refused the commitment on subnet {netuid}: {message or name or 'unknown error'}"


def commit_payload(subtensor: Any, netuid: int, signer: Any, payload: str) -> CommitReceipt:
    """Write ``payload`` as the signer hotkey's commitment on ``netuid`` (a bittensor Wallet or a Keypair).

    The payload is split into Raw fields of at most 128 bytes; the chain's own checks (registration,
    space quota, field count) are reported as ChainError naming what to do.
    """
    from storage_core.chain.keys import hotkey_address

    hotkey = hotkey_address(signer)
    fields = commitment_fields(payload)
    chunks = tuple(bytes.fromhex(next(iter(f.values())).removeprefix("0x")) for f in fields)
    try:
        result = sdk.set_commitment(subtensor, netuid, signer, list(chunks))
    except ChainError:
        raise
    except Exception as error:  # encoding, connection and signing failures
        raise ChainError(f"could not submit the commitment to {_network(subtensor)}: {sdk.one_line(error)}") from error
    if not result.success:
        raise ChainError(_explain_failure(result.error_name, result.message, netuid, hotkey))
    logger.info("committed %d bytes on subnet %d as %s (%s)", len(payload.encode()), netuid, hotkey, result.extrinsic_id)
    return CommitReceipt(
        netuid=netuid,
        hotkey=hotkey,
        payload=payload.encode(),
        fields=chunks,
        block_hash=result.block_hash,
        extrinsic_id=result.extrinsic_id,
    )


__all__ = [
    "COMMITMENT_FIELD_BYTES",
    "CommitReceipt",
    "CommitmentRecord",
    "commit_payload",
    "commitment_fields",
    "hotkey_uid",
    "read_commitment",
    "blocking_result",
    "read_owner_hotkey",
]
