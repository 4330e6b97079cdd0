"""``storage-core status``: config and its sources, this hotkey's backends, plugins, spool, backfills, last uploads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from storage_core.cli.common import EXIT_FAILED, build_node, has_config, node_options
from storage_core.cli.output import flatten, human_bytes, print_json, print_table
from storage_core.cli.plugins_cmd import describe


def spool_backlog(state_dir: Path, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Per backend: chunks still owed, their bytes, and the age of the oldest (chunk files are written at export)."""
    from storage_core.export.spool import Spool

    if not (state_dir / "spool" / "ledger.sqlite").exists():
        return {}
    now = time.time() if now is None else now
    spool = Spool(state_dir / "spool")
    try:
        backlog: dict[str, dict[str, Any]] = {}
        for sha256, backends in spool.ledger.pending().items():
            staged = spool.ledger.staged(sha256)
            try:
                age = now - staged.path.stat().st_mtime
            except FileNotFoundError:
                age = 0.0
            for backend in backends:
                entry = backlog.setdefault(backend, {"chunks": 0, "bytes": 0, "oldest_age_s": 0.0})
                entry["chunks"] += 1
                entry["bytes"] += staged.size_bytes
                entry["oldest_age_s"] = max(entry["oldest_age_s"], age)
        return backlog
    finally:
        spool.close()


def backfill_progress(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Per backend that joined after this miner's first round: its backfill's state and rows done / in the window."""
    from storage_core.export.ledger import Ledger

    path = state_dir / "spool" / "ledger.sqlite"
    if not path.exists():
        return {}
    ledger = Ledger(path, state_dir / "spool" / "chunks")
    try:
        return {record.backend: record.to_dict() for record in ledger.backfills()}
    finally:
        ledger.close()


def _backfill_row(name: str, entry: dict[str, Any]) -> list[Any]:
    done, total = entry["rows_done"], entry["rows_total"]
    share = f" ({min(100, 100 * done // total)}%)" if total else ""
    state = "complete" if entry["state"] == "complete" else f"running{share}"
    return [name, state, f"{done:,} / {total:,}", human_bytes(entry["bytes_done"]), entry["window_start"][:16],
            (entry["cursor"] or "")[:13]]


@click.command("status")
@node_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
                   wallet_name: str, wallet_hotkey: str, wallet_path: str | None, state_dir: Path | None,
                   as_json: bool) -> None:
    """Show the effective config, this hotkey's backends and rollout positions, plugins, spool, backfills and last
    uploads.

    Exits 1 when the subnet has no storage config (nothing on chain or in the environment) or a backend selected
    for this hotkey has no working plugin here (its data stays owed).
    """
    from storage_core.miner import load_last_uploads

    node = build_node(netuid, network, chain_endpoint, mirror, wallet_name, wallet_hotkey, wallet_path, state_dir,
                      require_config=False)
    resolved = node.resolved
    secret = {f"backends.{r.name}.options.{o.name}" for r in node.registry.load_all() if r.descriptor
              for o in r.descriptor.options if o.secret}
    fields = {path: ("***" if path in secret else value, resolved.source_of(path))
              for path, value in flatten(resolved.config.to_dict()).items()}
    selections = node.selections()
    plugins = describe(node.registry.records(), resolved.config)
    backlog = spool_backlog(node.state_dir)
    backfill = backfill_progress(node.state_dir)
    last = load_last_uploads(node.state_dir)
    problems = [] if has_config(resolved) else [
        f"subnet {node.netuid} has no storage config: nothing on chain and nothing in the environment "
        "(the values shown are the built-in defaults)"]
    problems += [f"{s.backend} is selected for this hotkey but cannot be uploaded to: {s.reason}"
                 for s in selections if s.selected and not s.available]
    if as_json:
        print_json({
            "netuid": node.netuid, "hotkey": node.hotkey,
            "config": {path: {"value": value, "source": source} for path, (value, source) in fields.items()},
            "selection": [{"backend": s.backend, "selected": s.selected, "available": s.available,
                           "position": s.position, "rollout_percent": s.rollout_percent, "reason": s.reason}
                          for s in selections],
            "plugins": plugins, "spool": backlog, "backfill": backfill, "last_upload": last, "problems": problems,
        })
        if problems:
            raise SystemExit(EXIT_FAILED)
        return
    print_table(f"config of subnet {node.netuid}", ["field", "value", "source"],
                [[path, value, source] for path, (value, source) in sorted(fields.items())])
    print_table(f"backends for {node.hotkey}", ["backend", "selected", "position", "rollout", "why"],
                [[s.backend, ("yes" if s.available else "yes, plugin unavailable") if s.selected else "no", s.position,
                  f"{s.rollout_percent}%", s.reason]
                 for s in selections])
    print_table("plugins", ["id", "package", "version", "status"],
                [[p["id"], p["package"], p["version"], p["status"]] for p in plugins])
    print_table("spool", ["backend", "chunks waiting", "bytes", "oldest"],
                [[name, entry["chunks"], human_bytes(entry["bytes"]), f"{entry['oldest_age_s']:.0f}s"]
                 for name, entry in sorted(backlog.items())] or [["(empty)", 0, "0 B", "-"]])
    print_table("backfill (backends that joined later get the rows of the freshness window)",
                ["backend", "state", "rows done / in window", "bytes", "window from", "at hour"],
                [_backfill_row(name, entry) for name, entry in sorted(backfill.items())]
                or [["(none)", "", "", "", "", ""]])
    print_table("last upload", ["backend", "when", "status", "files", "bytes", "error"],
                [[name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"])), entry["status"],
                  entry["files"], human_bytes(entry["bytes"]), entry.get("error") or ""]
                 for name, entry in sorted(last.items())] or [["(never)", "", "", "", "", ""]])
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise SystemExit(EXIT_FAILED)
