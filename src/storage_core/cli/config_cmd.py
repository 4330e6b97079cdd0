"""``storage-core config get|set|rollout|check``: the subnet owner's view of the storage config on chain.

``set`` and ``rollout`` read the config currently on chain, change only what was asked, show the diff and
the exact bytes that will be committed, and ask before committing (``--yes`` skips the question,
``--dry-run`` commits nothing). Flags follow bittensor (``--wallet.name``, ``--subtensor.network``, ...)
and the subnet's integration guide (``--use_s3 true``, ``--bucket_name``, ``--rollout_percentage``, ...).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from storage_core.config import (
    COMMITMENT_FIELD_BYTES,
    COMMITMENT_LIMIT,
    DEFAULT_CONFIG,
    POLICIES,
    StorageConfig,
    check_options,
    decode_chain_payload,
    encode_for_chain,
    parse_config_json,
    split_commitment_fields,
)
from storage_core.cli.output import flatten
from storage_core.cli.common import chain_options as _chain_options
from storage_core.cli.common import EXIT_FAILED, InputError, has_config, need_netuid, open_subtensor, wallet_options
from storage_core.errors import ConfigError, StorageCoreError

logger = logging.getLogger(__name__)

# integration-guide flag -> (backend, field or option name)
GUIDE_FLAGS = {
    "use_s3": ("s3", "enabled"),
    "use_huggingface": ("huggingface", "enabled"),
    "bucket_name": ("s3", "options.bucket"),
    "auth_endpoint": ("s3", "options.grant_url"),
    "region": ("s3", "options.region"),
    "rollout_percentage": ("s3", "rollout_percent"),
}


def _wallet_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return wallet_options("Hotkey name: must be the subnet owner's hotkey.")(func)


def _commit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--pointer-url", default=None,
                     help="URL where the canonical JSON will be published; used when the compact form is too large."),
        click.option("--document-out", type=click.Path(path_type=Path), default=None,
                     help="Write the canonical JSON document here (publish it at --pointer-url)."),
        click.option("--dry-run", is_flag=True, help="Show what would be committed; commit nothing."),
        click.option("-y", "--yes", is_flag=True, help="Commit without asking."),
        click.option("--allow-unknown-backend", "allow_unknown", is_flag=True,
                     help="Add a backend no installed plugin provides (its options cannot be checked)."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def _fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


_need_netuid = need_netuid
_open = open_subtensor


def _fetcher(mirror: Path | None) -> Any:
    import os

    from storage_core.chain.source import MIRROR_ENV, DocumentFetcher

    return DocumentFetcher(mirror=mirror or os.environ.get(MIRROR_ENV) or None)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def config_diff(old: StorageConfig, new: StorageConfig) -> list[str]:
    """Changed leaf fields as ``path: old -> new`` lines."""
    before, after = flatten(old.to_dict()), flatten(new.to_dict())
    lines = []
    for path in sorted(set(before) | set(after)):
        if before.get(path, None) != after.get(path, None) or (path in before) != (path in after):
            left = _show(before[path]) if path in before else "(unset)"
            right = _show(after[path]) if path in after else "(unset)"
            lines.append(f"  {path}: {left} -> {right}")
    return lines


def _parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def apply_changes(config: StorageConfig, changes: list[tuple[str, str, Any]]) -> StorageConfig:
    """Apply ``(backend, field, value)`` changes; field is enabled, rollout_percent or options.<name>."""
    for backend, field, value in changes:
        if field.startswith("options."):
            config = config.evolve_backend(backend, options={field.removeprefix("options."): value})
        else:
            config = config.evolve_backend(backend, **{field: value})
    return config


def installed_specs() -> tuple[dict[str, Any], list[str]]:
    """Option specs of every installed plugin that loads (backend id -> specs), and every id installed at all."""
    from storage_core.plugins import PluginRegistry

    records = PluginRegistry().load_all()
    return {r.name: r.descriptor.options for r in records if r.descriptor}, [r.name for r in records]


def check_against_plugins(current: StorageConfig, new: StorageConfig, allow_unknown: bool) -> StorageConfig:
    """Refuse a change the installed plugins reject (option names, types, required options, secrets on chain).

    Problems of backends this command does not change are warnings (they are on chain already); a backend no
    installed plugin provides is refused when newly added unless ``allow_unknown``.
    """
    specs, installed = installed_specs()
    checked, problems, warnings = check_options(new, specs, installed)
    touched = {b for b in new.backends if new.backends[b] != current.backends.get(b)}
    errors = [p for p in problems if p.field.split(".")[1] in touched]
    warnings += [f"{p.field}: {p.problem} (already so before this change)" for p in problems if p not in errors]
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    added = sorted(b for b in new.backends if b not in specs and b not in current.backends)
    if added and not allow_unknown:
        errors.append(ConfigError(f"backends.{added[0]}", "no installed plugin provides this backend; install its "
                                                          "plugin to check it, or pass --allow-unknown-backend"))
    if errors:
        raise InputError("the config would break nodes; nothing committed:\n" +
                         "\n".join(f"  {error.field}: {error.problem}" for error in errors))
    return checked


def rollout_warnings(current: StorageConfig, new: StorageConfig) -> list[str]:
    """A lowered rollout drops miners from a backend: validators stop looking for their data there."""
    lines = []
    for name, entry in sorted(new.backends.items()):
        before = current.backends.get(name)
        if before is not None and entry.rollout_percent < before.rollout_percent:
            lines.append(f"rollout of {name} lowered from {before.rollout_percent}% to {entry.rollout_percent}%: "
                         "miners above the new position stop writing there and validators stop checking it for "
                         "them; their rows there are no longer looked at")
        if before is not None and before.enabled and not entry.enabled:
            lines.append(f"{name} switched off: validators stop checking it; rows only there can no longer be "
                         "validated")
    return lines


def _current_config(subtensor: Any, netuid: int, mirror: Path | None, replace: bool) -> tuple[StorageConfig, Any]:
    from storage_core.chain.source import read_chain_config

    reading = read_chain_config(subtensor, netuid, _fetcher(mirror))
    if reading.status == "ok" and reading.config is not None:
        return reading.config, reading
    if reading.status == "absent":
        click.echo(f"subnet {netuid} has no storage config on chain yet; starting from the built-in defaults")
        return DEFAULT_CONFIG, reading
    if replace:
        click.echo(f"the config on chain is unusable ({reading.error}); --replace: starting from the defaults")
        return DEFAULT_CONFIG, reading
    raise click.ClickException(
        f"the config on chain cannot be used: {reading.error}\n"
        "Fix it with --document FILE, or pass --replace to start from the built-in defaults."
    )


def _load_signer(wallet_name: str, wallet_hotkey: str, wallet_path: str | None) -> Any:
    from storage_core.chain.keys import load_wallet

    return load_wallet(wallet_name, wallet_hotkey, wallet_path)


def _publish(
    *,
    netuid: int | None,
    network: str | None,
    chain_endpoint: str | None,
    mirror: Path | None,
    wallet: tuple[str, str, str | None],
    change: Callable[[StorageConfig], StorageConfig],
    pointer_url: str | None,
    document_out: Path | None,
    dry_run: bool,
    yes: bool,
    replace: bool = False,
    allow_unknown: bool = False,
) -> None:
    """Shared body of ``set`` and ``rollout``: read, change, check against the plugins, show, confirm, commit."""
    from storage_core.chain.commitments import commit_payload, read_owner_hotkey
    from storage_core.chain.keys import hotkey_address

    netuid = _need_netuid(netuid)
    try:
        subtensor = _open(network, chain_endpoint)
        current, reading = _current_config(subtensor, netuid, mirror, replace)
        new = check_against_plugins(current, change(current), allow_unknown)
        payload = encode_for_chain(new, pointer_url)
        owner = read_owner_hotkey(subtensor, netuid)
    except StorageCoreError as error:
        raise _fail(error) from error

    diff = config_diff(current, new)
    click.echo(f"subnet {netuid}, owner hotkey {owner}")
    click.echo("changes:" if diff else "changes: none")
    for line in diff:
        click.echo(line)
    for warning in rollout_warnings(current, new):
        click.echo(f"warning: {warning}", err=True)
    data = payload.encode()
    chunks = split_commitment_fields(payload)
    click.echo(f"commitment ({len(data)} of {COMMITMENT_LIMIT} bytes, {len(chunks)} Raw field(s) of at most "
               f"{COMMITMENT_FIELD_BYTES}):")
    for index, chunk in enumerate(chunks, 1):
        click.echo(f"  field {index} Raw{len(chunk)}: {chunk.decode()}")
    if payload.startswith("sc1p;"):
        click.echo(f"pointer: nodes will fetch {pointer_url} and accept it only if its sha256 is {new.sha256()}")
    if document_out is not None:
        document_out.write_text(new.canonical_json())
        click.echo(f"wrote the canonical document ({new.sha256()}) to {document_out}")
    if reading.payload is not None and reading.payload == data:
        click.echo("the chain already holds exactly this commitment; nothing to do")
        return
    if dry_run:
        click.echo("dry run: nothing committed")
        return

    try:
        signer = _load_signer(*wallet)
    except StorageCoreError as error:
        raise _fail(error) from error
    hotkey = hotkey_address(signer)
    if hotkey != owner:
        raise click.ClickException(
            f"wallet hotkey {hotkey} is not the owner hotkey {owner} of subnet {netuid}: nodes read only the "
            "owner's commitment. Use --wallet.name/--wallet.hotkey of the owner."
        )
    if not yes:
        click.confirm(f"Commit this to subnet {netuid} as {hotkey}?", abort=True)
    try:
        receipt = commit_payload(subtensor, netuid, signer, payload)
    except StorageCoreError as error:
        raise _fail(error) from error
    click.echo(f"committed: extrinsic {receipt.extrinsic_id} in block {receipt.block_hash}")


# --------------------------------------------------------------------------- commands


@click.group("config")
def config_group() -> None:
    """Read and publish the subnet's storage config (the owner's commitment on chain)."""


@config_group.command("get")
@_chain_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
              help="Last-known-good cache file [env STORAGE_CORE_CONFIG_CACHE].")
def get_command(
    netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None, as_json: bool,
    cache_path: Path | None,
) -> None:
    """Print the effective config and where each value came from (chain, environment, default).

    Exits 1 when the subnet has no config (nothing on chain, nothing in the environment): the values shown are
    then only the built-in defaults.
    """
    from storage_core.chain.source import ConfigSource

    netuid = _need_netuid(netuid)
    try:
        subtensor = _open(network, chain_endpoint)
        source = ConfigSource(subtensor, netuid, cache_path=cache_path, fetcher=_fetcher(mirror))
        resolved = source.refresh()
    except StorageCoreError as error:
        raise _fail(error) from error
    reading = source.last_reading
    flat = flatten(resolved.config.to_dict())
    chain = {
        "status": reading.status if reading else "none",
        "owner_hotkey": reading.owner_hotkey if reading else None,
        "block": reading.block if reading else None,
        "payload": reading.payload_text() if reading else None,
        "pointer": {"sha256": reading.pointer.sha256, "url": reading.pointer.url} if reading and reading.pointer else None,
        "error": reading.error if reading else None,
    }
    if as_json:
        click.echo(json.dumps({
            "netuid": netuid,
            "network": str(getattr(subtensor, "network", "")),
            "chain": chain,
            "config": resolved.config.to_dict(),
            "sources": {path: resolved.source_of(path) for path in flat},
        }, indent=2, sort_keys=True))
        _exit_without_config(netuid, resolved)
        return
    click.echo(f"subnet {netuid}: owner hotkey {chain['owner_hotkey']}, chain config: {chain['status']}"
               + (f" (block {chain['block']})" if chain["block"] is not None else ""))
    if chain["error"]:
        click.echo(f"chain problem: {chain['error']}")
    if chain["payload"]:
        click.echo(f"commitment: {chain['payload']}")
    width = max(len(path) for path in flat)
    for path, value in sorted(flat.items()):
        click.echo(f"{path.ljust(width)}  {_show(value)}  [{resolved.source_of(path)}]")
    _exit_without_config(netuid, resolved)


def _exit_without_config(netuid: int, resolved: Any) -> None:
    if not has_config(resolved):
        click.echo(f"subnet {netuid} has no storage config: nothing on chain and nothing in the environment "
                   "(only the built-in defaults)", err=True)
        raise SystemExit(EXIT_FAILED)


@config_group.command("set")
@_chain_options
@_wallet_options
@click.option("--use_s3", type=click.BOOL, default=None, help="Enable/disable the s3 backend (true/false).")
@click.option("--use_huggingface", type=click.BOOL, default=None, help="Enable/disable the huggingface backend.")
@click.option("--bucket_name", default=None, help="s3 bucket (option s3.bucket).")
@click.option("--auth_endpoint", default=None, help="s3 grant service URL (option s3.grant_url).")
@click.option("--region", default=None, help="s3 region (option s3.region).")
@click.option("--rollout_percentage", type=float, default=None, help="s3 rollout percentage (0..100).")
@click.option("--backend", "backend", default="s3", show_default=True, help="Backend that --set applies to.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Set enabled, rollout_percent or an option of --backend; repeatable.")
@click.option("--unset", "unset", multiple=True, metavar="OPTION",
              help="Remove an option of --backend (nodes use the plugin's default); repeatable.")
@click.option("--remove-backend", "remove", multiple=True, metavar="ID",
              help="Remove a backend from the config (and from the fallback order); repeatable.")
@click.option("--policy", type=click.Choice(POLICIES), default=None, help="Validation policy.")
@click.option("--fallback-order", default=None, help="Comma-separated backend ids.")
@click.option("--document", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Start from this JSON document instead of the config on chain.")
@click.option("--replace", is_flag=True, help="If the config on chain is unusable, start from the defaults.")
@_commit_options
def set_command(**kwargs: Any) -> None:
    """Change the config on chain: only the fields given change."""
    changes: list[tuple[str, str, Any]] = []
    for flag, (backend, field) in GUIDE_FLAGS.items():
        if kwargs[flag] is not None:
            changes.append((backend, field, kwargs[flag]))
    for setting in kwargs["settings"]:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set expects KEY=VALUE, got {setting!r}")
        field = key if key in ("enabled", "rollout_percent") else f"options.{key}"
        parsed = _parse_value(value)
        if field == "enabled" and not isinstance(parsed, bool):
            raise click.UsageError(f"--set enabled= expects true or false, got {value!r}")
        changes.append((kwargs["backend"], field, parsed))
    document: StorageConfig | None = None
    if kwargs["document"] is not None:
        try:
            document = parse_config_json(kwargs["document"].read_bytes())
        except StorageCoreError as error:
            raise click.ClickException(f"{kwargs['document']}: {error}") from error
    policy, order = kwargs["policy"], kwargs["fallback_order"]
    unset, remove = kwargs["unset"], kwargs["remove"]
    if not changes and document is None and policy is None and order is None and not unset and not remove:
        raise click.UsageError("nothing to set: give --use_s3, --rollout_percentage, --set KEY=VALUE, --unset, "
                               "--remove-backend, --document, ...")

    def change(current: StorageConfig) -> StorageConfig:
        config = apply_changes(document or current, changes)
        data = config.to_dict()
        for name in unset:
            options = data["backends"].get(kwargs["backend"], {}).get("options", {})
            if name not in options:
                raise click.UsageError(f"backend {kwargs['backend']!r} has no option {name!r} to unset")
            del options[name]
        for name in remove:
            if name not in data["backends"]:
                raise click.UsageError(f"the config has no backend {name!r} to remove")
            if name in DEFAULT_CONFIG.backends:  # nodes merge the defaults below the chain: it would come back
                raise click.UsageError(f"{name!r} is in the built-in defaults, so nodes would put it back; switch "
                                       f"it off instead: --backend {name} --set enabled=false")
            del data["backends"][name]
            data["fallback_order"] = [b for b in data["fallback_order"] if b != name]
        if policy is not None:
            data["validation_policy"] = policy
        if order is not None:
            data["fallback_order"] = [name.strip() for name in order.split(",") if name.strip()]
        from storage_core.config import parse_config

        return parse_config(data)

    _publish(
        netuid=kwargs["netuid"], network=kwargs["network"], chain_endpoint=kwargs["chain_endpoint"],
        mirror=kwargs["mirror"], wallet=(kwargs["wallet_name"], kwargs["wallet_hotkey"], kwargs["wallet_path"]),
        change=change, pointer_url=kwargs["pointer_url"], document_out=kwargs["document_out"],
        dry_run=kwargs["dry_run"], yes=kwargs["yes"], replace=kwargs["replace"] or document is not None,
        allow_unknown=kwargs["allow_unknown"],
    )


@config_group.command("rollout")
@_chain_options
@_wallet_options
@click.option("--percentage", type=float, required=True, help="New rollout percentage (0..100).")
@click.option("--backend", default="s3", show_default=True, help="Backend to roll out.")
@_commit_options
def rollout_command(percentage: float, backend: str, **kwargs: Any) -> None:
    """Move one backend's rollout percentage; miners selected before stay selected."""

    def change(current: StorageConfig) -> StorageConfig:
        if backend not in current.backends:
            click.echo(f"note: backend {backend!r} is not in the config yet; adding it disabled")
        new = current.evolve_backend(backend, rollout_percent=percentage)
        if not new.backends[backend].enabled:
            click.echo(f"warning: backend {backend!r} is disabled; enable it with `config set --backend {backend} "
                       "--set enabled=true` for the rollout to take effect")
        return new

    _publish(
        netuid=kwargs["netuid"], network=kwargs["network"], chain_endpoint=kwargs["chain_endpoint"],
        mirror=kwargs["mirror"], wallet=(kwargs["wallet_name"], kwargs["wallet_hotkey"], kwargs["wallet_path"]),
        change=change, pointer_url=kwargs["pointer_url"], document_out=kwargs["document_out"],
        dry_run=kwargs["dry_run"], yes=kwargs["yes"], allow_unknown=kwargs["allow_unknown"],
    )


@config_group.command("check")
@_chain_options
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check a JSON config document.")
@click.option("--payload", default=None, help="Check a commitment string (compact config or pointer).")
@click.option("--pointer-url", default=None, help="With --file: the URL a pointer would name if it is too large.")
def check_command(
    netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
    file: Path | None, payload: str | None, pointer_url: str | None,
) -> None:
    """Validate a document, a commitment string, or (with neither) the config on chain."""
    from storage_core.chain.source import decode_reading, read_chain_config

    try:
        if file is not None:
            try:
                config = parse_config_json(file.read_bytes())
            except StorageCoreError as error:
                raise click.ClickException(f"{file}: {error}") from error
            encoded = encode_for_chain(config, pointer_url)
            click.echo(f"{file}: valid (sha256 {config.sha256()})")
            click.echo(f"commitment ({len(encoded.encode())} of {COMMITMENT_LIMIT} bytes): {encoded}")
            return
        if payload is not None:
            decoded = decode_chain_payload(payload)
            reading = decode_reading(netuid or 0, "", 0, payload.encode(), _fetcher(mirror)) \
                if not isinstance(decoded, StorageConfig) else None
            if reading is not None and reading.status != "ok":
                raise click.ClickException(str(reading.error))
            click.echo(f"payload: valid ({len(payload.encode())} bytes)")
            return
        netuid = _need_netuid(netuid)
        reading = read_chain_config(_open(network, chain_endpoint), netuid, _fetcher(mirror))
    except StorageCoreError as error:
        raise _fail(error) from error
    if reading.status == "invalid":
        raise click.ClickException(f"subnet {netuid}: the config on chain is unusable: {reading.error}")
    if reading.status == "absent":
        click.echo(f"subnet {netuid}: owner {reading.owner_hotkey} has no config commitment (defaults apply)")
        return
    sha = reading.config.sha256() if reading.config is not None else "?"
    click.echo(f"subnet {netuid}: the config on chain is valid (block {reading.block}, sha256 {sha})")
