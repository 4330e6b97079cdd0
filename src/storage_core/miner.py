"""The miner's side: one upload round = export new rows once, publish to the selected backends, record.

``MinerStorage.upload_data()`` is the integration guide's call. It resolves the config (the node's
source follows the chain), picks this hotkey's backends by rollout, runs the export/spool/ledger round
with the dispatcher as publisher (dual-write, isolation, fallback), and keeps a small status record of
the last upload per backend for ``storage-core status``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from storage_core.atomic import write_json_atomic
from storage_core.export.backfill import BackfillOptions
from storage_core.export.exporter import ExportOptions
from storage_core.export.round import RoundProgress, RoundResult, run_upload_round
from storage_core.export.spool import Spool
from storage_core.dispatch import Dispatcher, unavailable_reason
from storage_core.manifest import ManifestBook
from storage_core.node import StorageNode
from storage_core.telemetry import StorageMetrics
from storage_core.values import UploadBatch, UploadOutcome

log = logging.getLogger(__name__)
LAST_UPLOAD_FILE = "last_upload.json"


@attrs.frozen
class BackendTally:
    """Per backend over one round: batches, rows and seconds, as the summary table shows them."""

    backend: str
    batches: int = 0
    rows: int = 0
    elapsed_s: float = 0.0
    fallback_for: tuple[str, ...] = ()


@attrs.frozen
class MinerRound:
    """A round's result plus what the dispatcher saw per backend."""

    result: RoundResult
    selected: tuple[str, ...]
    tallies: tuple[BackendTally, ...]
    unavailable: Mapping[str, str] = attrs.field(factory=dict)  # selected backend -> why its plugin cannot run
    manifests: Mapping[str, str] = attrs.field(factory=dict)  # backend -> what happened to its round manifest

    @property
    def ok(self) -> bool:
        """Every selected backend holds what it is owed; a selected backend without a working plugin is not ok."""
        return self.result.ok and not self.unavailable

    def tally(self, backend: str) -> BackendTally:
        return next((t for t in self.tallies if t.backend == backend), BackendTally(backend))


class MinerStorage:
    """One miner's storage: its node (config, plugins, wallet), its database and its spool."""

    def __init__(
        self,
        node: StorageNode,
        db_path: Path | str,
        spool: Spool | None = None,
        export_options: ExportOptions = ExportOptions(),
        metrics: StorageMetrics | None = None,
        backfill: BackfillOptions | None = BackfillOptions(),
    ) -> None:
        self.node = node
        #: Per-round bounds of backfills (None: none); the window is the chain config's ``freshness_days``.
        self.backfill = backfill
        self.db_path = Path(db_path)
        self.spool = spool or Spool(node.state_dir / "spool")
        self.export_options = export_options
        self.metrics = metrics or StorageMetrics()

    # ------------------------------------------------------------------ guide-style flags

    def uses(self, backend: str) -> bool:
        """Whether the config selects ``backend`` for this miner (enabled, within rollout): it is owed this miner's
        data even when its plugin is not available here (the round then fails for it)."""
        return any(s.backend == backend and s.selected for s in self.node.selections())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("use_"):
            return self.uses(name.removeprefix("use_"))
        raise AttributeError(name)

    # ------------------------------------------------------------------ the round

    def upload_data(self, progress: Callable[[RoundProgress | UploadOutcome], None] | None = None) -> MinerRound:
        """Run one upload round; never raises for a backend failure (see the result), only for bad input."""
        if not self.db_path.is_file():
            from storage_core.errors import StorageCoreError

            raise StorageCoreError(f"miner database {self.db_path} does not exist")
        dispatcher = self.node.dispatcher()  # re-reads the chain's config: every round follows the owner
        self.node.log_selection()
        selected = dispatcher.upload_backends(self.node.hotkey)
        unavailable = {b: unavailable_reason(dispatcher.registry, b) for b in selected
                       if not dispatcher.registry.available(b)}
        for name, why in unavailable.items():
            log.error("backend %s is selected for this hotkey but its plugin is not available (%s): its data stays "
                      "owed until the plugin works", name, why)
        tallies: dict[str, BackendTally] = {}
        last: dict[str, dict[str, Any]] = {}

        # Backfill batches never fall back: the next backend in the order holds those rows already, and a
        # second copy of a row in other chunks would make validators reject it as a duplicate.
        no_fallback = Dispatcher(dispatcher.registry, attrs.evolve(dispatcher.config, fallback_order=()),
                                 dispatcher.context_for, dispatcher.timeout_s)

        def publish(batch: UploadBatch, backends: Sequence[str], via: Dispatcher = dispatcher
                    ) -> tuple[UploadOutcome, ...]:
            outcomes = via.upload(batch, backends)
            self.metrics.record_uploads(outcomes)
            for outcome in outcomes:
                tally = tallies.get(outcome.backend, BackendTally(outcome.backend))
                tallies[outcome.backend] = attrs.evolve(
                    tally,
                    batches=tally.batches + 1,
                    rows=tally.rows + (batch.total_rows if outcome.ok else 0),
                    elapsed_s=tally.elapsed_s + outcome.elapsed_s,
                    fallback_for=tuple(sorted({*tally.fallback_for, *([outcome.fallback_for] if outcome.fallback_for
                                                                       else [])})),
                )
                last[outcome.backend] = {
                    "at": time.time(), "status": outcome.status, "error": outcome.error, "files": len(batch.files),
                    "bytes": batch.total_bytes, "rows": batch.total_rows, "fallback_for": outcome.fallback_for,
                }
                if progress is not None:
                    progress(outcome)
            return outcomes

        def on_progress(event: RoundProgress) -> None:
            if progress is not None:
                progress(event)

        book = ManifestBook(self.spool.directory / "manifests", self.node.hotkey, self.node.config.freshness_days)
        result = run_upload_round(
            self.db_path, self.spool, selected, publish, miner_hotkey=self.node.hotkey,
            options=self.export_options, progress=on_progress, on_stored=book.add,
            publish_backfill=lambda batch, backends: publish(batch, backends, no_fallback),
            backfill=None if self.backfill is None else attrs.evolve(
                self.backfill, freshness_days=self.node.config.freshness_days),
        )
        manifests = self._publish_manifests(dispatcher, book, sorted({*selected, *tallies}))
        self._save_last(last)
        for backend in result.backends:
            log.info("round %s: %s %s, %d files, %d bytes, %d still owed", result.round_id, backend.backend,
                     backend.status, backend.files, backend.bytes, backend.still_owed_files)
        return MinerRound(result, selected, tuple(tallies[name] for name in sorted(tallies)), unavailable, manifests)

    def _publish_manifests(self, dispatcher: Dispatcher, book: ManifestBook, backends: Sequence[str]) -> dict[str, str]:
        """Store the next signed manifest on each backend that took chunks not yet in its last one."""
        done: dict[str, str] = {}
        for backend in backends:
            if not book.owes_manifest(backend):
                continue
            if not dispatcher.registry.implements(backend, "storage_publish_manifest"):
                done[backend] = "not stored: the backend keeps no manifests"
                continue
            try:
                built = book.build(backend, self.node.signer)
            except Exception as error:  # never lose the round over its manifest
                log.exception("manifest for %s could not be built", backend)
                done[backend] = f"failed: {error}"
                continue
            outcome = dispatcher.publish_manifest(backend, self.node.hotkey, built.key, built.data)
            if outcome.ok:
                book.published(built)
                done[backend] = f"round {built.seq} stored ({built.chunks} chunks)"
            else:
                log.warning("manifest %d for %s not stored (%s); it is written again next round", built.seq, backend,
                            outcome.error)
                done[backend] = f"failed: {outcome.error}"
        return done

    def _save_last(self, last: dict[str, dict[str, Any]]) -> None:
        if not last:
            return
        previous = load_last_uploads(self.node.state_dir)
        previous.update(last)
        write_json_atomic(self.node.state_dir / LAST_UPLOAD_FILE, previous, indent=2, sort_keys=True)

    def close(self) -> None:
        self.spool.close()


def load_last_uploads(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The last upload per backend recorded by this node (empty when it never uploaded)."""
    try:
        return json.loads((Path(state_dir) / LAST_UPLOAD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
