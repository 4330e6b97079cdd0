"""Miner export: the subnet's SQLite rows -> content-addressed parquet chunks -> spool -> every backend.

Public entry points: ``export`` (rows to chunks, nothing else), ``Spool`` (chunks + ledger + watermark)
and ``run_upload_round`` (one miner round: export once, publish to every selected backend, prune).
"""

from storage_core.export.encoding import FieldEncoder
from storage_core.export.exporter import ExportOptions, ExportResult, export
from storage_core.export.sqlite_source import MinerDatabaseError
from storage_core.export.watermark import Watermark

__all__ = ["ExportOptions", "ExportResult", "FieldEncoder", "MinerDatabaseError", "Watermark", "export"]
