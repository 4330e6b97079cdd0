"""Checks a checker runs on an untrusted parquet footer before reading any column.

A hostile miner controls every byte of its files, footer included. A footer claiming 2**40 rows made
pyarrow allocate for every claimed row (ArrowMemoryError, or the validator OOM-killed when the allocation
was overcommitted). Distinct URIs take at least one bit per row, so more than 8 rows per compressed byte of
the ``uri`` column is a lie; refusing such files bounds what a read can allocate by the file's size.
"""

from __future__ import annotations

import pyarrow.parquet as pq


def implausible_footer(metadata: pq.FileMetaData, size: int) -> str | None:
    """Why this footer cannot describe a real chunk of ``size`` bytes, or None when it can."""
    column = next((i for i in range(metadata.num_columns) if metadata.schema.column(i).path == "uri"), None)
    if column is None:
        return "no uri column"
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        compressed = group.column(column).total_compressed_size
        if compressed < 0 or compressed > size:
            return f"row group {index}: uri column chunk claims {compressed} bytes in a {size}-byte file"
        if group.num_rows < 0 or group.num_rows > 8 * max(compressed, 1):
            return (f"row group {index} claims {group.num_rows} rows but its uri column holds only "
                    f"{compressed} bytes: implausible row count")
    return None
