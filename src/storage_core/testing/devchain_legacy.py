"""The dev chain for bittensor 10.x (subnet 13's pin): the part of ``SubstrateInterface`` its ``Subtensor`` uses.

bittensor 10.3's ``Subtensor`` has no ``substrate=`` argument; ``storage_core.chain.sdk.dev_subtensor`` builds
one with the documented test switch ``mock=True`` and points its public ``substrate`` attribute here. Reads
answer SCALE-object-like values (``.value``) and calls go through the SDK's own ``compose_call`` (with its
metadata check) and ``sign_and_send_extrinsic``. The state, rules and errors are the :class:`DevChain`'s,
shared with the 11.x ``DevSubstrate``, so both SDKs see one chain through one file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from storage_core.chain import sdk
from storage_core.testing.devchain import (
    DevChain,
    _check_commitment_encoding,
    apply_extrinsic,
    storage_map,
    storage_value,
)


class ScaleValue:
    """What 10.x's substrate returns for a storage read: the decoded value as ``.value``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getitem__(self, item: Any) -> Any:
        return self.value[item]

    def __bool__(self) -> bool:
        return bool(self.value)


class _CallMetadata:
    def __init__(self, params: tuple[str, ...]) -> None:
        self._params = params

    def get_param_info(self) -> dict[str, Any]:
        return {name: None for name in self._params}


_CALLS = {("Commitments", "set_commitment"): ("netuid", "info")}


class Receipt:
    """The ``ExtrinsicReceipt`` fields 10.x's ``sign_and_send_extrinsic`` reads."""

    def __init__(self, failure: str | None, block: int, block_hash: str, extrinsic_hash: str) -> None:
        self.is_success = failure is None
        self.error_message = None if failure is None else {"type": "Module", "name": failure, "docs": [failure]}
        self.total_fee_amount = 0
        self.block_hash = block_hash
        self.block_number = block
        self.extrinsic_hash = extrinsic_hash


class LegacyDevSubstrate:
    """A :class:`DevChain` file behind 10.x's blocking ``SubstrateInterface`` methods."""

    def __init__(self, path: Path | str) -> None:
        self.chain = DevChain(path)
        self.chain.read_state()  # fail early, with the path, if there is no chain

    def close(self) -> None:
        return None

    # ----------------------------------------------------------------- chain info

    def get_block_number(self, block_hash: str | None = None) -> int:
        return self.chain.block

    def get_chain_head(self) -> str:
        return self.chain.block_hash()

    def get_chain_finalised_head(self) -> str:
        return self.get_chain_head()

    def get_block_hash(self, block_id: int | None = None) -> str:
        return self.chain.block_hash(block_id)

    # ----------------------------------------------------------------- storage

    def query(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None, **_: Any
    ) -> ScaleValue:
        return ScaleValue(storage_value(self.chain.read_state(), module, storage_function, params))

    def query_map(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None, **_: Any
    ) -> list[tuple[Any, ScaleValue]]:
        entries = storage_map(self.chain.read_state(), module, storage_function, params)
        return [(key, ScaleValue(value)) for key, value in entries]

    # ----------------------------------------------------------------- calls

    def get_metadata_call_function(
        self, module_name: str, call_function_name: str, block_hash: str | None = None
    ) -> _CallMetadata | None:
        params = _CALLS.get((module_name, call_function_name))
        return None if params is None else _CallMetadata(params)

    def compose_call(
        self, call_module: str, call_function: str, call_params: dict[str, Any], block_hash: str | None = None
    ) -> dict[str, Any]:
        """Check the call encodes as the runtime's types allow; Raw bytes are kept as ``0x`` hex, as reads decode them."""
        params = dict(call_params)
        if (call_module, call_function) == ("Commitments", "set_commitment"):
            fields = params["info"]["fields"]
            if len(fields) == 1 and isinstance(fields[0], list):  # 10.x wraps the BoundedVec once more
                fields = fields[0]
            params["info"] = {"fields": [{k: _hex(v) for k, v in entry.items()} for entry in fields]}
            _check_commitment_encoding(params)
        return {"module": call_module, "function": call_function, "params": params}

    def create_signed_extrinsic(self, call: dict[str, Any], keypair: Any, **_: Any) -> dict[str, Any]:
        payload = json.dumps(call, sort_keys=True).encode()
        return {"call": call, "signer": keypair.ss58_address, "signature": bytes(keypair.sign(payload)).hex()}

    def submit_extrinsic(
        self, extrinsic: dict[str, Any], wait_for_inclusion: bool = False, wait_for_finalization: bool = False
    ) -> Receipt:
        call = extrinsic["call"]
        payload = json.dumps(call, sort_keys=True).encode()
        digest = "0x" + hashlib.blake2b(payload + extrinsic["signature"].encode(), digest_size=32).hexdigest()
        if not sdk.verify_signature(payload, bytes.fromhex(extrinsic["signature"]), extrinsic["signer"]):
            block = self.chain.block
            return Receipt("BadSignature", block, self.chain.block_hash(block), digest)
        failure, block = apply_extrinsic(self.chain, extrinsic["signer"], call["module"], call["function"],
                                         call["params"])
        return Receipt(failure, block, self.chain.block_hash(block), digest)

    def get_payment_info(self, call: Any, keypair: Any) -> dict[str, int]:
        return {"partial_fee": 0}

    def get_account_next_index(self, account_address: str) -> int:
        return int(self.chain.read_state()["nonces"].get(account_address, 0))


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return str(value)
