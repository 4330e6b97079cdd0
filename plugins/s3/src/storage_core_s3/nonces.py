"""Replay protection shared by several grant-service workers.

``btauth/1`` rejects a (hotkey, nonce) pair seen before inside the freshness window. The default store
lives in one process's memory; a service run with several worker processes needs a store they share,
or a request replayed to another worker would be accepted. :class:`SqliteNonceStore` is that store for
workers on one host (a file on local disk, WAL mode, one atomic ``INSERT`` per request). For several
hosts, implement the same one-method protocol over a shared database, e.g. Redis ``SET key 1 NX EX``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from storage_core.chain.http_auth import NonceStore, memory_nonce_store


class SqliteNonceStore:
    """A nonce store in a SQLite file that every worker process on the host opens."""

    persistent = True  # survives a restart: the service need not refuse requests signed before it started

    def __init__(self, path: Path | str, retention: float = 130.0, purge_every: int = 1000) -> None:
        self.path = Path(path)
        self.retention = float(retention)
        self._purge_every = purge_every
        self._calls = 0
        self._local = threading.local()
        self._connect()  # create the table now, so configuration errors show at start-up

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS nonces (hotkey TEXT NOT NULL, nonce INTEGER NOT NULL, "
                "expires REAL NOT NULL, PRIMARY KEY (hotkey, nonce)) WITHOUT ROWID"
            )
            connection.execute("CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)")
            self._local.connection = connection
        return connection

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        connection = self._connect()
        now = time.time()
        self._calls += 1
        if self._calls % self._purge_every == 0:
            connection.execute("DELETE FROM nonces WHERE expires < ?", (now,))
        cursor = connection.execute(
            "INSERT INTO nonces (hotkey, nonce, expires) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (hotkey_ss58, int(nonce_ns), now + self.retention),
        )
        # A pair already present is a replay: its nonce is still inside the window, or the verifier
        # would have refused it as stale before consulting the store.
        return cursor.rowcount == 1


def default_nonce_store(retention: float) -> NonceStore:
    """The per-process store (one worker)."""
    return memory_nonce_store(retention)
