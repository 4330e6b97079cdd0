"""Shared helpers of the reliability, fuzz and load suites: a miner DB with its expected URIs, node
overrides that keep a participant's HF token, and grant services whose traffic passes a FaultProxy."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from demo.world import LocalSubnet, Participant
from storage_core.chain.membership import ChainMembership
from storage_core.testing.faultproxy import FaultProxy
from storage_core.testing.minerdb import DEFAULT_END, create_miner_db
from storage_core_s3.grants import GrantSettings, create_app
from storage_core_s3.server import ServerThread


def miner_db(path: Path, rows: int, seed: int, days: int = 2, later_days: int = 0) -> tuple[Path, set[str]]:
    """A generated (or extended) miner database and every URI it holds (what must end up stored, once).

    ``later_days`` shifts the new rows' end that many days past the default, so rows added to an existing
    database are newer than the export watermark of an earlier round."""
    summary = create_miner_db(path, rows, seed=seed, days=days, end=DEFAULT_END + timedelta(days=later_days))
    with sqlite3.connect(summary.path) as connection:
        uris = {row[0] for row in connection.execute("SELECT uri FROM DataEntity")}
    return summary.path, uris


def ensure_on_s3(world: LocalSubnet, miner: Participant, db: Path) -> None:
    """Upload ``miner``'s database once (a round through the real node) unless S3 already holds its rows."""
    if world.stored_uris("s3", miner.hotkey):
        return
    from storage_core.miner import MinerStorage

    storage = MinerStorage(world.node(miner), db)
    try:
        assert storage.upload_data().result.backend("s3").status == "ok"
    finally:
        storage.close()


def overrides(world: LocalSubnet, participant: Participant, *, s3: Mapping[str, Any] | None = None,
              hf: Mapping[str, Any] | None = None, s3_percent: float | None = None,
              hf_percent: float | None = None, hf_enabled: bool | None = None) -> dict[str, Any]:
    """A local override layer for ``world.node``: replaces the whole ``backends`` key, so the participant's
    HF token (which ``world.node`` would put there) is repeated here."""
    token = world.hf_tokens.get(participant.hotkey)
    s3_entry: dict[str, Any] = {"options": dict(s3 or {})}
    hf_entry: dict[str, Any] = {"options": {**({"token": token} if token else {}), **dict(hf or {})}}
    if s3_percent is not None:
        s3_entry["rollout_percent"] = s3_percent
    if hf_percent is not None:
        hf_entry["rollout_percent"] = hf_percent
    if hf_enabled is not None:
        hf_entry["enabled"] = hf_enabled
    return {"backends": {"s3": s3_entry, "huggingface": hf_entry}}


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


@contextmanager
def proxied(url: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the loopback service at ``url``, stopped at the end."""
    proxy = FaultProxy("127.0.0.1", port_of(url)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextmanager
def grants_presigning_for(world: LocalSubnet, endpoint_url: str, **settings: Any) -> Iterator[ServerThread]:
    """A second grant service on the world's bucket whose presigned URLs point at ``endpoint_url`` (a proxy
    in front of SeaweedFS), so the S3 data path (not only the grant calls) passes the proxy."""
    assert world.seaweed is not None and world.chain is not None
    grant_settings = GrantSettings(
        bucket=world.bucket_name, service_hotkey=world.service_key.ss58_address,
        endpoint_url=world.seaweed.endpoint_url, presign_endpoint_url=endpoint_url,
        access_key=world.seaweed.access_key, secret_key=world.seaweed.secret_key, **settings,
    )
    membership = ChainMembership(world.chain.subtensor(), world.netuid, refresh_seconds=60)
    server = ServerThread(create_app(grant_settings, membership)).start()
    try:
        yield server
    finally:
        server.stop()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, exited but not reaped, is not)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"
