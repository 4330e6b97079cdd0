"""Which repo belongs to which miner, and the signed manifest that proves it.

The repo id is derived, never claimed: ``{namespace}/{repo_prefix}-{hotkey}``, with ``namespace`` and
``repo_prefix`` from the chain config. A validator computes it from the hotkey alone, so a miner cannot
point validators at another miner's repo. Write access is enforced by the Hub (each miner's token is
scoped to its own repo); in addition each repo holds a manifest naming the repo and the hotkey, signed
by that hotkey, which the store (checker.HfStore) verifies before serving any byte of the repo.
"""

from __future__ import annotations

import json
from typing import Any

from storage_core.chain.keys import hotkey_address, public_keypair
from storage_core.layout import check_hotkey

MANIFEST_PATH = ".storage-core/manifest.json"
SIGNATURE_PATH = ".storage-core/manifest.sig"
MANIFEST_FORMAT = "storage-core-hf-manifest/1"


def repo_id_for(namespace: str, repo_prefix: str, hotkey: str) -> str:
    """The one repo a miner's data lives in."""
    return f"{namespace}/{repo_prefix}-{check_hotkey(hotkey)}"


def manifest_bytes(repo_id: str, hotkey: str) -> bytes:
    """The canonical manifest (sorted keys, no spaces): the exact bytes that are signed."""
    document = {"format": MANIFEST_FORMAT, "hotkey": hotkey, "repo_id": repo_id}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign(signer: Any, message: bytes) -> bytes:
    """Sign with a bittensor Keypair (``.sign``) or a Wallet (its hotkey)."""
    keypair = signer if hasattr(signer, "sign") and not hasattr(signer, "hotkey") else signer.hotkey
    return keypair.sign(message)


def signed_manifest(signer: Any, repo_id: str) -> tuple[bytes, bytes]:
    """(manifest bytes, hex signature bytes) for the signer's hotkey."""
    payload = manifest_bytes(repo_id, hotkey_address(signer))
    return payload, sign(signer, payload).hex().encode()


def manifest_problem(payload: bytes | None, signature: bytes | None, repo_id: str, hotkey: str) -> str | None:
    """Why a repo's manifest does not prove that ``hotkey`` owns ``repo_id``, or None when it does."""
    if payload is None or signature is None:
        return f"missing {MANIFEST_PATH} or {SIGNATURE_PATH}"
    if payload != manifest_bytes(repo_id, hotkey):
        return f"{MANIFEST_PATH} does not name repo {repo_id} and hotkey {hotkey}"
    try:
        raw = bytes.fromhex(signature.decode("ascii").strip())
        valid = public_keypair(hotkey).verify(payload, raw)
    except (ValueError, UnicodeDecodeError, TypeError):
        valid = False
    return None if valid else f"{SIGNATURE_PATH} is not a signature of the manifest by {hotkey}"
