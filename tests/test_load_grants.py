"""Load: 50 miners (distinct registered hotkeys, so the per-hotkey rate limit is not what is tested) ask the
grant service for upload grants and upload small chunks, while 10 validators ask for read grants, list and
range-read, all at once, against SeaweedFS and the grant service in its own process. No request may fail
and the service may answer no 5xx. The p99 grant latency is printed (numbers, with a baseline, are in
``make bench``: benchmarks/bench_load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_load import run_load


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fifty_miners_and_ten_validators_without_a_failure(tmp_path: Path) -> None:
    report = run_load(tmp_path, miners=50, validators=10, files_per_miner=2, reads_per_validator=6)
    assert report.failures == (), report.failures[:5]
    assert not [status for status in report.service_statuses if status >= 500], report.service_statuses
    assert not [kind for kind in report.statuses if kind.split()[-1].startswith("5")], report.statuses
    assert report.objects_stored == 50 * 2
    assert len(report.upload_grant_ms) == 100
    assert report.statuses.get("grant 200", 0) == len(report.grant_ms)
    assert report.service_statuses.get(200, 0) >= len(report.grant_ms)  # the service logged every grant
    assert report.statuses.get("s3 range read 206", 0) > 0  # validators really read while miners uploaded
    print(f"\nload: {report.requests} requests in {report.elapsed_s:.1f} s; grant latency p50 "  # noqa: T201
          f"{report.percentile(0.5):.1f} ms, p99 {report.percentile(0.99):.1f} ms "
          f"(upload grants p99 {report.percentile(0.99, report.upload_grant_ms):.1f} ms, "
          f"read grants p99 {report.percentile(0.99, report.read_grant_ms):.1f} ms)")
