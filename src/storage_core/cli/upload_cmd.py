"""``storage-core upload``: the miner's round — export new rows once, dual-write, summarise."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.text import Text

from storage_core.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, InputError, build_node, node_options, parse_duration
from storage_core.cli.output import human_bytes, print_json, print_table
from storage_core.errors import StorageCoreError
from storage_core.export.round import RoundProgress
from storage_core.values import UploadOutcome

log = logging.getLogger(__name__)


class CountColumn(ProgressColumn):
    """``done/total rows`` for a task whose ``unit`` field is "rows", bytes (KiB, MiB...) otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "rows":
            return Text(f"{int(task.completed):,}/{int(task.total or 0):,} rows", style="progress.download")
        return self._bytes.render(task)


def quiet_hub_progress() -> None:
    """huggingface_hub draws a bar per file it sends; the round's own bars say the same, once."""
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # the HuggingFace plugin is optional
        return
    disable_progress_bars()


class RoundProgressView:
    """Rich progress bars: one for the export (rows), one per backend (bytes of the batches sent to it)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.export_task: Any = None
        self.backend_tasks: dict[str, Any] = {}
        self._pending: dict[str, int] = {}  # bytes sent to a backend and not yet answered

    def __call__(self, event: RoundProgress | UploadOutcome) -> None:
        if isinstance(event, UploadOutcome):
            task = self.backend_tasks.get(event.fallback_for or event.backend)
            if task is not None:
                self.progress.update(task, advance=self._pending.pop(event.fallback_for or event.backend, 0))
            return
        if event.phase == "export":
            if self.export_task is None:
                self.export_task = self.progress.add_task("export", total=max(event.total, 1), unit="rows")
            self.progress.update(self.export_task, completed=event.completed, total=max(event.total, 1))
        elif event.phase == "upload":
            for backend in event.backends:
                if backend not in self.backend_tasks:
                    self.backend_tasks[backend] = self.progress.add_task(f"upload {backend}", total=0, unit="bytes")
                task = self.backend_tasks[backend]
                self.progress.update(task, total=self.progress.tasks[task].total + event.total)
                self._pending[backend] = self._pending.get(backend, 0) + event.total



def summary_rows(round_: Any) -> list[list[Any]]:
    rows = []
    for backend in round_.result.backends:
        tally = round_.tally(backend.backend)
        outcome = backend.status if not backend.error else f"{backend.status}: {backend.error}"
        if backend.backend in round_.unavailable:
            outcome = f"not uploaded, still owed: plugin not available ({round_.unavailable[backend.backend]})"
        if backend.stood_in_for:
            outcome += f" (fallback for {', '.join(backend.stood_in_for)})"
        rows.append([backend.backend, backend.files, tally.rows, human_bytes(backend.bytes),
                     f"{tally.elapsed_s:.1f}s", outcome])
    return rows


def round_json(round_: Any) -> dict[str, Any]:
    data = round_.result.as_dict()
    data["selected"] = list(round_.selected)
    data["unavailable"] = dict(round_.unavailable)
    data["ok"] = round_.ok
    data["manifests"] = dict(round_.manifests)  # backend -> the round manifest stored (or why not)
    data["tallies"] = [{"backend": t.backend, "batches": t.batches, "rows": t.rows, "elapsed_s": round(t.elapsed_s, 3),
                        "fallback_for": list(t.fallback_for)} for t in round_.tallies]
    return data


@click.command("upload")
@click.option("--db", "db_path", type=click.Path(path_type=Path), required=True, help="The miner's SQLite database.")
@node_options
@click.option("--once", "mode", flag_value="once", default=True, help="Run one round and exit (default).")
@click.option("--every", "every", default=None, help="Run a round every interval, e.g. 2h, until interrupted.")
@click.option("--spool-max-bytes", type=int, default=None, help="Bound the spool's disk use (export pauses when full).")
@click.option("--backfill-rows", type=click.IntRange(min=0), default=None,
              help="Most older rows sent per round to each backend that joined later (default 250000; 0 pauses "
                   "backfills). New rows always go first.")
@click.option("--backfill-bytes", type=click.IntRange(min=0), default=None,
              help="Most backfill chunk bytes per round per backend (default 256 MiB).")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics (uploads, bytes, failures, latency per backend) on 127.0.0.1:PORT.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON document per round).")
def upload_command(db_path: Path, netuid: int | None, network: str | None, chain_endpoint: str | None,
                   mirror: Path | None, wallet_name: str, wallet_hotkey: str, wallet_path: str | None,
                   state_dir: Path | None, mode: str, every: str | None, spool_max_bytes: int | None,
                   backfill_rows: int | None, backfill_bytes: int | None, metrics_port: int | None,
                   as_json: bool) -> None:
    """Publish this miner's new rows to every backend the config selects for its hotkey."""
    from storage_core.export.backfill import BackfillOptions
    from storage_core.export.spool import Spool
    from storage_core.miner import MinerStorage

    if not db_path.is_file():
        raise InputError(f"miner database {db_path} does not exist")
    interval = parse_duration(every) if every else None
    quiet_hub_progress()
    node = build_node(netuid, network, chain_endpoint, mirror, wallet_name, wallet_hotkey, wallet_path, state_dir)
    bounds = {"max_rows": backfill_rows, "max_bytes": backfill_bytes}
    backfill = BackfillOptions(**{name: value for name, value in bounds.items() if value is not None})
    storage = MinerStorage(node, db_path, Spool(node.state_dir / "spool", max_bytes=spool_max_bytes),
                           backfill=backfill)
    console = Console(stderr=True)
    server = storage.metrics.serve(metrics_port) if metrics_port is not None else None
    failed = interrupted = False
    try:
        while True:
            changes = node.follow()  # every round uses the config the chain holds now
            if not as_json:
                for change in changes:
                    console.print(f"[yellow]config changed:[/] {escape(change)}", highlight=False)
                for selection in node.selections():
                    mark = "[green]on[/]" if selection.selected else "[dim]off[/]"
                    console.print(f"{selection.backend}: {mark} — {selection.reason}")
            with Progress(TextColumn("{task.description}"), BarColumn(), CountColumn(), TimeElapsedColumn(),
                          console=console, transient=True, disable=as_json) as progress:
                view = RoundProgressView(progress)
                try:
                    round_ = storage.upload_data(progress=view)
                except StorageCoreError as error:  # a bad database or spool: exit 2, as `export` does
                    raise InputError(str(error)) from None
            failed = not round_.ok
            if as_json:
                print_json(round_json(round_))
            else:
                result = round_.result
                print_table(f"round {result.round_id}: {result.rows_exported} rows exported in "
                            f"{result.chunks_exported} chunks ({human_bytes(result.bytes_exported)}), "
                            f"{result.skipped_rows} skipped, {result.elapsed_s:.1f}s",
                            ["backend", "files", "rows", "bytes", "time", "outcome"], summary_rows(round_))
                for entry in result.backfill:
                    if entry.rows or entry.state != "complete":
                        console.print(f"backfill {entry.backend}: {entry.rows:,} rows this round, "
                                      f"{entry.rows_done:,} / ~{entry.rows_total:,} done ({entry.state})")
                if result.backpressure:
                    console.print("[yellow]spool full: some rows wait for the next round[/]")
                for backend, why in round_.unavailable.items():
                    console.print(f"[red]{backend} is selected for this hotkey but its plugin is not available "
                                  f"({escape(why)}); its data stays owed[/]", highlight=False)
            if interval is None:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        interrupted = True
        console.print("interrupted; the spool keeps what was not acknowledged")
    finally:
        storage.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    if failed:
        raise SystemExit(EXIT_FAILED)
