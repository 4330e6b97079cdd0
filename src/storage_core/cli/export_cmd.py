"""``storage-core export``: run the export alone, so a miner can inspect what a round would upload."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from storage_core.cli.common import InputError

from storage_core.chunks import COMPRESSION, COMPRESSIONS
from storage_core.errors import StorageCoreError
from storage_core.export.encoding import FieldEncoder
from storage_core.export.exporter import ExportOptions, ExportResult, export
from storage_core.export.watermark import Watermark


def _result_dict(result: ExportResult) -> dict[str, object]:
    return {
        "rows": result.rows,
        "rows_read": result.rows_read,
        "bytes": result.total_bytes,
        "method": result.method,
        "elapsed_s": round(result.elapsed_s, 3),
        "since": result.since.to_dict() if result.since else None,
        "watermark": result.watermark.to_dict() if result.watermark else None,
        "complete": result.complete,
        "skipped": {"count": result.skipped_count, "rows": [[s.uri, s.reason] for s in result.skipped]},
        "chunks": [
            {
                "file": staged.path.name,
                "source": staged.source,
                "date": staged.date,
                "rows": staged.rows,
                "bytes": staged.size_bytes,
                "sha256": staged.sha256,
                "min_datetime": staged.min_datetime.isoformat(),
                "max_datetime": staged.max_datetime.isoformat(),
            }
            for staged in result.files
        ],
    }


@click.command("export")
@click.option("--db", "db_path", required=True, type=click.Path(path_type=Path), help="The miner's SQLite database.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the parquet chunks (created if missing).")
@click.option("--since", default=None, metavar="DATETIME",
              help="Export rows at or after this ISO 8601 datetime (UTC if no zone), e.g. 2026-11-01T00:00:00Z.")
@click.option("--chunk-rows", default=ExportOptions().chunk_rows, show_default=True, type=click.IntRange(min=1),
              help="Most rows in one chunk file.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default=COMPRESSION, show_default=True,
              help="Parquet codec: snappy is cheaper on CPU, zstd makes ~30% smaller files.")
@click.option("--encode-url-key", envvar="STORAGE_CORE_ENCODE_URL_KEY", default=None, metavar="FERNET_KEY",
              help="Encrypt the url column with this Fernet key (off by default).")
@click.option("--encode-username-key", envvar="STORAGE_CORE_ENCODE_USERNAME_KEY", default=None, metavar="FERNET_KEY",
              help="Encrypt the username column with this Fernet key (off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_command(
    db_path: Path,
    out_dir: Path,
    since: str | None,
    chunk_rows: int,
    compression: str,
    encode_url_key: str | None,
    encode_username_key: str | None,
    as_json: bool,
) -> None:
    """Export the miner database's rows as parquet chunks and list them (rows, bytes, sha256).

    Nothing is uploaded and no watermark is stored: this shows what a round would publish.
    """
    try:
        watermark = Watermark.parse(since) if since else None
        encoder = None
        if encode_url_key or encode_username_key:
            encoder = FieldEncoder.from_keys(url=encode_url_key, username=encode_username_key)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    options = ExportOptions(chunk_rows=chunk_rows, encoder=encoder, compression=compression)
    if not db_path.is_file():
        raise InputError(f"miner database {db_path} does not exist")
    # rows, not bytes: the bar counts what the database holds; on stderr so stdout stays the result
    with Progress(TextColumn("export"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json) as bar:
        task = bar.add_task("export", total=None)

        def on_rows(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        try:
            result = export(db_path, out_dir, watermark, options, on_rows)
        except StorageCoreError as error:  # the same bad database exits 2 here and in `upload`
            raise InputError(str(error)) from None
    if as_json:
        click.echo(json.dumps(_result_dict(result), indent=2))
        return
    console = Console()
    if not result.files and not result.skipped_count:
        console.print(f"Nothing to export from {db_path}" + (f" after {watermark.text}" if watermark else "") + ".")
        return
    table = Table(title=f"Chunks written to {out_dir}")
    for column, justify in (("source", "left"), ("date", "left"), ("rows", "right"), ("bytes", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("sha256", no_wrap=True)  # the first 12 hex digits: the table fits 80 columns (--json: all)
    for staged in result.files:
        table.add_row(staged.source, staged.date, f"{staged.rows:,}", f"{staged.size_bytes:,}", staged.sha256[:12])
    console.print(table)
    console.print(
        f"{result.rows:,} rows in {len(result.files)} chunks, {result.total_bytes:,} bytes "
        f"({result.method}, {result.elapsed_s:.1f} s)"
    )
    if result.skipped_count:
        console.print(f"[yellow]{result.skipped_count} rows skipped: content does not decode[/yellow]")
        for row in result.skipped[:20]:
            console.print(f"  {row.uri}: {row.reason}", markup=False)
    if result.watermark:
        console.print(f"watermark: {result.watermark.text} ({len(result.watermark.uris)} rows at that instant)",
                      markup=False)
