"""The miner's side: which chunks each backend holds, and the next signed manifest for it.

A ``ManifestBook`` lives in the spool directory (``SPOOL/manifests/``). When a backend acknowledges
chunks, :meth:`ManifestBook.add` describes each chunk once from its file (URI range, the URI hashes
the index is built from, the copy-detection sample) before the spool may delete it, and records it as
held by that backend. :meth:`build` writes the backend's next manifest: every chunk it holds whose day
is inside the freshness window, the URI index over them, this round's number and the previous manifest's
hash. :meth:`published` moves the chain on only once the backend has stored it, so a failed write is
simply written again (same round number) next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_core.atomic import write_json_atomic
from storage_core.chain.keys import hotkey_address
from storage_core.layout import manifest_key
from storage_core.manifest.document import ChunkEntry, Manifest, encode_manifest
from storage_core.manifest.uri_index import build_index
from storage_core.manifest.uri_hashes import encode_sample, sampled, uri_hashes
from storage_core.schema import SCHEMA_VERSION
from storage_core.values import StagedFile

log = logging.getLogger(__name__)


@attrs.frozen
class BuiltManifest:
    """A manifest ready to store: its key, bytes and hash, and the round it is."""

    backend: str
    key: str
    data: bytes
    sha256: str
    seq: int
    chunks: int


class ManifestBook:
    """Per-backend manifest chains of one miner, kept next to its spool."""

    def __init__(self, directory: Path, hotkey: str, freshness_days: int = 30) -> None:
        self.directory = Path(directory)
        self.entries = self.directory / "chunks"
        self.entries.mkdir(parents=True, exist_ok=True)
        self.hotkey = hotkey
        self.freshness_days = freshness_days
        self._lock = threading.Lock()

    # -- chunks ------------------------------------------------------------------------------------

    def _entry_path(self, sha256: str) -> Path:
        return self.entries / f"{sha256}.json"

    def _hashes_path(self, sha256: str) -> Path:
        return self.entries / f"{sha256}.hashes"

    def describe(self, staged: StagedFile) -> None:
        """Record what a manifest says of ``staged`` (read from its file once; kept after the file goes)."""
        if self._entry_path(staged.sha256).exists():
            return
        with open(staged.path, "rb") as handle:
            handle.seek(-8, 2)
            footer = int.from_bytes(handle.read(4), "little")
        uris = pq.ParquetFile(staged.path).read(columns=["uri"]).column("uri")
        bounds = pc.min_max(uris)
        hashes = uri_hashes(uris.to_pylist())
        self._hashes_path(staged.sha256).write_bytes(hashes.astype("<u8").tobytes())
        write_json_atomic(self._entry_path(staged.sha256), {
            "sha256": staged.sha256, "size": staged.size_bytes, "rows": staged.rows, "source": staged.source,
            "date": staged.date, "uri_min": bounds["min"].as_py(), "uri_max": bounds["max"].as_py(),
            "sample": encode_sample(sampled(hashes)), "footer": footer,
        })

    def _entry(self, sha256: str, seq: int) -> ChunkEntry:
        return ChunkEntry(round=seq, **json.loads(self._entry_path(sha256).read_text()))

    def _hashes(self, sha256: str) -> np.ndarray:
        return np.frombuffer(self._hashes_path(sha256).read_bytes(), dtype="<u8").reshape(-1, 2).astype(np.uint64)

    # -- per backend state -------------------------------------------------------------------------

    def _state_path(self, backend: str) -> Path:
        return self.directory / f"{backend}.json"

    def _state(self, backend: str) -> dict[str, Any]:
        try:
            return json.loads(self._state_path(backend).read_text())
        except FileNotFoundError:
            return {"seq": 0, "previous": None, "held": {}, "dirty": False}  # seq: the lowest next round

    def add(self, backend: str, files: Sequence[StagedFile]) -> None:
        """``backend`` acknowledged ``files``: describe them and list them in its next manifest."""
        if not files:
            return
        for staged in files:
            self.describe(staged)
        with self._lock:
            state = self._state(backend)
            for staged in files:
                state["held"].setdefault(staged.sha256, None)  # its round is the manifest that first lists it
            state["dirty"] = True
            write_json_atomic(self._state_path(backend), state)

    def owes_manifest(self, backend: str) -> bool:
        """Whether ``backend`` holds chunks its last stored manifest does not list."""
        return bool(self._state(backend)["dirty"])

    # -- building ----------------------------------------------------------------------------------

    def build(self, backend: str, signer: Any, now: datetime | None = None) -> BuiltManifest:
        """The next manifest of ``backend``, signed by ``signer`` (this miner's hotkey)."""
        if hotkey_address(signer) != self.hotkey:
            raise ValueError(f"manifests of {self.hotkey} cannot be signed by {hotkey_address(signer)}")
        now = now or datetime.now(UTC)
        oldest = (now - timedelta(days=self.freshness_days + 1)).date().isoformat()
        state = self._state(backend)
        # Rounds are numbered by the clock in milliseconds (never below the last one + 1): a miner that lost its state
        # starts a new chain above the old one instead of fighting over its round numbers.
        seq = max(state["seq"], int(now.timestamp() * 1000))
        entries = sorted((self._entry(sha, seq if first is None else first) for sha, first in state["held"].items()),
                         key=lambda e: (e.source, e.date, e.uri_min, e.sha256))
        entries = [entry for entry in entries if entry.date >= oldest]
        layout, section, digests = build_index([self._hashes(entry.sha256) for entry in entries])
        manifest = Manifest(
            hotkey=self.hotkey, backend=backend, seq=seq, previous=state["previous"],
            round_time=now.strftime("%Y-%m-%dT%H:%M:%SZ"), schema_version=SCHEMA_VERSION, chunks=tuple(entries),
            index=layout, digests=digests,
        )
        data = encode_manifest(manifest, section, signer)
        sha256 = hashlib.sha256(data).hexdigest()
        return BuiltManifest(backend, manifest_key(self.hotkey, manifest.seq, sha256), data, sha256, manifest.seq,
                             len(entries))

    def published(self, built: BuiltManifest, now: datetime | None = None) -> None:
        """``built`` is stored: the chain moves on, and chunks past the window leave the book."""
        now = now or datetime.now(UTC)
        oldest = (now - timedelta(days=self.freshness_days + 1)).date().isoformat()
        with self._lock:
            state = self._state(built.backend)
            if state["seq"] > built.seq:
                return  # already recorded
            state["held"] = {sha: built.seq if first is None else first for sha, first in state["held"].items()
                             if self._entry_path(sha).exists() and self._entry(sha, 0).date >= oldest}
            state.update(seq=built.seq + 1, previous=built.sha256, dirty=False)
            write_json_atomic(self._state_path(built.backend), state)
        log.info("%s: manifest %d stored (%d chunks, %d bytes)", built.backend, built.seq, built.chunks, len(built.data))
