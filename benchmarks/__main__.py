"""Run every benchmarks/bench_*.py, write benchmarks/results.json and print a table.

Usage: python -m benchmarks [--quick] [name ...]   (names like "export", "s3", "dispatch")
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if wanted:
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    rows: list[dict] = []
    failures = 0
    for name in names:
        started = time.monotonic()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            results = module.run(quick=quick)
        except Exception:
            failures += 1
            traceback.print_exc()
            print(f"benchmark {name} failed", file=sys.stderr)
            continue
        for row in results:
            row["benchmark"] = name.removeprefix("bench_")
        rows.extend(results)
        print(f"{name}: {len(results)} results in {time.monotonic() - started:.1f} s", file=sys.stderr)
    ran = {row["benchmark"] for row in rows}
    if wanted and (HERE / "results.json").exists():  # a subset run keeps the other benchmarks' last figures
        kept = json.loads((HERE / "results.json").read_text()).get("results", [])
        rows = [row for row in kept if row.get("benchmark") not in ran] + rows
    output = {"machine": machine(), "quick": quick, "results": rows}
    (HERE / "results.json").write_text(json.dumps(output, indent=2) + "\n")
    table = Table(title=f"benchmarks ({machine()})", title_justify="left")
    for column in ("benchmark", "name", "value", "unit", "baseline", "baseline value", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["benchmark"], row["name"], f"{row['value']:g}", row["unit"], row["baseline"],
                      f"{row['baseline_value']:g}", f"{row['ratio']:g}")
    Console(width=200).print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
