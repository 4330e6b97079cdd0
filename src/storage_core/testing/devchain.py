"""A development chain: an in-memory ``Substrate`` for the real ``bittensor.Subtensor``, shared through a file.

bittensor 11 lets a caller inject any ``Substrate`` into ``bt.Subtensor(network, substrate=...)``; the SDK's
own reads, call builders and ``submit_call`` then run unchanged against it. This one keeps the few storage
items storage-core needs (subnet owners, neuron registrations, validator permits, commitments and their
per-epoch space quota) in a JSON file, so that ``config set`` in one process, ``config get`` in another and
the S3 grant service in a third all see one chain. Writers take an exclusive ``fcntl`` lock on a sibling
``.lock`` file and replace the state file atomically; readers read the last complete state.

It follows subtensor's rules for ``Commitments.set_commitment``: at most ``MaxFields`` (3) fields, ``Raw``
fields of 0..128 bytes (longer ones cannot even be encoded), the signer must be registered on the netuid
(``AccountNotAllowedCommit``) and the bytes committed per (netuid, account) per epoch stay within
``MaxSpace`` (3100), each commitment counting at least 100 (``SpaceLimitExceeded``). Failed extrinsics
change nothing and come back as failing ``ExtrinsicResult``s carrying the chain's error names.

Each chain has a genesis of its own (a random salt in its state file, or the ``salt`` given to
:meth:`DevChain.create`), as real chains do: every dev chain is "local" to the SDK, and nodes tell chains
apart by their genesis hash (``System.BlockHash[0]``).

Admin API (tests, demos): :meth:`DevChain.create_subnet`, :meth:`DevChain.register`,
:meth:`DevChain.advance_blocks`, :meth:`DevChain.advance_epochs`. Select it from the CLI with
``--subtensor.network devchain --subtensor.chain_endpoint PATH`` (or ``devchain:PATH``, or the
``STORAGE_CORE_DEVCHAIN`` environment variable).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from storage_core.atomic import write_json_atomic
from storage_core.chain import sdk

if not sdk.LEGACY:  # DevSubstrate speaks bittensor 11's Substrate contract; 10.x uses devchain_legacy
    from bittensor.balance import Balance
    from bittensor.result import ChainError, ExtrinsicResult
    from bittensor_core import verify

logger = logging.getLogger(__name__)

MAX_FIELDS = 3
MAX_RAW_BYTES = 128
MAX_SPACE = 3100
MIN_USED_SPACE = 100
DEFAULT_TEMPO = 360
INITIAL_DEPOSIT = 0
FIELD_DEPOSIT = 0
_RAW_VARIANT = re.compile(r"^Raw(\d+)$")

_ERROR_DESCRIPTIONS = {
    "AccountNotAllowedCommit": "the signing hotkey is not registered on the subnet (or the subnet does not exist)",
    "SpaceLimitExceeded": "the account's commitment space quota for the current epoch is used up",
    "TooManyFieldsInCommitmentInfo": "the commitment has more fields than MaxFields allows",
    "BadSignature": "the extrinsic's signature does not verify",
}


class DevChainError(Exception):
    """The dev chain's state file is unusable, or an admin call was given bad arguments."""


def _empty_state() -> dict[str, Any]:
    return {"block": 1, "subnets": {}, "commitments": {}, "used_space": {}, "nonces": {}, "extrinsics": 0}


def new_salt() -> str:
    """A fresh genesis salt: two dev chains never share a genesis hash (a node keys its config cache by it)."""
    return secrets.token_hex(16)


class DevChain:
    """The chain state in a JSON file, with the admin API tests and demos use."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path | str, *, block: int = 1, salt: str | None = None) -> DevChain:
        """Start a fresh chain at ``path`` (replacing any state there).

        ``salt`` makes the chain's block hashes, and so its genesis hash, its own: a random one by default, as
        two real chains never share a genesis; pass the same salt to build the same chain again.
        """
        chain = cls(path)
        chain.path.parent.mkdir(parents=True, exist_ok=True)
        with chain._locked():
            state = _empty_state()
            state["block"] = block
            state["salt"] = new_salt() if salt is None else str(salt)
            chain._write(state)
        return chain

    # ----------------------------------------------------------------- persistence

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_state(self) -> dict[str, Any]:
        """The last complete state written (readers never see a half-written file)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise DevChainError(f"no dev chain at {self.path}; create one with DevChain.create(path)") from None
        try:
            state = json.loads(text)
        except ValueError as error:
            raise DevChainError(f"dev chain state {self.path} is not valid JSON: {error}") from error
        return state

    def _write(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path, state, sort_keys=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the lock; the change is written only if the block exits cleanly."""
        with self._locked():
            state = self.read_state()
            yield state
            self._write(state)

    # ----------------------------------------------------------------- admin API

    def create_subnet(
        self, netuid: int, owner_hotkey: str, *, owner_coldkey: str | None = None, tempo: int = DEFAULT_TEMPO
    ) -> None:
        """Add subnet ``netuid`` owned by ``owner_hotkey``; the owner hotkey is registered as uid 0 (as on chain)."""
        with self.transaction() as state:
            key = str(netuid)
            if key in state["subnets"]:
                raise DevChainError(f"subnet {netuid} already exists")
            state["subnets"][key] = {
                "owner_hotkey": owner_hotkey,
                "owner_coldkey": owner_coldkey or owner_hotkey,
                "tempo": tempo,
                "neurons": [],
                "token_symbol": f"SN{netuid}",
            }
            _register(state, netuid, owner_hotkey, owner_coldkey or owner_hotkey, validator_permit=True)

    def register(
        self, netuid: int, hotkey: str, *, coldkey: str | None = None, validator_permit: bool = False
    ) -> int:
        """Register ``hotkey`` on ``netuid`` (idempotent) and return its uid."""
        with self.transaction() as state:
            return _register(state, netuid, hotkey, coldkey or hotkey, validator_permit=validator_permit)

    def deregister(self, netuid: int, hotkey: str) -> None:
        """Remove ``hotkey`` from ``netuid`` (its uid slot becomes empty)."""
        with self.transaction() as state:
            subnet = _subnet(state, netuid)
            for neuron in subnet["neurons"]:
                if neuron and neuron["hotkey"] == hotkey:
                    subnet["neurons"][neuron["uid"]] = None

    def set_validator_permit(self, netuid: int, hotkey: str, permit: bool) -> None:
        with self.transaction() as state:
            neuron = _neuron(state, netuid, hotkey)
            if neuron is None:
                raise DevChainError(f"{hotkey} is not registered on subnet {netuid}")
            neuron["validator_permit"] = permit

    def advance_blocks(self, count: int = 1) -> int:
        """Produce ``count`` empty blocks; returns the new head."""
        if count < 0:
            raise DevChainError("cannot go back in time")
        with self.transaction() as state:
            state["block"] += count
            return state["block"]

    def advance_epochs(self, netuid: int, count: int = 1) -> int:
        """Move to the first block of the epoch ``count`` epochs after the current one on ``netuid``."""
        with self.transaction() as state:
            tempo = _subnet(state, netuid)["tempo"]
            target_epoch = epoch_index(netuid, state["block"], tempo) + count
            # first block b with (b + netuid + 1) // (tempo + 1) == target_epoch
            state["block"] = max(state["block"], target_epoch * (tempo + 1) - netuid - 1)
            return state["block"]

    @property
    def block(self) -> int:
        return int(self.read_state()["block"])

    def block_hash(self, block: int | None = None) -> str:
        """The hash of ``block`` (the head when None); block 0's is the genesis hash."""
        state = self.read_state()
        return hash_of_block(state, int(state["block"]) if block is None else block)

    @property
    def genesis_hash(self) -> str:
        """What identifies this chain, whatever network label a client gives it."""
        return self.block_hash(0)

    def substrate(self) -> Any:
        """A fresh substrate over this chain for the installed SDK (11.x: ``Subtensor(..., substrate=)``)."""
        if sdk.LEGACY:
            from storage_core.testing.devchain_legacy import LegacyDevSubstrate

            return LegacyDevSubstrate(self.path)
        return DevSubstrate(self.path)

    def subtensor(self) -> Any:
        """A blocking ``bittensor.Subtensor`` (10.3 or 11) wired to this chain."""
        return sdk.dev_subtensor(self.path)


def epoch_index(netuid: int, block: int, tempo: int) -> int:
    """subtensor's ``get_epoch_index``: epochs are offset per netuid so subnets do not all step together."""
    if tempo == 0:
        return 0
    return (block + netuid + 1) // (tempo + 1)


def _subnet(state: dict[str, Any], netuid: int) -> dict[str, Any]:
    try:
        return state["subnets"][str(netuid)]
    except KeyError:
        raise DevChainError(f"subnet {netuid} does not exist on the dev chain") from None


def _neuron(state: dict[str, Any], netuid: int, hotkey: str) -> dict[str, Any] | None:
    subnet = state["subnets"].get(str(netuid))
    if subnet is None:
        return None
    for neuron in subnet["neurons"]:
        if neuron and neuron["hotkey"] == hotkey:
            return neuron
    return None


def _register(state: dict[str, Any], netuid: int, hotkey: str, coldkey: str, *, validator_permit: bool) -> int:
    existing = _neuron(state, netuid, hotkey)
    if existing is not None:
        existing["validator_permit"] = existing["validator_permit"] or validator_permit
        return int(existing["uid"])
    subnet = _subnet(state, netuid)
    neurons = subnet["neurons"]
    uid = next((i for i, slot in enumerate(neurons) if slot is None), len(neurons))
    neuron = {
        "uid": uid,
        "hotkey": hotkey,
        "coldkey": coldkey,
        "validator_permit": validator_permit,
        "registered_at": state["block"],
    }
    if uid == len(neurons):
        neurons.append(neuron)
    else:
        neurons[uid] = neuron
    return uid


def storage_value(state: dict[str, Any], module: str, storage_function: str, params: list | None) -> Any:
    """The value of one storage item, decoded the way the SDKs decode it (shared by both SDK adapters)."""
    params = list(params or [])
    key = (module, storage_function)
    if key == ("SubtensorModule", "SubnetOwnerHotkey"):
        subnet = state["subnets"].get(str(params[0]))
        return subnet["owner_hotkey"] if subnet else None
    if key == ("SubtensorModule", "SubnetOwner"):
        subnet = state["subnets"].get(str(params[0]))
        return subnet["owner_coldkey"] if subnet else None
    if key == ("SubtensorModule", "NetworksAdded"):
        return str(params[0]) in state["subnets"]
    if key == ("SubtensorModule", "Tempo"):
        subnet = state["subnets"].get(str(params[0]))
        return subnet["tempo"] if subnet else 0
    if key == ("SubtensorModule", "SubnetworkN"):
        subnet = state["subnets"].get(str(params[0]))
        return sum(1 for n in subnet["neurons"] if n) if subnet else 0
    if key == ("SubtensorModule", "Uids"):
        neuron = _neuron(state, params[0], params[1])
        return None if neuron is None else neuron["uid"]
    if key == ("SubtensorModule", "Keys"):
        subnet = state["subnets"].get(str(params[0]))
        neurons = subnet["neurons"] if subnet else []
        uid = int(params[1])
        return neurons[uid]["hotkey"] if uid < len(neurons) and neurons[uid] else None
    if key == ("SubtensorModule", "IsNetworkMember"):
        return _neuron(state, params[1], params[0]) is not None
    if key == ("SubtensorModule", "ValidatorPermit"):
        subnet = state["subnets"].get(str(params[0]))
        return [bool(n and n["validator_permit"]) for n in (subnet["neurons"] if subnet else [])]
    if key == ("SubtensorModule", "Owner"):
        for subnet in state["subnets"].values():
            for neuron in subnet["neurons"]:
                if neuron and neuron["hotkey"] == params[0]:
                    return neuron["coldkey"]
        return None
    if key == ("Commitments", "CommitmentOf"):
        return state["commitments"].get(f"{params[0]}:{params[1]}")
    if key == ("Commitments", "UsedSpaceOf"):
        return state["used_space"].get(f"{params[0]}:{params[1]}")
    if key == ("Commitments", "MaxSpace"):
        return MAX_SPACE
    if key == ("System", "Number"):
        return state["block"]
    if key == ("System", "BlockHash"):
        number = int(params[0])
        return hash_of_block(state, number) if 0 <= number <= int(state["block"]) else "0x" + "00" * 32
    logger.debug("dev chain has no storage item %s.%s; answering None", module, storage_function)
    return None


def storage_map(state: dict[str, Any], module: str, storage_function: str, params: list | None) -> list[tuple[Any, Any]]:
    """The (key, value) entries of a storage map under ``params`` (shared by both SDK adapters)."""
    params = list(params or [])
    key = (module, storage_function)
    if key == ("SubtensorModule", "TokenSymbol"):
        return [(int(n), "0x" + s["token_symbol"].encode().hex()) for n, s in state["subnets"].items()]
    if key == ("SubtensorModule", "SubnetOwnerHotkey"):
        return [(int(n), s["owner_hotkey"]) for n, s in state["subnets"].items()]
    if key == ("SubtensorModule", "Keys"):
        subnet = state["subnets"].get(str(params[0]))
        return [(n["uid"], n["hotkey"]) for n in (subnet["neurons"] if subnet else []) if n]
    if key == ("SubtensorModule", "Uids"):
        subnet = state["subnets"].get(str(params[0]))
        return [(n["hotkey"], n["uid"]) for n in (subnet["neurons"] if subnet else []) if n]
    if key == ("SubtensorModule", "IsNetworkMember"):
        return [
            (int(netuid), True)
            for netuid, subnet in state["subnets"].items()
            if any(n and n["hotkey"] == params[0] for n in subnet["neurons"])
        ]
    if key == ("Commitments", "CommitmentOf"):
        prefix = f"{params[0]}:"
        return [(k[len(prefix) :], v) for k, v in state["commitments"].items() if k.startswith(prefix)]
    logger.debug("dev chain has no storage map %s.%s; answering []", module, storage_function)
    return []


def hash_of_block(state: dict[str, Any], block: int) -> str:
    """A block's hash on this chain: derived from its number and the chain's salt (a state file written before
    salts existed has none, and keeps its old hashes)."""
    salt = state.get("salt") or ""
    seed = f"devchain-{salt}-block-{block}" if salt else f"devchain-block-{block}"
    return "0x" + hashlib.blake2b(seed.encode(), digest_size=32).hexdigest()


def apply_extrinsic(chain: DevChain, signer: str, module: str, function: str, params: Any) -> tuple[str | None, int]:
    """Include a signed call in a new block and dispatch it: the pallet error's name (None on success) and the block.

    A failed dispatch changes nothing but the signer's nonce; ``CallFiltered`` means the dev chain lacks the call.
    """
    with chain.transaction() as state:
        state["block"] += 1
        state["extrinsics"] += 1
        state["nonces"][signer] = int(state["nonces"].get(signer, 0)) + 1
        block = int(state["block"])
        dispatch = _DISPATCH.get((module, function))
        failure = "CallFiltered" if dispatch is None else dispatch(state, signer, params)
    if failure is not None:
        logger.info("dev chain: %s.%s by %s failed: %s", module, function, signer, failure)
    return failure, block


def _failure(name: str) -> ExtrinsicResult:
    description = _ERROR_DESCRIPTIONS.get(name, name)
    message = f"Commitments.{name}: {description}"
    return ExtrinsicResult(success=False, message=message, error=ChainError(message, name=name))


class DevSubstrate:
    """The ``bittensor`` ``Substrate`` contract over a :class:`DevChain` file.

    Every read re-reads the file, so changes made by other processes show up at once; every write is one
    locked read-modify-write.
    """

    def __init__(self, path: Path | str) -> None:
        self.chain = DevChain(path)
        self.token_symbols: dict[int, str] = {}

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance.from_rao(int(rao))

    # ----------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        self.chain.read_state()  # fail early, with the path, if there is no chain

    async def close(self) -> None:
        return None

    # ----------------------------------------------------------------- chain info

    async def block_hash(self, block: int | None = None) -> str:
        return self.chain.block_hash(block)

    async def block_number(self) -> int:
        return self.chain.block

    async def finalized_block_number(self) -> int:
        return self.chain.block

    async def block_time(self) -> float:
        return 12.0

    async def spec_version(self) -> int:
        return 1

    async def constant(self, module: str, name: str) -> Any:
        constants = {("Commitments", "MaxFields"): MAX_FIELDS}
        return constants.get((module, name))

    # ----------------------------------------------------------------- storage

    async def query(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None
    ) -> Any:
        return storage_value(self.chain.read_state(), module, storage_function, params)

    async def query_map(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None
    ) -> list[tuple[Any, Any]]:
        return storage_map(self.chain.read_state(), module, storage_function, params)

    async def query_batch(
        self, module: str, storage_function: str, param_sets: list[list], block_hash: str | None = None
    ) -> list[Any]:
        return [await self.query(module, storage_function, params, block_hash) for params in param_sets]

    async def map_has_entries(
        self, module: str, storage_function: str, params: list, block_hash: str | None = None
    ) -> bool:
        return bool(await self.query_map(module, storage_function, params, block_hash))

    # ----------------------------------------------------------------- calls

    async def compose(self, call: Any) -> dict[str, Any]:
        """Check the call encodes the way the runtime's types allow (as SCALE encoding would) and keep it."""
        module, function, params = call
        if (module, function) == ("Commitments", "set_commitment"):
            _check_commitment_encoding(params)
        return {"module": module, "function": function, "params": params}

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        return Balance.from_rao(0)

    async def account_next_index(self, address: str) -> int:
        return int(self.chain.read_state()["nonces"].get(address, 0))

    async def submit(
        self,
        call: dict[str, Any],
        keypair: Any,
        *,
        nonce: int | None = None,
        period: int | None = None,
        wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> ExtrinsicResult:
        """Sign, include in a new block and dispatch; a failed dispatch changes nothing but the nonce."""
        payload = json.dumps(call, sort_keys=True).encode()
        signer = keypair.ss58_address
        if not verify(payload, keypair.sign(payload), signer):
            return _failure("BadSignature")
        failure, block = apply_extrinsic(self.chain, signer, call["module"], call["function"], call["params"])
        if failure == "CallFiltered":
            error = f"the dev chain does not implement {call['module']}.{call['function']}"
            return ExtrinsicResult(success=False, message=error, error=ChainError(error, name="CallFiltered"))
        if failure is not None:
            return _failure(failure)
        return ExtrinsicResult(
            success=True,
            message="Success",
            block_hash=self.chain.block_hash(block),
            extrinsic_id=f"{block}-1",
        )


    # ----------------------------------------------------------------- the rest of the Substrate contract

    async def get_block(self, block_number: int | None = None, block_hash: str | None = None) -> dict | None:
        state = self.chain.read_state()
        number = int(state["block"]) if block_number is None else block_number
        return {"header": {"number": number, "hash": hash_of_block(state, number)}, "extrinsics": []}

    async def events(self, block_hash: str | None = None) -> list[dict]:
        return []

    async def estimate_weight(self, call: Any, keypair: Any) -> dict:
        return {"ref_time": 0, "proof_size": 0}

    async def mev_next_key(self) -> bytes | None:
        return None  # no MEV shield on the dev chain

    async def runtime_call(self, api: str, method: str, params: list, block_hash: str | None = None) -> Any:
        if (api, method) == ("NeuronInfoRuntimeApi", "get_neurons_lite"):
            subnet = self.chain.read_state()["subnets"].get(str(params[0]))
            return [_neuron_record(n, params[0]) for n in (subnet["neurons"] if subnet else []) if n]
        raise _unsupported(f"runtime API {api}.{method}")

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        raise _unsupported("SCALE decoding")

    def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict]:
        raise _unsupported("block subscriptions")

    async def sign_extrinsic(self, call: Any, keypair: Any, *, nonce: int, period: int) -> tuple[bytes, str]:
        raise _unsupported("detached signing")

    async def find_extrinsic(self, extrinsic_hash: str, block_hash: str) -> ExtrinsicResult | None:
        return None

    async def prepare(
        self,
        call: Any,
        *,
        address: str,
        crypto_type: int = 1,
        nonce: int | None = None,
        period: int | None = None,
        tip: int = 0,
        metadata_hash: bytes | None = None,
    ) -> Any:
        raise _unsupported("out-of-process signing")

    async def submit_signature(
        self, unsigned: Any, signature: bytes | str, *, wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> ExtrinsicResult:
        raise _unsupported("out-of-process signing")

    async def submit_signed(
        self, extrinsic: Any, keypair: Any, *, wait_for_inclusion: bool = True, wait_for_finalization: bool = True
    ) -> ExtrinsicResult:
        raise _unsupported("pre-signed extrinsics")

    def multisig_account(self, signatories: list[str], threshold: int) -> Any:
        raise _unsupported("multisig")

    async def submit_multisig(
        self, call: Any, keypair: Any, multisig_account: Any, *, wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> ExtrinsicResult:
        raise _unsupported("multisig")


def _neuron_record(neuron: dict[str, Any], netuid: int) -> dict[str, Any]:
    """The fields of ``NeuronInfoLite`` that the SDK's ``neurons`` read lifts (no stake on the dev chain)."""
    return {
        "uid": neuron["uid"],
        "netuid": netuid,
        "hotkey": neuron["hotkey"],
        "coldkey": neuron["coldkey"],
        "active": True,
        "validator_permit": neuron["validator_permit"],
        "last_update": neuron["registered_at"],
        "stake": [],
    }


def _unsupported(what: str) -> ChainError:
    return ChainError(f"the storage-core dev chain does not implement {what}", name="Unsupported")


def _check_commitment_encoding(params: dict[str, Any]) -> None:
    info = params.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("fields"), list):
        raise ValueError("set_commitment: info must be {'fields': [...]}")
    for entry in info["fields"]:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"set_commitment: a field must be one Data variant, got {entry!r}")
        ((variant, value),) = entry.items()
        match = _RAW_VARIANT.match(variant)
        if not match:
            raise ValueError(f"set_commitment: the dev chain only supports Raw fields, got {variant}")
        size = int(match.group(1))
        if size > MAX_RAW_BYTES:
            raise ValueError(f"set_commitment: Data has no variant {variant} (Raw fields hold 0..{MAX_RAW_BYTES} bytes)")
        data = bytes.fromhex(str(value).removeprefix("0x"))
        if len(data) != size:
            raise ValueError(f"set_commitment: {variant} needs exactly {size} bytes, got {len(data)}")


def _set_commitment(state: dict[str, Any], signer: str, params: dict[str, Any]) -> str | None:
    netuid = int(params["netuid"])
    fields = params["info"]["fields"]
    if len(fields) > MAX_FIELDS:
        return "TooManyFieldsInCommitmentInfo"
    subnet = state["subnets"].get(str(netuid))
    if subnet is None or _neuron(state, netuid, signer) is None:
        return "AccountNotAllowedCommit"
    # Data::len_for_rate_limit: a Raw field counts its length
    required = sum(len(bytes.fromhex(str(v).removeprefix("0x"))) for f in fields for v in f.values())
    required = max(required, MIN_USED_SPACE)
    epoch = epoch_index(netuid, state["block"], subnet["tempo"])
    key = f"{netuid}:{signer}"
    usage = state["used_space"].get(key) or {"last_epoch": epoch, "used_space": 0}
    if usage["last_epoch"] != epoch:
        usage = {"last_epoch": epoch, "used_space": 0}
    if usage["used_space"] + required > MAX_SPACE:
        return "SpaceLimitExceeded"
    usage["used_space"] += required
    state["used_space"][key] = usage
    state["commitments"][key] = {
        "deposit": INITIAL_DEPOSIT + FIELD_DEPOSIT * len(fields),
        "block": state["block"],
        "info": {"fields": fields},
    }
    return None


_DISPATCH = {("Commitments", "set_commitment"): _set_commitment}
