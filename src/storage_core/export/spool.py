"""The spool: a directory of content-addressed chunks waiting for backends, with its ledger.

Layout::

    SPOOL/chunks/{sha256}.parquet   chunks written by the export
    SPOOL/ledger.sqlite             who must hold which chunk, acknowledgements, the watermark, backfills
    SPOOL/.lock                     held (flock) while a round runs, so two rounds never interleave

A chunk is deleted only when every backend that must hold it (or the fallback that stood in for it)
has acknowledged it. ``max_bytes`` bounds the disk the chunks use: when the spool is full the export
pauses (nothing is deleted to make room); it resumes once backends have caught up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from storage_core.errors import StorageCoreError
from storage_core.export.backfill import BackfillPass
from storage_core.export.exporter import ExportResult
from storage_core.export.ledger import BackfillRecord, Ledger
from storage_core.export.watermark import Watermark
from storage_core.values import StagedFile

log = logging.getLogger(__name__)


class SpoolBusyError(StorageCoreError):
    """Another round holds the spool's lock."""


class Spool:
    """Chunks on disk plus the ledger that says when each may go."""

    def __init__(self, directory: Path, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.chunk_dir = self.directory / "chunks"
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.ledger = Ledger(self.directory / "ledger.sqlite", self.chunk_dir)

    @classmethod
    def for_state_file(cls, state_file: Path | str, *, max_bytes: int | None = None) -> Spool:
        """The spool that replaces the integration guide's ``state_file``: ``{state_file}.spool/`` beside it."""
        state_file = Path(state_file)
        return cls(state_file.with_name(state_file.name + ".spool"), max_bytes=max_bytes)

    def close(self) -> None:
        self.ledger.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the spool exclusively (one round at a time); raises SpoolBusyError when taken."""
        with open(self.directory / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpoolBusyError(f"spool {self.directory} is in use by another round") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- state -----------------------------------------------------------------------------
    def watermark(self) -> Watermark | None:
        return self.ledger.watermark()

    def used_bytes(self) -> int:
        return self.ledger.spooled_bytes()

    def room_bytes(self) -> int | None:
        """Bytes the export may still add, or None when the spool is unbounded."""
        return None if self.max_bytes is None else self.max_bytes - self.used_bytes()

    # -- changes ---------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Undo what a crash left behind; return what was removed.

        Chunk files that no ledger entry names were written by an export whose commit never happened:
        their rows are still after the watermark, so they are exported again (to the same names).
        """
        removed = []
        known = self.ledger.known_files()
        for path in self.chunk_dir.iterdir():
            if path.is_dir() and path.name.startswith(".partition-"):  # spill files of the earlier partitioner
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
            elif path.is_file() and path.name not in known:
                path.unlink()
                removed.append(path.name)
        if removed:
            log.warning("spool %s: removed %d leftovers of an interrupted export", self.directory, len(removed))
        return removed

    def commit_export(self, result: ExportResult, backends: Iterable[str], round_id: str = "") -> None:
        """Record an export's chunks for ``backends``, its rows' digests and the watermark, in one transaction."""
        try:
            self.ledger.record_export(
                result.files, backends, result.watermark, result.skipped, round_id,
                bucket_digests=result.bucket_digests.frames(), bucket_keep=result.bucket_keep,
            )
        finally:
            result.bucket_digests.close()

    def commit_backfill(self, passed: BackfillPass, round_id: str = "") -> BackfillRecord:
        """Record a backfill pass's chunks (owed to its backend alone) and move its cursor, in one transaction."""
        return self.ledger.record_backfill(passed.backend, passed.files, passed.remaining, rows=passed.taken,
                                           dropped=passed.dropped, cursor=passed.cursor, round_id=round_id)

    def pending_groups(
        self, backends: Iterable[str], backfill: bool | None = None
    ) -> dict[frozenset[str], list[StagedFile]]:
        """Chunks still owed to any of ``backends``, grouped by the exact set of backends that owe them.

        A backend that was down has older chunks the others already hold, so each group becomes
        its own batch and nothing is sent twice to a backend that has it. ``backfill`` picks the
        copies owed by a backfill (True), the others (False) or all (None).
        """
        wanted = set(backends)
        groups: dict[frozenset[str], list[StagedFile]] = {}
        for sha, owed in self.ledger.pending(backfill).items():
            need = frozenset(owed & wanted)
            if not need:
                continue
            staged = self.ledger.staged(sha)
            if not staged.path.is_file():
                log.error("spool %s: chunk %s is in the ledger but its file is missing", self.directory, sha)
                continue
            groups.setdefault(need, []).append(staged)
        return groups

    def acknowledge(self, sha256s: Iterable[str], backend: str, via: str | None = None) -> int:
        return self.ledger.acknowledge(sha256s, backend, via)

    def retire(self, selected: Iterable[str]) -> dict[str, int]:
        """Stop owing chunks to backends that are no longer selected for this miner."""
        retired = self.ledger.retire(selected)
        for backend, count in retired.items():
            log.warning("spool %s: backend %r is no longer selected; %d chunk copies no longer owed to it",
                        self.directory, backend, count)
        return retired

    def prune(self) -> tuple[int, int]:
        """Delete every fully acknowledged chunk; return (files, bytes) removed."""
        files = size = 0
        for staged in self.ledger.completed():
            with contextlib.suppress(FileNotFoundError):
                staged.path.unlink()
            self.ledger.forget(staged.sha256)
            files += 1
            size += staged.size_bytes
        return files, size
