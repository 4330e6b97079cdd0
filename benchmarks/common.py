"""The result record every benchmark returns, and a small timing helper."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any


def result(name: str, value: float, unit: str, baseline: str, baseline_value: float, higher_is_better: bool = True) -> dict:
    """One row of benchmarks/results.json; ``ratio`` is ours over the baseline's."""
    ratio = value / baseline_value if baseline_value else float("inf")
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 4),
        "ratio": round(ratio, 4),
        "higher_is_better": higher_is_better,
    }


def best_of(repeats: int, function: Callable[[], object]) -> float:
    """The fastest of ``repeats`` wall-clock runs, in seconds (the least disturbed by a noisy machine)."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return min(timings)


def sample_uris(batch: Any, size: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """``size`` URIs spread evenly over a batch's files, and for each the size of the file holding it
    (what a naive checker would download to find it)."""
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    sample: list[str] = []
    holder_size: dict[str, int] = {}
    for staged in batch.files:
        uris = pq.read_table(staged.path, columns=["uri"]).column("uri").to_pylist()
        for uri in rng.sample(uris, size // len(batch.files)):
            sample.append(uri)
            holder_size[uri] = staged.size_bytes
    return sample, holder_size
