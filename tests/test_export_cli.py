"""``storage-core export`` lists what it wrote, as a table or JSON, and names bad input."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
from click.testing import CliRunner

from storage_core.cli import build_cli
from storage_core.testing.minerdb import TABLE_SQL, create_miner_db


def _run(*args):
    return CliRunner().invoke(build_cli(), ["export", *map(str, args)], catch_exceptions=False)


def test_json_lists_every_chunk(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 300, seed=51, undecodable=2)
    result = _run("--db", summary.path, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rows"] == 300 == sum(chunk["rows"] for chunk in data["chunks"])
    assert data["skipped"]["count"] == 2
    for chunk in data["chunks"]:
        path = tmp_path / "out" / chunk["file"]
        assert path.stat().st_size == chunk["bytes"] and chunk["file"] == chunk["sha256"] + ".parquet"
    later = _run("--db", summary.path, "--out", tmp_path / "later", "--since", "2026-11-19", "--json")
    assert 0 < json.loads(later.output)["rows"] < 300


def test_compression_is_chosen_and_checked(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 200, seed=53)
    for codec in ("snappy", "zstd"):
        result = _run("--db", summary.path, "--out", tmp_path / codec, "--compression", codec, "--json")
        assert result.exit_code == 0, result.output
        for chunk in json.loads(result.output)["chunks"]:
            metadata = pq.ParquetFile(tmp_path / codec / chunk["file"]).metadata
            codecs = {metadata.schema.column(i).path: metadata.row_group(0).column(i).compression
                      for i in range(metadata.num_columns)}
            assert codecs.pop("uri") == "ZSTD"  # what validators read most: always zstd
            assert set(codecs.values()) == {codec.upper()}
    wrong = _run("--db", summary.path, "--out", tmp_path / "x", "--compression", "gzip")
    assert wrong.exit_code == 2 and "gzip" in wrong.output


def test_table_shows_rows_bytes_and_sha256(tmp_path):
    summary = create_miner_db(tmp_path / "m.sqlite", 100, seed=52)
    result = CliRunner().invoke(build_cli(), ["export", "--db", str(summary.path), "--out", str(tmp_path / "o")],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "o").glob("*.parquet"))
    assert files and all(path.stem[:12] in result.output for path in files)
    assert "100 rows in" in result.output and "watermark:" in result.output


def test_table_fits_80_columns(tmp_path):
    """Every column keeps its values at 80 columns: the hash is shortened, nothing is squeezed to blank."""
    summary = create_miner_db(tmp_path / "m.sqlite", 100, seed=52)
    result = CliRunner().invoke(build_cli(), ["export", "--db", str(summary.path), "--out", str(tmp_path / "o")],
                                terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│") and "sha256" not in line]
    assert rows and all(len(line) <= 80 for line in result.output.splitlines())
    for path in sorted((tmp_path / "o").glob("*.parquet")):
        line = next(row for row in rows if path.stem[:12] in row)
        assert all(cell.strip() for cell in line.strip("│").split("│")), line


def test_bad_input_is_named(tmp_path):
    missing = _run("--db", tmp_path / "nope.sqlite", "--out", tmp_path / "o")
    assert missing.exit_code == 2 and "does not exist" in missing.output  # bad input: 2, as in `upload`
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.execute(TABLE_SQL.replace("contentSizeBytes    INTEGER         NOT NULL", "").replace(
        "content             BLOB            NOT NULL,", "content BLOB NOT NULL"))
    connection.close()
    old = _run("--db", path, "--out", tmp_path / "o")
    assert old.exit_code == 2 and "no column 'contentSizeBytes'" in old.output
    since = _run("--db", path, "--out", tmp_path / "o", "--since", "yesterday")
    assert since.exit_code == 2 and "not an ISO 8601 datetime" in since.output
    empty = tmp_path / "empty.sqlite"
    connection = sqlite3.connect(empty)
    connection.execute(TABLE_SQL)
    connection.close()
    nothing = _run("--db", empty, "--out", tmp_path / "o")
    assert nothing.exit_code == 0 and "Nothing to export" in nothing.output


def test_tables_follow_columns_as_they_are_when_printed(monkeypatch, capsys):
    """The CLI's console is made at import: a later COLUMNS must still decide a table's width."""
    import importlib

    from storage_core.cli import output

    monkeypatch.setenv("COLUMNS", "80")
    importlib.reload(output)
    monkeypatch.setenv("COLUMNS", "160")
    output.print_table("t", ["a", "b"], [["x" * 70, "500 / 1,500 rows done in the window"]])
    assert "500 / 1,500 rows done in the window" in capsys.readouterr().out
    monkeypatch.delenv("COLUMNS")
    importlib.reload(output)
