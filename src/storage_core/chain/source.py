"""The config a node runs with: chain layer + last-known-good cache + polling.

Resolution is overrides > chain > environment > defaults (``storage_core.config.resolve``). The chain
layer is the subnet owner's commitment, decoded inline or fetched through a pointer and accepted only
when its hash matches. A commitment that fails to decode, verify or parse never replaces a good one:
the node keeps the last known good config (an atomically written cache file, keyed by the chain's genesis
hash and the netuid, so two chains that share a network label never share a config) and logs an error
naming the reason; with no cache, environment and defaults apply. ``ConfigSource.start()`` polls in a daemon
thread so a node picks up the owner's changes without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from storage_core.atomic import write_json_atomic
from storage_core.config import (
    ConfigLayer,
    ConfigPointer,
    ResolvedConfig,
    StorageConfig,
    decode_chain_payload,
    default_layer,
    environment_layer,
    parse_config,
    resolve,
)
from storage_core.errors import ChainError, ConfigError, StorageCoreError

logger = logging.getLogger(__name__)

CACHE_ENV = "STORAGE_CORE_CONFIG_CACHE"
MIRROR_ENV = "STORAGE_CORE_CONFIG_MIRROR"
POLL_ENV = "STORAGE_CORE_CONFIG_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 300.0
MAX_DOCUMENT_BYTES = 1 << 20


# --------------------------------------------------------------------------- pointer documents


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): a pointer must not lead a node anywhere else."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not newurl.startswith(("http://", "https://")):
            raise urllib.error.URLError(f"refusing redirect to {newurl!r} (only http(s) is followed)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


@attrs.frozen
class DocumentFetcher:
    """Fetches a pointer's document: from a local mirror the user gave, else over http(s) from its URL.

    ``mirror`` is a file (the document itself) or a directory holding ``<sha256>.json``. Any other URL
    scheme (``file:``, ...) is refused: a chain value must not make a node read its local files.
    """

    mirror: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    timeout: float = 10.0
    max_bytes: int = MAX_DOCUMENT_BYTES

    def fetch(self, pointer: ConfigPointer) -> bytes:
        if self.mirror is not None:
            path = self.mirror / f"{pointer.sha256}.json" if self.mirror.is_dir() else self.mirror
            try:
                return path.read_bytes()[: self.max_bytes + 1]
            except OSError as error:
                raise ConfigError("(pointer)", f"cannot read mirror {path}: {error}") from error
        if not pointer.url.startswith(("http://", "https://")):
            raise ConfigError(
                "(pointer)", f"URL {pointer.url!r} is not http(s); give a local copy with --config-mirror / {MIRROR_ENV}"
            )
        try:
            with _OPENER.open(pointer.url, timeout=self.timeout) as response:
                data = response.read(self.max_bytes + 1)
        except OSError as error:
            raise ConfigError("(pointer)", f"cannot fetch {pointer.url}: {error}") from error
        if len(data) > self.max_bytes:
            raise ConfigError("(pointer)", f"document at {pointer.url} is larger than {self.max_bytes} bytes")
        return data

    def resolve(self, pointer: ConfigPointer) -> StorageConfig:
        """Fetch and verify: the document is accepted only if its sha256 matches the chain's."""
        return pointer.verify(self.fetch(pointer))


# --------------------------------------------------------------------------- reading the chain


@attrs.frozen
class ChainReading:
    """What the chain holds for the subnet: the owner, the raw payload, and the config when it is valid.

    ``status`` is ``ok`` (``config`` set), ``absent`` (the owner has committed nothing) or ``invalid``
    (``error`` says why).
    """

    netuid: int
    status: str
    owner_hotkey: str | None = None
    block: int | None = None
    payload: bytes | None = None
    pointer: ConfigPointer | None = None
    config: StorageConfig | None = None
    error: str | None = None

    def payload_text(self) -> str | None:
        if self.payload is None:
            return None
        return self.payload.decode("utf-8", errors="backslashreplace")


def decode_reading(netuid: int, owner: str, block: int, payload: bytes, fetcher: DocumentFetcher) -> ChainReading:
    """Decode a commitment payload into a ChainReading (never raises for bad content)."""
    pointer = None
    try:
        decoded = decode_chain_payload(payload)
        if isinstance(decoded, ConfigPointer):
            pointer = decoded
            decoded = fetcher.resolve(decoded)
    except ConfigError as error:
        return ChainReading(netuid, "invalid", owner, block, payload, pointer, error=str(error))
    return ChainReading(netuid, "ok", owner, block, payload, pointer, config=decoded)


def read_chain_config(subtensor: Any, netuid: int, fetcher: DocumentFetcher | None = None) -> ChainReading:
    """Read and decode the owner's commitment; ChainError only when the chain cannot be read at all."""
    from storage_core.chain.commitments import read_commitment, read_owner_hotkey

    owner = read_owner_hotkey(subtensor, netuid)
    record = read_commitment(subtensor, netuid, owner)
    if record is None or not record.payload:
        return ChainReading(netuid, "absent", owner)
    return decode_reading(netuid, owner, record.block, record.payload, fetcher or DocumentFetcher())


# --------------------------------------------------------------------------- last known good

#: Networks whose name identifies one chain. A node that cannot reach such a chain may use the config it cached
#: under that name; any other label ("local", a custom endpoint) names many chains, so only the genesis hash counts.
NAMED_CHAINS = frozenset({"finney", "test", "archive"})


@attrs.frozen
class ChainKey:
    """What a cached config belongs to: one subnet of one chain. The genesis hash tells chains apart, whatever
    label a client gives them (every dev chain is "local"); ``network`` is kept only to find the entry of a
    named chain that cannot be reached."""

    genesis_hash: str
    netuid: int
    network: str = ""

    @property
    def id(self) -> str:
        return f"{self.genesis_hash}:{self.netuid}"


@attrs.frozen
class CachedConfig:
    config: StorageConfig
    block: int | None
    owner_hotkey: str | None
    saved_at: float


@attrs.frozen
class LastKnownGood:
    """The last valid config of each (chain, netuid), in a JSON file replaced atomically (a crash never leaves
    half a file). One file may hold several chains' entries; the oldest beyond ``max_entries`` are dropped."""

    path: Path = attrs.field(converter=Path)
    max_entries: int = 16

    def _entries(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.error("ignoring unreadable config cache %s: %s", self.path, error)
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            logger.warning("ignoring config cache %s: it does not say which chain it belongs to", self.path)
            return {}
        return {name: entry for name, entry in entries.items() if isinstance(entry, dict)}

    @staticmethod
    def _saved_at(entry: dict[str, Any]) -> float:
        saved = entry.get("saved_at")
        return float(saved) if isinstance(saved, (int, float)) and not isinstance(saved, bool) else 0.0

    @staticmethod
    def _cached(entry: Any) -> CachedConfig:
        return CachedConfig(
            config=parse_config(entry["config"]),
            block=entry.get("block"),
            owner_hotkey=entry.get("owner_hotkey"),
            saved_at=LastKnownGood._saved_at(entry),
        )

    def load(self, key: ChainKey) -> CachedConfig | None:
        """The config last saved for this chain and subnet, None when there is none (or it is unreadable)."""
        entry = self._entries().get(key.id)
        if entry is None:
            return None
        try:
            return self._cached(entry)
        except (ValueError, KeyError, TypeError, AttributeError, StorageCoreError) as error:
            logger.error("ignoring unreadable config cache entry %s in %s: %s", key.id, self.path, error)
            return None

    def load_named(self, network: str, netuid: int) -> CachedConfig | None:
        """The newest entry saved for ``netuid`` of the named chain ``network`` (finney, test), for when its
        genesis hash cannot be read; None for any other label."""
        if network not in NAMED_CHAINS:
            return None
        matches = [entry for entry in self._entries().values()
                   if entry.get("network") == network and entry.get("netuid") == netuid]
        for entry in sorted(matches, key=self._saved_at, reverse=True):
            try:
                return self._cached(entry)
            except (ValueError, KeyError, TypeError, AttributeError, StorageCoreError):
                continue
        return None

    def save(self, key: ChainKey, reading: ChainReading) -> None:
        assert reading.config is not None
        entries = self._entries()
        entries[key.id] = {
            "genesis_hash": key.genesis_hash,
            "netuid": key.netuid,
            "network": key.network,
            "config": reading.config.to_dict(),
            "block": reading.block,
            "owner_hotkey": reading.owner_hotkey,
            "payload": reading.payload_text(),
            "saved_at": time.time(),
        }
        newest = sorted(entries, key=lambda name: self._saved_at(entries[name]), reverse=True)
        kept = {name: entries[name] for name in newest[: self.max_entries]}
        write_json_atomic(self.path, {"format": 2, "entries": kept}, sort_keys=True, indent=1)


def default_cache_path(netuid: int, network: str = "finney", environ: Mapping[str, str] | None = None) -> Path:
    """``$STORAGE_CORE_CONFIG_CACHE``, else in ``$STORAGE_CORE_STATE_DIR``, else ``~/.cache/storage-core``."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    name = f"chain-config-{network}-{netuid}.json"
    if env.get("STORAGE_CORE_STATE_DIR"):
        return Path(env["STORAGE_CORE_STATE_DIR"]) / name
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "storage-core" / name


# --------------------------------------------------------------------------- the source


class ConfigSource:
    """The effective config of one node, refreshed from the chain; thread-safe.

    ``current()`` returns the last resolved config (resolving once on first use); ``refresh()`` reads the
    chain now; ``start()``/``stop()`` run ``refresh()`` every ``interval`` seconds in a daemon thread.
    ``subtensor=None`` means no chain: environment and defaults only.
    """

    def __init__(
        self,
        subtensor: Any,
        netuid: int,
        *,
        cache_path: Path | str | None = None,
        fetcher: DocumentFetcher | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        interval: float | None = None,
    ) -> None:
        env = dict(os.environ if environ is None else environ)
        self.subtensor = subtensor
        self.netuid = netuid
        self.environ = env
        self.network = str(getattr(subtensor, "network", "none"))
        self.cache = LastKnownGood(cache_path or default_cache_path(netuid, self.network, env))
        self.fetcher = fetcher or DocumentFetcher(mirror=env.get(MIRROR_ENV) or None)
        self.overrides = dict(overrides or {})
        self.interval = float(interval if interval is not None else env.get(POLL_ENV, DEFAULT_POLL_SECONDS))
        self.last_reading: ChainReading | None = None
        self._saved: tuple[StorageConfig, int | None] | None = None
        self._chain_key: ChainKey | None = None
        self._resolved: ResolvedConfig | None = None
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[ResolvedConfig], None]] = []

    # ----------------------------------------------------------------- resolution

    def chain_key(self) -> ChainKey | None:
        """This node's chain and subnet, for its cache. The genesis hash is read once; until it can be read, a
        named chain (finney, test) is keyed by its name and any other chain is not cached. A genesis that cannot
        be read never stops the config itself from being read."""
        if self._chain_key is None:
            from storage_core.chain.commitments import read_genesis_hash

            try:
                self._chain_key = ChainKey(read_genesis_hash(self.subtensor), self.netuid, self.network)
            except ChainError as error:
                if self.network in NAMED_CHAINS:
                    return ChainKey(f"network:{self.network}", self.netuid, self.network)
                logger.warning("cannot read the genesis hash of %s (%s): its config is not cached", self.network,
                               error)
                return None
        return self._chain_key

    def _last_known_good(self) -> CachedConfig | None:
        if self._chain_key is not None:
            return self.cache.load(self._chain_key)
        cached = self.cache.load_named(self.network, self.netuid)
        if cached is None and self.network not in NAMED_CHAINS:
            logger.warning("the genesis hash of %s is unknown, so no cached config can be matched to this chain",
                           self.network)
        return cached

    def _chain_layer(self) -> ConfigLayer | None:
        if self.subtensor is None:
            return None
        try:
            reading = read_chain_config(self.subtensor, self.netuid, self.fetcher)
        except ChainError as error:
            reading = ChainReading(self.netuid, "unreachable", error=str(error))
        key = self.chain_key() if reading.status != "unreachable" else self._chain_key
        self.last_reading = reading
        if reading.status == "ok":
            assert reading.config is not None
            if key is not None and self._saved != (reading.config, reading.block):
                self.cache.save(key, reading)
                self._saved = (reading.config, reading.block)
            return ConfigLayer("chain", reading.config.to_dict())
        if reading.status == "absent":
            logger.info("subnet %d owner %s has no config commitment; using environment/defaults",
                        self.netuid, reading.owner_hotkey)
            return None
        cached = self._last_known_good()
        if cached is None:
            logger.error("storage config on chain for subnet %d is unusable (%s) and no last known good config is "
                         "cached; using environment/defaults", self.netuid, reading.error)
            return None
        logger.error("storage config on chain for subnet %d is unusable (%s); keeping the last known good config "
                     "from block %s", self.netuid, reading.error, cached.block)
        return ConfigLayer("chain (last known good)", cached.config.to_dict())

    def _environment_layer(self) -> ConfigLayer | None:
        try:
            return environment_layer(self.environ)
        except (ConfigError, OSError) as error:
            logger.error("ignoring the storage config in the environment: %s", error)
            return None

    def refresh(self) -> ResolvedConfig:
        """Read the chain now and return the new effective config (one refresh at a time)."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> ResolvedConfig:
        layers = [default_layer()]
        env_layer = self._environment_layer()
        chain_layer = self._chain_layer()
        override = ConfigLayer("override", self.overrides) if self.overrides else None
        candidates = [env_layer, chain_layer]
        try:
            resolved = resolve([layer for layer in [*layers, *candidates, override] if layer is not None])
        except ConfigError as error:
            if env_layer is None:
                raise
            logger.error("the environment's storage config conflicts with the chain's (%s); ignoring the environment",
                         error)
            resolved = resolve([layer for layer in [*layers, chain_layer, override] if layer is not None])
        with self._lock:
            previous, self._resolved = self._resolved, resolved
            listeners = list(self._listeners)
        if previous is not None and previous.config != resolved.config:
            logger.info("storage config for subnet %d changed: %s", self.netuid, resolved.config.canonical_json())
            for listener in listeners:
                try:
                    listener(resolved)
                except Exception:  # a listener must not stop the poller
                    logger.exception("config change listener failed")
        return resolved

    def current(self) -> ResolvedConfig:
        with self._lock:
            resolved = self._resolved
        return resolved if resolved is not None else self.refresh()

    def on_change(self, listener: Callable[[ResolvedConfig], None]) -> None:
        """Call ``listener(resolved)`` after a refresh that changed the config."""
        with self._lock:
            self._listeners.append(listener)

    # ----------------------------------------------------------------- polling

    def start(self) -> ConfigSource:
        """Poll in a daemon thread every ``interval`` seconds (errors are logged, never raised)."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"storage-core-config-{self.netuid}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:
                logger.exception("storage config refresh failed; keeping the current config")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ConfigSource:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
