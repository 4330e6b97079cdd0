"""Read-only SQL on the miner database with results straight into Arrow (the ADBC SQLite driver).

Python's ``sqlite3`` builds a tuple and a Python object per value: for a million 1 KB posts that is
most of an export's time, all of it holding the GIL. The ADBC driver (Apache Arrow) steps SQLite and
fills Arrow buffers in C, releasing the GIL while it works, so a reader thread overlaps with decoding.

The driver infers each column's type from the values it sees, so queries pin every column with
``CAST`` (and ``COALESCE`` for the nullable label): a page of NULL labels must not read as integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa

from storage_core.export.arrow_values import int64s, strings

#: The driver fetches this many rows per Arrow batch; a page query asks for at most one batch.
_BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"

Param = str | int


class ArrowQueries:
    """One read-only ADBC connection; every query is its own short read transaction (autocommit)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self._database = adbc_driver_sqlite.connect(f"{Path(path).resolve().as_uri()}?mode=ro")
        try:
            self._connection = adbc_driver_manager.AdbcConnection(self._database)
        except BaseException:
            self._database.close()
            raise
        self.table(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")

    def table(self, sql: str, params: Sequence[Param] = (), batch_rows: int = 1024) -> pa.Table:
        """Run ``sql`` with positional ``params`` and return the whole result as one Arrow table."""
        statement = adbc_driver_manager.AdbcStatement(self._connection)
        try:
            statement.set_options(**{_BATCH_ROWS_OPTION: str(max(1, batch_rows))})
            statement.set_sql_query(sql)
            if params:
                statement.bind(_param_batch(params))
            stream, _rows = statement.execute_query()
            return pa.RecordBatchReader.from_stream(stream).read_all()
        finally:
            statement.close()

    def close(self) -> None:
        self._connection.close()
        self._database.close()


def _param_batch(params: Sequence[Param]) -> pa.RecordBatch:
    """One row of parameters, built from buffers (see ``arrow_values``)."""
    columns = []
    for value in params:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(f"query parameter {value!r} is not a str or int")
        columns.append(int64s([value]) if isinstance(value, int) else strings([value]))
    return pa.RecordBatch.from_arrays(columns, names=[f"p{index}" for index in range(len(columns))])
