"""``storage-core validate``: does a miner really hold the URIs it claims?"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click

from storage_core.cli.common import build_node, node_options
from storage_core.cli.output import human_bytes, print_json, print_table
from storage_core.dispatch import INVALID, UNKNOWN, VALID

#: Exit codes: every URI valid / some invalid / none invalid but some could not be validated.
EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 3


def sample_uris(db_path: Path, count: int) -> list[str]:
    """``count`` random URIs from a miner database (read-only)."""
    if not db_path.is_file():
        raise click.ClickException(f"database {db_path} does not exist")
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute("SELECT uri FROM DataEntity ORDER BY random() LIMIT ?", (count,))]
    except sqlite3.Error as error:
        raise click.ClickException(f"cannot sample URIs from {db_path}: {error}") from error


def read_uris(path: Path) -> list[str]:
    if not path.is_file():
        raise click.ClickException(f"URI file {path} does not exist")
    uris = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not uris:
        raise click.ClickException(f"URI file {path} holds no URI")
    return uris


@click.command("validate")
@click.option("--miner", "miner_hotkey", required=True, help="The miner's hotkey (ss58).")
@click.option("--uris", "uris_file", type=click.Path(path_type=Path), default=None, help="File of URIs, one per line.")
@click.option("--sample", type=click.IntRange(1, 100_000), default=None, help="Check N random URIs from --db.")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help="Database to sample URIs from.")
@click.option("--seed", default=None,
              help="Seeds which URIs get full-row checks (SN13 uses a block hash); unpredictable when absent.")
@click.option("--reference", "reference_db", type=click.Path(path_type=Path), default=None,
              help="A database of posts in SN13's DataEntity table (your own scrape) to compare sampled rows with.")
@click.option("--rows", "show_rows", is_flag=True, help="Show the sampled rows as the miner stored them.")
@click.option("--copies", "copies_file", type=click.Path(path_type=Path), default=None,
              help="Copied chunks found by `storage-core audit --copies-out FILE`: claims stored in them are invalid.")
@node_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (verdicts, reasons, sampled rows).")
def validate_command(miner_hotkey: str, uris_file: Path | None, sample: int | None, db_path: Path | None,
                     seed: str | None, reference_db: Path | None, show_rows: bool, copies_file: Path | None,
                     netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
                     wallet_name: str, wallet_hotkey: str, wallet_path: str | None, state_dir: Path | None,
                     as_json: bool) -> None:
    """Check a miner's URIs on every backend it should be on, combined by the config's policy.

    Exit code 0: all valid; 1: some invalid; 3: none invalid but some could not be validated.
    """
    from storage_core.verify.reference import sqlite_reference

    from storage_core.layout import check_hotkey
    from storage_core.validator import ValidatorStorage

    try:
        check_hotkey(miner_hotkey)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--miner") from None
    if (uris_file is None) == (sample is None):
        raise click.UsageError("give exactly one of --uris FILE or --sample N (with --db PATH)")
    if sample is not None and db_path is None:
        raise click.UsageError("--sample needs --db PATH")
    uris = read_uris(uris_file) if uris_file else sample_uris(db_path, sample)  # type: ignore[arg-type]
    if reference_db is not None and not reference_db.is_file():
        raise click.BadParameter(f"{reference_db} does not exist", param_hint="--reference")
    reference = sqlite_reference(reference_db) if reference_db is not None else None
    copies = _read_copies(copies_file) if copies_file is not None else None
    node = build_node(netuid, network, chain_endpoint, mirror, wallet_name, wallet_hotkey, wallet_path, state_dir)
    report = ValidatorStorage(node).validate_miner_data(miner_hotkey, uris, seed=seed, reference=reference,
                                                        copies=copies)
    counts = {v: report.count(v) for v in (VALID, INVALID, UNKNOWN)}
    if as_json:
        print_json({
            "miner": miner_hotkey, "policy": report.policy, "backends": list(report.backends), "counts": counts,
            "verdicts": dict(report.verdicts),
            "reasons": {uri: report.reason(uri) for uri, verdict in report.verdicts.items() if verdict != VALID},
            "rows": [{"backend": backend, "uri": row.uri, "key": row.key, "problem": row.problem,
                      "values": dict(row.values)} for backend, row in _rows(report)],
            "outcomes": [{"backend": o.backend, "status": o.status, "error": o.error,
                          "found": len(o.result.found) if o.result else None,
                          "requests": o.result.requests if o.result else None,
                          "bytes_read": o.result.bytes_read if o.result else None,
                          "rejected": len(o.result.rejected) if o.result else None,
                          "manifest": o.result.manifest if o.result else None,
                          "problems": [{"key": p.key, "problem": p.problem} for p in o.result.problems]
                          if o.result else []}
                         for o in report.outcomes],
        })
    else:
        print_table(
            f"miner {miner_hotkey}: {len(uris)} URIs, policy {report.policy}",
            ["backend", "status", "found", "requests", "read", "problems"],
            [[o.backend, o.status if o.ok else f"{o.status}: {o.error}",
              f"{len(o.result.found)}/{len(report.verdicts)}" if o.result else "-",
              o.result.requests if o.result else "-", human_bytes(o.result.bytes_read) if o.result else "-",
              len(o.result.problems) if o.result else "-"] for o in report.outcomes]
            or [["(none)", "miner is on no backend", "-", "-", "-", "-"]],
        )
        failing = [uri for uri, verdict in report.verdicts.items() if verdict != VALID]
        if failing:
            print_table(f"why ({min(len(failing), 10)} of {len(failing)} not valid)", ["uri", "reason"],
                        [[_short(uri, 30), _short(report.reason(uri), 42)] for uri in failing[:10]])
        if show_rows:
            for backend, row in _rows(report):
                print_table(f"{backend}: {row.uri}" + (f" (FAILS: {row.problem})" if row.problem else ""),
                            ["column", "value as stored"],
                            [[name, _short(repr(value), 50)] for name, value in row.values.items()])
        print_table("verdict", ["valid", "invalid", "could not validate"],
                    [[counts[VALID], counts[INVALID], counts[UNKNOWN]]])
    raise SystemExit(EXIT_INVALID if counts[INVALID] else EXIT_UNKNOWN if counts[UNKNOWN] else EXIT_VALID)


def _read_copies(path: Path) -> dict[str, str]:
    """The copies file of ``storage-core audit --copies-out``; a clear error when it is not one."""
    import json

    from storage_core.audit.copies import load_copies

    try:
        return dict(load_copies(json.loads(path.read_text())))
    except FileNotFoundError:
        raise click.BadParameter(f"{path} does not exist", param_hint="--copies") from None
    except (ValueError, AttributeError) as error:
        raise click.BadParameter(f"{path}: {error}", param_hint="--copies") from None


def _rows(report: Any) -> list[tuple[str, Any]]:
    return [(o.backend, row) for o in report.outcomes if o.result for row in o.result.rows]


def _short(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, so a table fits 80 columns."""
    return text if len(text) <= width else text[: width - 1] + "…"
