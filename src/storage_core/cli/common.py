"""Flags shared by storage-core commands, spelled as bittensor spells them."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

#: Exit codes of every storage-core command (the README has the table).
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the outcome is bad: a backend failed or is owed data, claims invalid, no config
EXIT_INPUT = 2  # bad flags or input: a missing or unreadable database, a bad document, a bad hotkey
EXIT_UNKNOWN = 3  # validate: nothing invalid, but some claims could not be validated
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class InputError(click.ClickException):
    """Bad input (database, document, hotkey): exit 2 in every command, like a usage error."""

    exit_code = EXIT_INPUT


def _apply(options: list[Callable[..., Any]], func: Callable[..., Any]) -> Callable[..., Any]:
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def chain_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--netuid``, ``--subtensor.network``, ``--subtensor.chain_endpoint``, ``--config-mirror``."""
    return _apply([
        click.option("--netuid", type=int, envvar="STORAGE_CORE_NETUID", help="Subnet id [env STORAGE_CORE_NETUID]."),
        click.option("--subtensor.network", "network", default=None,
                     help="finney, test, local, a ws(s):// URL, or devchain[:PATH] [env STORAGE_CORE_NETWORK]."),
        click.option("--subtensor.chain_endpoint", "chain_endpoint", default=None,
                     help="ws(s):// endpoint, or the state file of a devchain network."),
        click.option("--config-mirror", "mirror", type=click.Path(path_type=Path), default=None,
                     help="Local copy of a pointer config's document (a file, or a directory of <sha256>.json)."),
    ], func)


def wallet_options(hotkey_help: str = "Hotkey name.") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--wallet.name``, ``--wallet.hotkey``, ``--wallet.path``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return _apply([
            click.option("--wallet.name", "wallet_name", default="default", show_default=True,
                         help="Wallet (coldkey) name."),
            click.option("--wallet.hotkey", "wallet_hotkey", default="default", show_default=True, help=hotkey_help),
            click.option("--wallet.path", "wallet_path", default=None,
                         help="Wallets directory [default ~/.bittensor/wallets]."),
        ], func)

    return decorate


def need_netuid(netuid: int | None) -> int:
    if netuid is None:
        raise click.UsageError("--netuid is required (or set STORAGE_CORE_NETUID)")
    return netuid


def open_subtensor(network: str | None, chain_endpoint: str | None) -> Any:
    from storage_core.chain.subtensor import open_subtensor as _open

    return _open(network, chain_endpoint)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1d' or plain seconds -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


TIMEOUT_META = "storage_core.backend_timeout"


def _remember_timeout(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[TIMEOUT_META] = parse_duration(value)


def backend_timeout() -> float | None:
    """The ``--backend-timeout`` of the running command, if given (else the node reads the environment)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(TIMEOUT_META) if ctx is not None else None


def build_node(netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
               wallet_name: str, wallet_hotkey: str, wallet_path: str | None, state_dir: Path | None,
               require_config: bool = True) -> Any:
    """A StorageNode for CLI flags: the wallet's hotkey, the config from chain > env > defaults.

    With ``require_config``, a subnet whose owner published no config (and none in the environment) is an
    error naming the subnet, rather than a round run on built-in defaults.
    """
    import os

    from storage_core.chain.keys import load_wallet
    from storage_core.chain.source import MIRROR_ENV, ConfigSource, DocumentFetcher
    from storage_core.dispatch import TIMEOUT_ENV, default_timeout
    from storage_core.node import StorageNode, default_state_dir

    number = need_netuid(netuid)
    try:
        timeout_s = backend_timeout() or default_timeout()
    except ValueError as error:
        raise click.UsageError(f"${TIMEOUT_ENV}: {error}") from None
    wallet = load_wallet(wallet_name, wallet_hotkey, wallet_path)
    state = state_dir or default_state_dir(number)
    source = ConfigSource(open_subtensor(network, chain_endpoint), number,
                          cache_path=state / "config-cache.json",
                          fetcher=DocumentFetcher(mirror=mirror or os.environ.get(MIRROR_ENV) or None))
    resolved = source.refresh()
    if require_config and not has_config(resolved):
        reading = source.last_reading
        why = f" ({reading.error})" if reading is not None and reading.error else ""
        raise click.ClickException(
            f"subnet {number} has no storage config: nothing on chain{why} and nothing in the environment "
            "(STORAGE_CORE_CONFIG or STORAGE_CORE_<ID>_* variables)")
    return StorageNode(number, wallet, source=source, state_dir=state, timeout_s=timeout_s)


def has_config(resolved: Any) -> bool:
    """Whether a chain or environment layer gave anything (not just the built-in defaults)."""
    return any(origin != "default" for origin in resolved.sources.values())


def node_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Chain + wallet flags + ``--state-dir``, the set every node command takes."""
    func = click.option("--state-dir", type=click.Path(path_type=Path), default=None, envvar="STORAGE_CORE_STATE_DIR",
                        help="Spool, ledger and caches [default ~/.storage-core/netuid-N].")(func)
    func = click.option("--backend-timeout", default=None, expose_value=False, callback=_remember_timeout,
                        metavar="DURATION",
                        help="Time limit of one backend call, e.g. 90s, 15m [env STORAGE_CORE_BACKEND_TIMEOUT; "
                             "default 15m]. A call that hangs longer is abandoned and never blocks exit.")(func)
    return chain_options(wallet_options("Hotkey name of this miner or validator.")(func))
