"""A stand-in for the dispatcher in round tests: each backend id is the real ``local`` backend in its own directory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from storage_core.backends import local
from storage_core.values import BackendContext, UploadBatch, UploadOutcome


class LocalPublisher:
    """Publishes each batch to ``local`` backends under ``root``; backends in ``down`` fail; records every call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.down: set[str] = set()
        self.batches: list[tuple[tuple[str, ...], UploadBatch]] = []

    def __call__(self, batch: UploadBatch, backends) -> dict[str, UploadOutcome]:  # type: ignore[no-untyped-def]
        self.batches.append((tuple(backends), batch))
        outcomes = {}
        for backend in backends:
            if backend in self.down:
                outcomes[backend] = UploadOutcome(backend, "failed", error=f"{backend} is down for this test")
                continue
            context = BackendContext(backend_id="local", options={"root": str(self.root / backend)})
            outcomes[backend] = UploadOutcome(backend, "ok", receipt=local.storage_upload(context, batch))
        return outcomes

    @property
    def calls(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """(backends, chunk sha256s) of every call."""
        return [(backends, tuple(f.sha256 for f in batch.files)) for backends, batch in self.batches]

    @property
    def row_calls(self) -> list[tuple[tuple[str, ...], int]]:
        """(backends, rows in the batch) of every call."""
        return [(backends, batch.total_rows) for backends, batch in self.batches]

    def stored(self, backend: str) -> Counter:
        """How many times each uri is stored in a backend, over every parquet file it holds."""
        counts: Counter = Counter()
        for path in (self.root / backend).rglob("*.parquet"):
            counts.update(pq.ParquetFile(path).read(columns=["uri"]).column("uri").to_pylist())
        return counts
