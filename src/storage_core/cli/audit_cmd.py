"""``storage-core audit``: every miner's manifests and listings, compared across the subnet (validator side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from storage_core.cli.common import build_node, node_options, open_subtensor
from storage_core.cli.output import human_bytes, print_json, print_table

#: Exit codes: nothing found / copies, or manifests missing, refused or restarted.
EXIT_CLEAN, EXIT_FINDINGS = 0, 1


@click.command("audit")
@node_options
@click.option("--backend", "backends", multiple=True, help="Audit only this backend (repeatable).")
@click.option("--copies-out", type=click.Path(path_type=Path), default=None,
              help="Write the copied chunks found, for `storage-core validate --copies FILE`.")
@click.option("--metrics-file", type=click.Path(path_type=Path), default=None,
              help="Write the audit's figures in Prometheus text format (for a node exporter's textfile collector).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_command(netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
                  wallet_name: str, wallet_hotkey: str, wallet_path: str | None, state_dir: Path | None,
                  backends: tuple[str, ...], copies_out: Path | None, metrics_file: Path | None,
                  as_json: bool) -> None:
    """Read every miner's listing and latest manifest (never a chunk body): copies across miners, refused
    manifests and broken chains, duplicate URIs within a miner, per-miner totals.

    Exit code 0: nothing found; 1: copies, or a miner's manifest missing, refused or restarted.
    """
    from storage_core.audit import run_audit
    from storage_core.audit.copies import copies_document
    from storage_core.audit.metrics import audit_metrics_text
    from storage_core.chain.membership import read_membership

    node = build_node(netuid, network, chain_endpoint, mirror, wallet_name, wallet_hotkey, wallet_path, state_dir)
    dispatcher = node.dispatcher()
    enabled = [name for name, entry in dispatcher.config.backends.items() if entry.enabled]
    unknown = [name for name in backends if name not in enabled]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} not enabled in the config (enabled: {', '.join(enabled)})",
                                 param_hint="--backend")
    chosen = [name for name in (backends or enabled) if dispatcher.registry.capable(name, "validate")]
    view = read_membership(open_subtensor(network, chain_endpoint), node.netuid)
    miners = sorted(view.registered - view.validators)

    def open_store(backend: str, hotkey: str) -> Any:
        return dispatcher.registry.call(backend, "storage_reader", context=node.context_for(backend),
                                        miner_hotkey=hotkey)

    report = run_audit(open_store, chosen, miners)
    findings = [m for m in report.miners if m.problem or m.copied_chunks]
    if copies_out is not None:
        copies_out.write_text(json.dumps(copies_document(report.copies), indent=2, sort_keys=True))
    if metrics_file is not None:
        metrics_file.write_text(audit_metrics_text(report))
    if as_json:
        print_json({"netuid": node.netuid, "block": view.block, "backends": chosen, **report.as_json()})
    else:
        print_table(f"audit of subnet {node.netuid}: {len(miners)} miners on {', '.join(chosen) or 'no backend'}",
                    ["backend", "miner", "chunks", "rows", "size", "dups", "round", "copied"],
                    [[m.backend, m.hotkey[:10] + "…", m.chunks, m.rows, human_bytes(m.bytes), m.duplicate_uris,
                      "-" if m.manifest_round is None else m.manifest_round, m.copied_chunks]
                     for m in report.miners])
        problems = [m for m in report.miners if m.problem]
        if problems:
            print_table("manifest problems", ["backend", "miner", "problem"],
                        [[m.backend, m.hotkey[:10] + "…", _short(m.problem or "", 52)] for m in problems])
        if report.copies:
            print_table(f"copies ({len(report.copies)} chunks)", ["backend", "copier", "of", "kind", "share"],
                        [[c.backend, c.copier[:10] + "…", c.original[:10] + "…", c.kind, f"{c.share:.0%}"]
                         for c in report.copies])
        print(f"read {human_bytes(report.bytes_read)} in {report.requests} requests, {report.elapsed_s:.1f} s")
    raise SystemExit(EXIT_FINDINGS if findings else EXIT_CLEAN)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
