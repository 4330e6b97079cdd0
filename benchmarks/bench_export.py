"""Export throughput and peak memory against the naive pandas pipeline, measured in the same run.

Each side runs in its own subprocess on the same generated miner database (cached under
``benchmarks/.data/``) and reports its own peak RSS: ``VmHWM`` of /proc/self/status (Linux carries a
parent's ``ru_maxrss`` across fork+exec, so ``wait4``/``RUSAGE_CHILDREN`` would count the parent).

- ours: ``storage-core export --json`` as a user runs it (the CLI's entry point, the whole process:
  imports, plugins, the export, the report), encoding off (its default), and with Fernet encoding of
  url/username;
- baseline: SN13's own S3 uploader as it builds its files (schema v2's every field, raw values):
  ``pandas.read_sql_query`` in 1M-row chunks per source, ``json.loads`` per row with ``apply``, a per-row
  ``apply`` per column, ``DataFrame.to_parquet`` (snappy, 10,000-row groups).

Targets (issue 16): >= 8x the baseline's rows/s and <= 1/4 of its CPU-seconds per million rows; peak RSS
<= 256 MiB at 1M and 4M rows, every URI exactly once. The two sides run
interleaved: ours three times (the median counts, the highest peak RSS), the baseline twice (the faster
counts, which gives the lower ratio). Each side also reports its CPU time (all threads), which moves
less with the shared machine's load than the wall time that the targets are about.

    python benchmarks/bench_export.py [--rows N] [--quick] [--with-4m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

DATA = Path(__file__).resolve().parent / ".data"
MIB = 1024 * 1024
RSS_TARGET_MIB = 256


def miner_db(rows: int, seed: int = 0) -> Path:
    """The cached generated database with ``rows`` rows (generated once, then reused)."""
    from storage_core.testing.minerdb import create_miner_db

    path = DATA / f"miner-v2-{rows}-s{seed}.sqlite"  # v2: posts with every field of SN13's content models
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        for leftover in DATA.glob(partial.name + "*"):
            leftover.unlink()
        create_miner_db(partial, rows, seed=seed)
        for suffix in ("-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
        partial.rename(path)
    return path


# ----------------------------------------------------------------------------- children


def _child_ours(db: Path, out: Path, encode: bool) -> dict:
    """``storage-core export`` as a user runs it: the CLI's own entry point, in this (measured) process."""
    import contextlib
    import io

    from cryptography.fernet import Fernet

    from storage_core.cli import main as cli_main

    arguments = ["export", "--db", str(db), "--out", str(out), "--json"]
    if encode:
        arguments += ["--encode-url-key", Fernet.generate_key().decode(),
                      "--encode-username-key", Fernet.generate_key().decode()]
    printed = io.StringIO()
    started, cpu = time.perf_counter(), _cpu_seconds()
    sys.argv = ["storage-core", *arguments]
    with contextlib.redirect_stdout(printed):
        try:
            cli_main()
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise
    report = json.loads(printed.getvalue())
    return {"rows": report["rows"], "seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu,
            "files": len(report["chunks"])}


def _cpu_seconds() -> float:
    """CPU time of this process, all threads, user and system: the work done, whatever the machine's load."""
    times = os.times()
    return times.user + times.system


#: The columns SN13's own S3 uploader writes per source (upload_utils/s3_uploader.py, see shared/SN13.md).
SN13_COLUMNS = {
    2: ["username", "text", "tweet_hashtags", "timestamp", "url", "media", "user_id", "user_display_name",
        "user_verified", "tweet_id", "is_reply", "is_quote", "conversation_id", "in_reply_to_user_id", "language",
        "in_reply_to_username", "quoted_tweet_id", "like_count", "retweet_count", "reply_count", "quote_count",
        "view_count", "bookmark_count", "user_blue_verified", "user_description", "user_location",
        "profile_image_url", "cover_picture_url", "user_followers_count", "user_following_count", "scraped_at"],
    1: ["id", "username", "communityName", "body", "title", "createdAt", "dataType", "parentId", "url", "media",
        "is_nsfw", "score", "upvote_ratio", "num_comments", "scrapedAt"],
}


def _child_baseline(db: Path, out: Path) -> dict:
    """SN13's own uploader, as it builds its files: ``read_sql_query`` in 1M-row chunks per source,
    ``json.loads`` once per row with ``apply``, each column with a per-row ``apply``, then ``to_parquet``
    (snappy, 10,000-row groups). Raw values, no encryption."""
    import sqlite3

    import pandas as pd

    started, cpu = time.perf_counter(), _cpu_seconds()
    connection = sqlite3.connect(db)
    rows = files = 0
    for source, columns in SN13_COLUMNS.items():
        query = "SELECT uri, datetime, label, content FROM DataEntity WHERE source = ? LIMIT ? OFFSET ?"
        offset = 0
        while True:
            frame = pd.read_sql_query(query, connection, params=[source, 1_000_000, offset],
                                      parse_dates=["datetime"])
            if frame.empty:
                break
            posts = frame["content"].apply(json.loads)
            table = pd.DataFrame({"uri": frame["uri"], "datetime": frame["datetime"], "label": frame["label"]})
            for column in columns:
                table[column] = posts.apply(lambda post, name=column: post.get(name))
            table.to_parquet(out / f"{source}-{offset}.parquet", index=False, compression="snappy",
                             row_group_size=10_000)
            rows += len(table)
            files += 1
            offset += len(frame)
    return {"rows": rows, "seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu,
            "files": files}


def _peak_rss_mib() -> float:
    """This process's own high-water RSS (VmHWM), falling back to ru_maxrss off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_child(kind: str, db: Path) -> dict:
    """Run one side in a subprocess; return its result, with its own peak RSS."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-export-{kind}-"))
    try:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", kind, "--db", str(db), "--out", str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"benchmark child {kind!r} failed with exit code {process.returncode}")
        return json.loads(stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ----------------------------------------------------------------------------- report


def _entry(
    name: str, value: float, unit: str, baseline: str | None, baseline_value: float | None,
    runs: list[float] | None = None, higher_is_better: bool | None = None,
    baseline_runs: list[float] | None = None,
) -> dict:
    ratio = value / baseline_value if baseline_value else None
    entry = {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 1) if baseline_value is not None else None,
        "ratio": round(ratio, 2) if ratio is not None else None,
    }
    if runs is not None:
        entry["runs"] = [round(value, 1) for value in runs]
    if higher_is_better is not None:
        entry["higher_is_better"] = higher_is_better
    if baseline_runs is not None:
        entry["baseline_runs"] = [round(value, 1) for value in baseline_runs]
    return entry


#: Runs of each side: ours is short (~6 s) and moves with the shared machine's load, so its median
#: counts; the baseline (~1 min) is run twice and the faster run counts (the less flattering ratio).
OUR_RUNS = 3
BASELINE_RUNS = 2


def _rate(run: dict) -> float:
    return run["rows"] / run["seconds"]


def _cpu_per_million(run: dict) -> float:
    return run["cpu_seconds"] / run["rows"] * 1_000_000


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def run(quick: bool = False, rows: int | None = None, with_4m: bool = False) -> list[dict]:
    """Measure ours and the baseline on the same database, interleaved; ``quick`` uses 100k rows, one run each."""
    rows = rows or (100_000 if quick else 1_000_000)
    db = miner_db(rows)
    our_runs, baseline_runs = (1, 1) if quick else (OUR_RUNS, BASELINE_RUNS)
    baselines: list[dict] = []
    ours: list[dict] = []
    encoded: list[dict] = []
    for index in range(max(our_runs, baseline_runs)):  # interleaved: a noisy stretch hits both sides
        if index < baseline_runs:
            baselines.append(_run_child("baseline", db))
        if index < our_runs:
            ours.append(_run_child("ours", db))
            encoded.append(_run_child("ours-encoded", db))
    base_rate = max(_rate(run) for run in baselines)
    label = (f"SN13's uploader: read_sql_query + json.loads/apply per column + to_parquet ({rows:,} rows, "
             f"faster of {_runs(len(baselines))})")
    results = [
        _entry(f"export rows/s, {rows:,} rows (median of {_runs(len(ours))})", median(map(_rate, ours)), "rows/s",
               label, base_rate, runs=[_rate(run) for run in ours], baseline_runs=[_rate(run) for run in baselines]),
        _entry(f"export rows/s with Fernet url+username, {rows:,} rows (median of {_runs(len(encoded))})",
               median(map(_rate, encoded)), "rows/s", label, base_rate, runs=[_rate(run) for run in encoded]),
        _entry(f"export peak RSS, {rows:,} rows (highest of {_runs(len(ours))})",
               max(run["peak_rss_mib"] for run in ours), "MiB", label,
               max(run["peak_rss_mib"] for run in baselines), runs=[run["peak_rss_mib"] for run in ours]),
        _entry(f"export peak RSS with Fernet, {rows:,} rows (highest of {_runs(len(encoded))})",
               max(run["peak_rss_mib"] for run in encoded), "MiB", label,
               max(run["peak_rss_mib"] for run in baselines), runs=[run["peak_rss_mib"] for run in encoded]),
    ]
    # CPU time moves less with the shared machine's load than wall time does (the export needs both
    # cores; the baseline one): the work each side does, next to the ratio that counts.
    cpu = _entry(f"export CPU-seconds per million rows, all threads ({rows:,} rows, median of {_runs(len(ours))})",
                 median(map(_cpu_per_million, ours)), "s",
                 f"the same pandas pipeline, lower of {_runs(len(baselines))}",
                 min(map(_cpu_per_million, baselines)), runs=[_cpu_per_million(run) for run in ours],
                 higher_is_better=False, baseline_runs=[_cpu_per_million(run) for run in baselines])
    results.append(cpu)
    if with_4m:
        big = _run_child("ours", miner_db(4_000_000))
        results.append(_entry("export peak RSS, 4,000,000 rows", big["peak_rss_mib"], "MiB",
                              f"target {RSS_TARGET_MIB} MiB", RSS_TARGET_MIB))
        results.append(_entry("export rows/s, 4,000,000 rows", _rate(big), "rows/s",
                              label + " (1M-row runs)", base_rate))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="rows in the generated database (default 1M)")
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--with-4m", action="store_true", help="also export a 4M-row database (~13 GB, slow)")
    parser.add_argument("--child", choices=("ours", "ours-encoded", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "baseline":
            result = _child_baseline(args.db, args.out)
        else:
            result = _child_ours(args.db, args.out, encode=args.child == "ours-encoded")
        result["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(result))
        return
    print(json.dumps(run(quick=args.quick, rows=args.rows, with_4m=args.with_4m), indent=2))


if __name__ == "__main__":
    main()
