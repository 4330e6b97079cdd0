"""`make demo`: a miniature subnet 13 on 127.0.0.1, from an empty machine to a rollout in a few minutes.

The owner publishes the storage config on a chain (the real bittensor SDK over an in-memory Substrate),
8 miners export their SQLite databases and upload to SeaweedFS (through the S3 grant service) and to a
local Hub-compatible server, a validator checks samples (one miner cheats), usage telemetry shows where
data lives, then the owner raises the S3 rollout and a second round dual-writes. Every server is stopped
at the end, also on Ctrl-C.

``--keep DIR`` keeps the chain, stores, wallets and databases in DIR; ``--resume DIR`` starts that subnet's
services again (SeaweedFS, the grant service, the dev Hub) on the kept data, prints the environment and flags
that point the README's ``storage-core`` commands at it, and stops them on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from demo.copier import audit, copy_miner
from demo.world import LocalSubnet, Participant
from storage_core.audit.copies import load_copies
from storage_core.dispatch import INVALID, UNKNOWN, VALID
from storage_core.miner import MinerStorage
from storage_core.telemetry import UsageMonitor
from datetime import timedelta

from storage_core.testing.minerdb import DEFAULT_END, add_rows, create_miner_db
from storage_core.validator import ValidatorStorage

console = Console(highlight=False, width=118)
SAMPLE = 20


def step(number: int, text: str) -> None:
    console.print(f"\n[bold cyan][{number}/8][/] [bold]{text}[/]")


def say(text: str) -> None:
    console.print(f"      {text}")


SHORT = {"huggingface": "hf"}


def short(names: Any) -> str:
    return ", ".join(SHORT.get(name, name) for name in names)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    console.print(grid)


def owner_cli(world: LocalSubnet, *args: str) -> str:
    """The owner runs the real `storage-core config` command against the dev chain."""
    command = [sys.executable, "-m", "storage_core", "config", *args, "--netuid", str(world.netuid),
               "--subtensor.network", f"devchain:{world.chain_path}", "--wallet.name", "owner",
               "--wallet.hotkey", "default", "--wallet.path", str(world.root / "wallets"), "--yes"]
    run = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"})
    if run.returncode != 0:
        raise RuntimeError(f"`storage-core config {args[0]}` failed:\n{run.stdout}\n{run.stderr}")
    world.chain.advance_epochs(world.netuid, 1)  # a new epoch: fresh commitment quota, nodes re-read the config
    return run.stdout


def uris_of(db: Path, count: int, seed: int) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        uris = [row[0] for row in connection.execute("SELECT uri FROM DataEntity")]
    return random.Random(seed).sample(uris, count)


def upload_round(world: LocalSubnet, dbs: dict[str, Path], label: str) -> dict[str, Any]:
    rows, started = [], time.monotonic()
    written: dict[str, tuple[str, ...]] = {}
    for miner in (m for m in world.miners if m.name in dbs):
        storage = MinerStorage(world.node(miner), dbs[miner.name])
        try:
            result = storage.upload_data()
        finally:
            storage.close()
        ok = [b.backend for b in result.result.backends if b.status == "ok"]
        written[miner.name] = tuple(ok)
        rows.append([miner.name, short(result.selected), result.result.rows_exported,
                     sum(b.files for b in result.result.backends),
                     f"{sum(b.bytes for b in result.result.backends) / 1e6:.1f} MB",
                     f"{result.result.elapsed_s:.1f}s",
                     "ok" if result.result.ok else "; ".join(f"{b.backend}: {b.error}" for b in result.result.backends
                                                            if b.status not in ("ok", "idle"))])
    table(f"{label} ({time.monotonic() - started:.1f}s)",
          ["miner", "backends", "rows exported", "files written", "bytes written", "time", "outcome"], rows)
    return written


def validate_all(world: LocalSubnet, dbs: dict[str, Path], monitor: UsageMonitor, cheater: Participant,
                 seed: int) -> dict[str, str]:
    validator = ValidatorStorage(world.node(world.validator))
    rows, verdicts = [], {}
    honest = world.miners[0]
    for miner in (m for m in world.miners if m.name in dbs):
        claimed = uris_of(dbs[miner.name], SAMPLE, seed)
        note = ""
        if miner is cheater:  # half its claims are another miner's URIs it never uploaded
            claimed = claimed[: SAMPLE // 2] + uris_of(dbs[honest.name], SAMPLE // 2, seed + 1)
            note = f" (claims {SAMPLE // 2} URIs of {honest.name})"
        report = validator.validate_miner_data(miner.hotkey, claimed)
        monitor.observe(report)
        counts = {v: report.count(v) for v in (VALID, INVALID, UNKNOWN)}
        verdict = "PASS" if counts[INVALID] == 0 and counts[UNKNOWN] == 0 else "FAIL"
        verdicts[miner.name] = verdict
        found = ", ".join(f"{SHORT.get(o.backend, o.backend)} {len(o.result.found) if o.result else '-'}"
                          for o in report.outcomes)
        rows.append([miner.name + note, short(report.backends), found, counts[VALID], counts[INVALID],
                     counts[UNKNOWN], f"{report.bytes_read / 1e3:.0f} kB", verdict])
    table(f"validator: {SAMPLE} sampled URIs per miner, policy any",
          ["miner", "checked on", "found per backend", "valid", "invalid", "unknown", "read", "verdict"], rows)
    return verdicts


def usage(world: LocalSubnet, monitor: UsageMonitor, miners: int) -> None:
    summary = monitor.report([m.hotkey for m in world.miners[:miners]])
    table("usage telemetry: miners per backend",
          ["backend", "miners holding data", "rollout expects", "share"],
          [[u.backend, u.miners_holding, u.miners_expected, f"{u.share:.0%}"] for u in summary.backends])


def selection_table(world: LocalSubnet, title: str, miners: int) -> None:
    node = world.node(world.validator)
    rows = []
    for miner in world.miners[:miners]:
        picks = {s.backend: s for s in node.selections(miner.hotkey)}
        rows.append([miner.name, miner.hotkey[:12] + "…", picks["s3"].position,
                     "yes" if picks["s3"].selected else "no", "yes" if picks["huggingface"].selected else "no"])
    table(title, ["miner", "hotkey", "s3 position", "on s3", "on huggingface"], rows)


def run(root: Path, miners: int, rows: int) -> int:
    started = time.monotonic()
    step(1, "Starting a subnet on 127.0.0.1: chain, SeaweedFS (S3), the S3 grant service, a dev Hub")
    with LocalSubnet(root, miners=miners + 1) as world:  # the last one only copies (step 8)
        say(f"chain: bittensor {__import__('bittensor').__version__} SDK on an in-memory Substrate ({world.chain_path.name})")
        say(f"S3: SeaweedFS at {world.seaweed.endpoint_url} (pid {world.seaweed.pid}), bucket {world.bucket_name}")
        say(f"grant service: {world.grants.url}   dev Hub: {world.hub.url}")
        say(f"wallets: owner, {miners} miners and a validator (with permit), registered on subnet {world.netuid}")

        step(2, f"Generating {miners} miner databases of {rows:,} rows each (X and Reddit posts, SQLite)")
        dbs: dict[str, Path] = {}
        for index, miner in enumerate(world.miners[:miners]):
            dbs[miner.name] = root / "dbs" / f"{miner.name}.sqlite"
            create_miner_db(dbs[miner.name], rows, seed=index + 1)
        say(f"{miners * rows:,} rows in {sum(p.stat().st_size for p in dbs.values()) / 1e6:.0f} MB of SQLite")

        step(3, "The owner publishes the storage config on chain: S3 at 25%, HuggingFace on, policy any")
        document = root / "config.json"
        document.write_text(json.dumps(world.config(25).to_dict()))
        output = owner_cli(world, "set", "--document", str(document))
        for line in output.strip().splitlines():
            say(f"[dim]{line}[/]")
        selection_table(world, "who goes where (rollout positions are sticky: sha256(backend:hotkey) mod 10000)",
                        miners)

        step(4, "Round 1: every miner exports its rows once and uploads to the backends selected for it")
        upload_round(world, dbs, "round 1")

        cheater = world.miners[miners - 1]
        step(5, "The validator checks each miner; miner " + cheater.name + " claims URIs it never uploaded")
        monitor = UsageMonitor()
        verdicts = validate_all(world, dbs, monitor, cheater, seed=7)
        usage(world, monitor, miners)

        step(6, "The owner raises the S3 rollout to 100%; miners scrape more rows; round 2 dual-writes")
        output = owner_cli(world, "rollout", "--percentage", "100", "--backend", "s3")
        for line in output.strip().splitlines()[-4:]:
            say(f"[dim]{line}[/]")
        for index, miner in enumerate(world.miners[:miners]):  # posts scraped since round 1: the last 12 hours
            add_rows(dbs[miner.name], rows // 10, seed=100 + index, end=DEFAULT_END + timedelta(hours=12), days=0.5)
        selection_table(world, "selection after the rollout: every miner on S3, still on HuggingFace", miners)
        upload_round(world, dbs, "round 2")

        step(7, "The validator checks again; usage telemetry shows the move")
        monitor = UsageMonitor()
        verdicts = validate_all(world, dbs, monitor, cheater, seed=11)
        usage(world, monitor, miners)

        copier = world.miners[miners]
        step(8, f"Miner {copier.name} re-uploads {world.miners[0].name}'s chunks as its own; the audit catches it")
        copied = copier_caught(world, world.miners[0], copier, root)
        console.print("\nStopping every server this demo started...")
    honest = [name for name, verdict in verdicts.items() if name != cheater.name]
    ok = all(verdicts[name] == "PASS" for name in honest) and verdicts[cheater.name] == "FAIL" and copied
    console.print(f"[bold]{'demo finished' if ok else 'demo FAILED'}[/] in {time.monotonic() - started:.0f}s: "
                  f"{len(honest)} honest miners pass, the cheating miner "
                  f"{'fails' if verdicts[cheater.name] == 'FAIL' else 'was NOT caught'}, the copier "
                  f"{'is caught by the audit' if copied else 'was NOT caught'}.")
    return 0 if ok else 1


def copier_caught(world: LocalSubnet, victim: Participant, copier: Participant, root: Path) -> bool:
    """Step 8: the copy passes a check of its own bytes; `storage-core audit` finds it; `validate --copies` fails it."""
    claims = copy_miner(world, victim, copier)
    validator = ValidatorStorage(world.node(world.validator))
    alone = validator.validate_miner_data(copier.hotkey, claims)
    say(f"checked alone, the copier's {len(claims)} claims: {alone.count(VALID)} valid (every byte is sound)")
    report = audit(world, root / "copies.json")
    found: dict[tuple[str, str, str, str], int] = {}
    for c in report["copies"]:
        found[(c["copier"], c["original"], c["backend"], c["kind"])] = found.get(
            (c["copier"], c["original"], c["backend"], c["kind"]), 0) + 1
    table(f"storage-core audit: {len(report['miners'])} miner x backend pairs, listings and manifests (no chunk body)",
          ["copier", "copied from", "backend", "kind", "chunks"],
          [[short_hotkey(copier_), short_hotkey(original), backend, kind, count]
           for (copier_, original, backend, kind), count in sorted(found.items())])
    copies = load_copies(json.loads((root / "copies.json").read_text()))
    judged = validator.validate_miner_data(copier.hotkey, claims, copies=copies)
    reason = judged.reason(claims[0])
    say(f"with the audit's findings (validate --copies): {judged.count(INVALID)} of {len(claims)} invalid:")
    say(f"[dim]{reason[reason.find('copy:'):][:100]}[/]")
    flagged = {c["copier"] for c in report["copies"]}
    return (report["exit_code"] == 1 and flagged == {copier.hotkey} and alone.count(VALID) == len(claims)
            and judged.count(INVALID) == len(claims))


def short_hotkey(hotkey: str) -> str:
    return hotkey[:10] + "…"


def plain(text: str = "") -> None:
    """A line printed as is: no markup, no wrapping, so commands stay copyable."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def how_to_use(world: LocalSubnet) -> None:
    """The environment and flags that point the README's commands at this subnet."""
    root = world.root.resolve()
    q = shlex.quote
    first = world.miners[0] if world.miners else None
    plain(f"chain:         devchain:{root / 'devchain.json'} (subnet {world.netuid}; owner, "
          f"{len(world.miners)} miners and a validator registered)")
    assert world.seaweed is not None and world.grants is not None and world.hub is not None
    plain(f"S3:            SeaweedFS at {world.seaweed.endpoint_url} (pid {world.seaweed.pid}), "
          f"bucket {world.bucket_name}")
    plain(f"grant service: {world.grants.url}")
    plain(f"dev Hub:       {world.hub.url}")
    if world.moved:
        plain(f"(the old port of {', '.join(world.moved)} was taken: the owner republished the config with the "
              "new URL)")
    plain()
    plain("In another shell (.venv/bin on PATH, or `source .venv/bin/activate`):")
    plain(f"export STORAGE_CORE_DEVCHAIN={q(str(root / 'devchain.json'))}")
    plain(f"export STORAGE_CORE_NETUID={world.netuid}")
    plain("export HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1")
    plain(f"WALLET=\"--wallet.path {q(str(root / 'wallets'))} --wallet.hotkey default\"")
    plain()
    plain("storage-core config get")
    plain("storage-core config rollout --wallet.name owner $WALLET --backend s3 --percentage 50")
    if first is not None:
        state = q(str(root / "nodes" / first.name))
        plain(f"storage-core status --wallet.name {first.name} $WALLET --state-dir {state}")
        plain(f"HF_TOKEN={world.hf_tokens[first.hotkey]} storage-core upload --wallet.name {first.name} $WALLET "
              f"--state-dir {state} --db {q(str(root / 'dbs' / (first.name + '.sqlite')))}")
        plain(f"HF_TOKEN=hf_validator_token storage-core validate --wallet.name validator $WALLET --miner "
              f"{first.hotkey} --sample 20 --db {q(str(root / 'dbs' / (first.name + '.sqlite')))}")
    plain("(each miner's HF token is hf_<name>_token: miner0 -> hf_miner0_token)")


def resume(root: Path) -> int:
    """Start the kept subnet's services again and keep them up until Ctrl-C (or SIGTERM)."""
    try:
        world = LocalSubnet.kept(root)
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/]")
        return 2
    console.print(f"[bold]Starting the services of the subnet kept in {root}[/]")
    with world:
        how_to_use(world)
        console.print("\n[bold]services are up[/]; Ctrl-C stops them")
        sys.stdout.flush()
        while True:
            time.sleep(3600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=8)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the work directory here instead of a temp dir.")
    parser.add_argument("--resume", type=Path, default=None, metavar="DIR",
                        help="Start the services of a subnet kept with --keep DIR again, until Ctrl-C.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C and SIGTERM both unwind through the `with LocalSubnet(...)` blocks, which stop every server.
    # (A shell starts background jobs with SIGINT ignored; the demo wants Ctrl-C to work however launched.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.resume:
        try:
            return resume(args.resume)
        except KeyboardInterrupt:
            console.print("\nstopped every service it started")
            return 0
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            code = run(args.keep, args.miners, args.rows)
            console.print(f"kept in {args.keep}; start its services again with: python -m demo --resume {args.keep}",
                          markup=False, soft_wrap=True)
            return code
        with tempfile.TemporaryDirectory(prefix="storage-core-demo-") as directory:
            return run(Path(directory), args.miners, args.rows)
    except KeyboardInterrupt:
        console.print("\ninterrupted: every server this demo started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
