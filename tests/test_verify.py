"""The core's checking path on its own: key parsing, sampling, the freshness edge, store failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage_core.errors import BackendError
from storage_core.layout import object_key, parse_key
from storage_core.testing import cheats
from storage_core.testing.data import make_table
from storage_core.testing.memory_store import MemoryStore
from storage_core.verify import CheckSettings, ObjectError, check_claims, sample_uris, source_of_uri

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
OTHER = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def test_parse_key_is_the_inverse_of_object_key() -> None:
    key = object_key(HOTKEY, "x", "2026-12-01", "ab" * 32)
    name = parse_key(key)
    assert name is not None and (name.hotkey, name.source, name.date, name.name_hash) == (
        HOTKEY, "x", "2026-12-01", "ab" * 16)
    assert name.key == key
    for bad in (key.replace(".parquet", ".csv"), key.replace("date=2026-12-01", "date=12-01"),
                key.replace("hotkey=", "hk="), "hotkey=x/" + key, key + "/..", key.replace("source=x", "source=")):
        assert parse_key(bad) is None, bad


def test_sampling_follows_the_seed_and_nothing_else() -> None:
    uris = [f"https://x.com/u/status/{n}" for n in range(100)]
    first = sample_uris(uris, 5, "0xblock")
    assert first == sample_uris(list(reversed(uris)), 5, "0xblock") and len(first) == 5
    assert first != sample_uris(uris, 5, "0xother")
    assert sample_uris(uris[:3], 5, "0xblock") == frozenset(uris[:3])


def test_source_of_uri() -> None:
    assert source_of_uri("https://x.com/a/status/1") == "x"
    assert source_of_uri("https://twitter.com/a/status/1") == "x"
    assert source_of_uri("https://www.reddit.com/r/a/comments/b/") == "reddit"
    assert source_of_uri("https://example.org/a") is None and source_of_uri("not a url [") is None


def test_the_oldest_day_is_judged_row_by_row() -> None:
    """Honest rows that age out of the window are invalid one by one; the fresh rows beside them stay valid."""
    day = datetime.now(UTC).date() - timedelta(days=29)
    table = make_table(400, "x", seed=3, day=day)
    planted = cheats.honest(HOTKEY, table)
    now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(days=30, hours=12)  # the window starts mid-day
    times = dict(zip(table.column("uri").to_pylist(), table.column("datetime").to_pylist(), strict=True))
    settings = CheckSettings(now=now, seed="s", full_checks=400)
    result = check_claims(MemoryStore({planted.key: planted.data}, HOTKEY), "memory", HOTKEY, planted.claims, settings)
    oldest = now - timedelta(days=30)
    stale = {uri for uri, when in times.items() if when < oldest}
    assert stale and stale != set(times)
    assert set(result.rejected) == stale and all(why.startswith("stale") for why in result.rejected.values())
    assert result.found == set(times) - stale and not result.problems


def test_another_miners_object_is_named_and_never_counted() -> None:
    table = make_table(50, "x", seed=4)
    theirs = cheats.honest(OTHER, table)
    store = MemoryStore({theirs.key: theirs.data}, OTHER)
    store.objects = {theirs.key: theirs.data}  # a store that lists beyond the prefix: the core still refuses
    result = check_claims(store, "memory", HOTKEY, theirs.claims)
    assert not result.found and [p.problem for p in result.problems] == [f"object under hotkey {OTHER}, not this miner's"]


class _DownStore(MemoryStore):
    def read_range(self, key: str, start: int, end: int) -> bytes:
        raise BackendError("connection refused")


class _GoneStore(MemoryStore):
    def read_range(self, key: str, start: int, end: int) -> bytes:
        raise ObjectError(key, "gone since it was listed")


def test_a_store_failure_propagates_and_an_object_failure_does_not() -> None:
    planted = cheats.honest(HOTKEY, make_table(50, "x", seed=5))
    with pytest.raises(BackendError):
        check_claims(_DownStore({planted.key: planted.data}, HOTKEY), "memory", HOTKEY, planted.claims)
    result = check_claims(_GoneStore({planted.key: planted.data}, HOTKEY), "memory", HOTKEY, planted.claims)
    assert not result.found and result.problems[0].problem == "gone since it was listed"


def test_an_unknown_codec_in_a_footer_is_the_objects_problem_not_a_crash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pyarrow 26 aborts the process when asked a column's codec and the footer names one it does not know
    (an uncaught C++ exception): the check must never ask, so such a file is one object's problem.

    The check runs in a child process, so that the abort, if it came back, fails this test and not the run.
    """
    import io
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from storage_core.schema import schema_for

    table = make_table(60, "x", seed=9)
    sink = io.BytesIO()
    pq.write_table(table.cast(schema_for("x")), sink, compression="zstd", row_group_size=20)
    data = sink.getvalue()
    marker = b"reply_count\x15\x0c"  # a column's path, then its codec field: ZSTD (6, zigzag 12)
    assert data.count(marker) >= 3  # at least one per row group
    data = data.replace(marker, b"reply_count\x15\x7c")  # codec 62: no such codec
    planted = cheats.planted(HOTKEY, table, data, "unknown codec")
    (tmp_path / "object").write_bytes(planted.data)
    script = f"""
import pathlib
from storage_core.testing.memory_store import MemoryStore
from storage_core.verify import CheckSettings, check_claims
data = pathlib.Path({str(tmp_path / 'object')!r}).read_bytes()
result = check_claims(MemoryStore({{{planted.key!r}: data}}, {HOTKEY!r}), "memory", {HOTKEY!r},
                      {list(planted.claims)!r}, CheckSettings(seed="s", full_checks=60))
assert not result.found, result.found
print([p.problem for p in result.problems])
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "does not decode" in child.stdout, child.stdout  # the codec (pyarrow 17: a page it hit too) is named
