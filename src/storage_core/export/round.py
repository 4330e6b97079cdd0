"""One miner upload round: export the new rows once, publish them to every selected backend, prune.

The new rows are those after the watermark plus those stored late behind it (``late.py``), each
exported once and committed with its chunks. Only once they are published does a backend newly selected
for this miner get a bounded share of the older rows it lacks (``backfill.py``), so new rows never wait.

The round never converts the same rows twice, whatever the number of backends: the export writes
chunks into the spool, and each backend gets the chunks it still owes (a backend that was down last
round gets its older chunks in a batch of their own). The publisher is the dispatcher's
``upload(batch, backends)``: it isolates backends, applies time-outs and fallback, and returns one
``UploadOutcome`` per backend, so a failure here is recorded, never raised.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from storage_core.export.backfill import BackfillOptions, export_backfill_pass, start_backfills
from storage_core.export.exporter import ExportOptions, export
from storage_core.export.late import export_late_rows
from storage_core.export.spool import Spool
from storage_core.export.watermark import Watermark
from storage_core.values import StagedFile, UploadBatch, UploadOutcome

log = logging.getLogger(__name__)

Publisher = Callable[[UploadBatch, tuple[str, ...]], "Mapping[str, UploadOutcome] | Sequence[UploadOutcome]"]

#: Chunk bytes per row assumed before the ledger has measured any (snappy parquet of ~1 KB posts).
DEFAULT_BYTES_PER_ROW = 300


@attrs.frozen
class RoundProgress:
    """A progress event: ``phase`` is "export" (rows) or "upload" (bytes of one batch to some backends)."""

    phase: str
    completed: int
    total: int
    backends: tuple[str, ...] = ()


@attrs.frozen
class BackendRoundResult:
    """What one backend did this round."""

    backend: str
    status: str  # ok, failed, timeout, idle (nothing to send)
    files: int = 0
    bytes: int = 0
    still_owed_files: int = 0  # chunks this backend has not acknowledged after the round
    error: str | None = None
    stood_in_for: tuple[str, ...] = ()  # backends this one replaced as a fallback (they stay owed)

    def as_row(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class BackfillRoundResult:
    """One backend's backfill after the round: what this round sent, and how far it is overall."""

    backend: str
    state: str  # running or complete
    rows: int  # taken off the backfill this round
    files: int  # backfill chunks exported this round
    bytes: int
    rows_done: int
    rows_total: int


@attrs.frozen
class RoundResult:
    """Everything a CLI needs to print a round as a table (``as_dict`` for ``--json``)."""

    round_id: str
    rows_exported: int
    chunks_exported: int
    bytes_exported: int
    skipped_rows: int
    skipped_uris: tuple[str, ...]
    watermark: Watermark | None
    backends: tuple[BackendRoundResult, ...]
    exports: int  # export passes (more than one when the spool bound paused the export)
    backpressure: bool  # True when rows are still waiting because the spool stayed full
    pruned_files: int
    spool_bytes: int
    elapsed_s: float
    backfill: tuple[BackfillRoundResult, ...] = ()

    @property
    def ok(self) -> bool:
        return all(b.status in ("ok", "idle") for b in self.backends)

    def backend(self, name: str) -> BackendRoundResult:
        for result in self.backends:
            if result.backend == name:
                return result
        raise KeyError(name)

    def as_dict(self) -> dict[str, object]:
        data = attrs.asdict(self, recurse=True, filter=lambda field, _v: field.name != "watermark")
        data["watermark"] = self.watermark.to_dict() if self.watermark else None
        return data


class _Tally:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.status = "idle"
        self.files = self.bytes = 0
        self.error: str | None = None
        self.stood_in_for: set[str] = set()

    def result(self, owed: int) -> BackendRoundResult:
        return BackendRoundResult(
            self.backend, self.status, self.files, self.bytes, owed, self.error, tuple(sorted(self.stood_in_for))
        )


def _sized(options: ExportOptions, spool: Spool) -> ExportOptions:
    """The options with ``max_rows`` cut to the room left in a bounded spool (from measured bytes per row)."""
    room = spool.room_bytes()
    if room is None:
        return options
    per_row = spool.ledger.bytes_per_row() or DEFAULT_BYTES_PER_ROW
    budget = max(1, int(room / per_row))
    return attrs.evolve(options, max_rows=min(options.max_rows or budget, budget))


def _outcomes(answer: Mapping[str, UploadOutcome] | Sequence[UploadOutcome]) -> list[UploadOutcome]:
    values = answer.values() if isinstance(answer, Mapping) else answer
    return [outcome for outcome in values if isinstance(outcome, UploadOutcome)]


def _acknowledged(outcome: UploadOutcome, files: Sequence[StagedFile]) -> list[StagedFile]:
    """The files an ok outcome really covers: all of them, or those its receipt lists by sha256."""
    if outcome.receipt is None:
        return list(files)
    stored = {obj.sha256 for obj in outcome.receipt.objects}
    covered = [staged for staged in files if staged.sha256 in stored]
    if len(covered) < len(files):
        log.warning("%s: receipt lists %d of %d chunks; the rest stay owed", outcome.backend, len(covered), len(files))
    return covered


def run_upload_round(
    db_path: Path | str,
    spool: Spool,
    backends: Iterable[str],
    publish: Publisher,
    *,
    miner_hotkey: str,
    options: ExportOptions = ExportOptions(),
    round_id: str | None = None,
    progress: Callable[[RoundProgress], None] | None = None,
    on_stored: Callable[[str, list[StagedFile]], None] | None = None,
    backfill: BackfillOptions | None = BackfillOptions(),
    publish_backfill: Publisher | None = None,
) -> RoundResult:
    """Run one round for one miner; see the module docstring. Raises only for a bad database or spool.

    ``backfill`` None turns backfills off (neither started nor continued). ``publish_backfill`` sends
    backfill batches (default ``publish``); it must not fall back to another backend, which would get a
    second copy of rows it holds already (``MinerStorage`` gives it a dispatcher without a fallback order).
    """
    started = time.monotonic()
    round_id = round_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    selected = tuple(dict.fromkeys(backends))
    tallies = {name: _Tally(name) for name in selected}
    down: set[str] = set()
    rows = chunks = size = skipped = exports = pruned = 0
    skipped_uris: list[str] = []

    with spool.locked():
        spool.recover()
        if selected:  # an empty selection (no config yet?) must not release what is owed
            spool.retire(selected)
        if backfill is not None:  # before this round's exports: their rows reach a new backend anyway
            start_backfills(spool.ledger, selected, backfill.freshness_days)
        exhausted = not selected  # with no backend selected there is nobody to export for
        late_done = exhausted  # rows stored late behind the watermark go first (see late.py)
        while True:
            room = spool.room_bytes()
            if not exhausted and (room is None or room > 0):

                def on_rows(done: int, total: int) -> None:
                    if progress is not None:
                        progress(RoundProgress("export", done, total))

                results = []
                if not late_done:
                    late = export_late_rows(Path(db_path), spool.chunk_dir, spool.ledger, spool.watermark(),
                                            _sized(options, spool))
                    late_done = late.complete or not late.rows_read  # no progress: never loop on it
                    if late.rows_read or late.bucket_keep:
                        spool.commit_export(late, selected, round_id)
                        results.append(late)
                room = spool.room_bytes()
                if late_done and (room is None or room > 0):
                    result = export(Path(db_path), spool.chunk_dir, spool.watermark(), _sized(options, spool), on_rows)
                    spool.commit_export(result, selected, round_id)
                    results.append(result)
                    # No progress (nothing new up to the bound) must not loop forever.
                    exhausted = result.complete or result.watermark == result.since
                for result in results:
                    if result.method != "late" or result.rows_read:  # pruning a record is no export pass
                        exports += 1
                    rows += result.rows
                    chunks += len(result.files)
                    size += result.total_bytes
                    skipped += result.skipped_count
                    skipped_uris.extend(row.uri for row in result.skipped)

            new_groups = spool.pending_groups(set(selected) - down, backfill=False)
            for need, files in sorted(new_groups.items(), key=lambda i: sorted(i[0])):
                _publish(spool, publish, miner_hotkey, round_id, need, files, tallies, down, progress, on_stored)
            freed_files, _freed_bytes = spool.prune()
            pruned += freed_files

            if exhausted:
                break
            room = spool.room_bytes()
            if room is not None and room <= 0:
                log.warning("round %s: spool %s is full (%d bytes); export paused until backends catch up",
                            round_id, spool.directory, spool.used_bytes())
                break
        backpressure = not exhausted  # rows are waiting because the spool stayed full
        backfilled: tuple[BackfillRoundResult, ...] = ()
        if backfill is not None:
            backfilled, freed = _run_backfills(Path(db_path), spool, selected, publish_backfill or publish,
                                               miner_hotkey, round_id, tallies, down, progress, on_stored, options,
                                               backfill)
            pruned += freed

        owed = {name: 0 for name in selected}
        for backends_owing in spool.ledger.pending().values():
            for name in backends_owing:
                if name in owed:
                    owed[name] += 1
        spool_bytes = spool.used_bytes()
        watermark = spool.watermark()

    return RoundResult(
        round_id=round_id,
        rows_exported=rows,
        chunks_exported=chunks,
        bytes_exported=size,
        skipped_rows=skipped,
        skipped_uris=tuple(skipped_uris),
        watermark=watermark,
        backends=tuple(tally.result(owed.get(name, 0)) for name, tally in tallies.items()),
        exports=exports,
        backpressure=backpressure,
        pruned_files=pruned,
        spool_bytes=spool_bytes,
        elapsed_s=time.monotonic() - started,
        backfill=backfilled,
    )


def _run_backfills(
    db_path: Path,
    spool: Spool,
    selected: tuple[str, ...],
    publish: Publisher,
    miner_hotkey: str,
    round_id: str,
    tallies: dict[str, _Tally],
    down: set[str],
    progress: Callable[[RoundProgress], None] | None,
    on_stored: Callable[[str, list[StagedFile]], None] | None,
    options: ExportOptions,
    backfill: BackfillOptions,
) -> tuple[tuple[BackfillRoundResult, ...], int]:
    """Send each selected backend with a running backfill its share for this round (see ``backfill.py``).

    Backfill chunks an earlier round left owed go first and count against the bound; a backend that
    failed this round gets nothing more, so its backfill never piles up in the spool. Each pass is
    pruned once sent, so the spool holds one pass at a time. Returns the results and the files pruned.
    """
    results = []
    pruned = 0
    records = {record.backend: record for record in spool.ledger.backfills()}
    for backend in selected:
        record = records.get(backend)
        if record is None:
            continue
        rows = files = size = 0
        rows_left, bytes_left = backfill.max_rows, backfill.max_bytes

        def send() -> int:
            nonlocal pruned
            groups = spool.pending_groups([backend], backfill=True)
            sent = 0
            for need, batch in sorted(groups.items(), key=lambda i: sorted(i[0])):
                _publish(spool, publish, miner_hotkey, round_id, need, batch, tallies, down, progress, on_stored)
                sent += sum(staged.size_bytes for staged in batch)
            pruned += spool.prune()[0]
            return sent

        if backend not in down:
            bytes_left -= send()
        while not record.complete and backend not in down and rows_left > 0 and bytes_left > 0:
            # bytes per row as this backfill measured them, else as the spool's chunks, else a guess
            per_row = (record.bytes_done / record.rows_done if record.bytes_done else None) \
                or spool.ledger.bytes_per_row() or DEFAULT_BYTES_PER_ROW
            room = spool.room_bytes()
            if room is not None and room <= 0:
                log.warning("round %s: spool full; the backfill of %s waits", round_id, backend)
                break
            by_bytes = max(1, int(min(bytes_left, room if room is not None else bytes_left) / per_row))
            if not record.bytes_done:  # a first, smaller pass measures the bytes per row for the next ones
                by_bytes = max(1, by_bytes // 4)
            limit = min(rows_left, by_bytes)
            passed = export_backfill_pass(db_path, spool.chunk_dir, spool.ledger, backend, limit,
                                          backfill.freshness_days, options)
            record = spool.commit_backfill(passed, round_id)
            rows, files, size = rows + passed.taken, files + len(passed.files), size + passed.total_bytes
            rows_left -= passed.taken
            send()
            bytes_left -= passed.total_bytes
            if not passed.taken and not passed.dropped and not passed.remaining:
                break  # no progress: never loop on it
        record = spool.ledger.backfill(backend) or record
        if rows or not record.complete:
            log.info("round %s: backfill of %s: %d rows this round, %d of ~%d done (%s)", round_id, backend, rows,
                     record.rows_done, record.rows_total, record.state)
        results.append(BackfillRoundResult(backend, record.state, rows, files, size, record.rows_done,
                                           record.rows_total))
    return tuple(results), pruned


def _publish(
    spool: Spool,
    publish: Publisher,
    miner_hotkey: str,
    round_id: str,
    need: frozenset[str],
    files: list[StagedFile],
    tallies: dict[str, _Tally],
    down: set[str],
    progress: Callable[[RoundProgress], None] | None,
    on_stored: Callable[[str, list[StagedFile]], None] | None = None,
) -> None:
    """Send one batch to the backends that all owe exactly these files, and record what they stored."""
    names = tuple(sorted(need))
    batch = UploadBatch(miner_hotkey=miner_hotkey, files=tuple(files), round_id=round_id)
    if progress is not None:
        progress(RoundProgress("upload", 0, batch.total_bytes, names))
    try:
        answer = publish(batch, names)
    except Exception as error:  # a publisher should not raise; if it does, every backend in it failed
        log.exception("round %s: publisher raised for %s", round_id, ", ".join(names))
        answer = [UploadOutcome(name, "failed", error=f"publisher raised: {error!r}") for name in names]
    reported: set[str] = set()
    for outcome in _outcomes(answer):
        target = outcome.fallback_for or outcome.backend
        if target not in need:
            continue
        reported.add(target)
        tally = tallies.setdefault(outcome.backend, _Tally(outcome.backend))
        if outcome.ok:
            covered = _acknowledged(outcome, files)
            if on_stored is not None and covered:  # while the files are still in the spool
                try:
                    on_stored(outcome.backend, covered)
                except Exception:  # a manifest problem must never cost the round its acknowledgements
                    log.exception("round %s: recording %d chunks stored on %s failed", round_id, len(covered),
                                  outcome.backend)
            tally.files += len(covered)
            tally.bytes += sum(staged.size_bytes for staged in covered)
            if tally.status == "idle":
                tally.status = "ok"
            if outcome.fallback_for:
                # The rows are safe on the fallback, but validators look for them on the primary (the
                # fallback may be at 0 % rollout): the primary stays owed and catches up next round.
                tally.stood_in_for.add(outcome.fallback_for)
                log.info("round %s: %s stood in for %s; %d chunks stay owed to %s", round_id, outcome.backend,
                         outcome.fallback_for, len(covered), outcome.fallback_for)
                continue
            spool.acknowledge([staged.sha256 for staged in covered], target, via=outcome.backend)
        else:
            tally.status = outcome.status
            tally.error = outcome.error
            down.add(outcome.backend)
            log.warning("round %s: %s %s: %s", round_id, outcome.backend, outcome.status, outcome.error)
    for name in need - reported:  # no outcome at all: treat as failed, the chunks stay owed
        tallies[name].status = "failed"
        tallies[name].error = "publisher returned no outcome"
        down.add(name)
    if progress is not None:
        progress(RoundProgress("upload", batch.total_bytes, batch.total_bytes, names))
