"""``storage-core plugins``: what backends are installed, loaded, active, and why not."""

from __future__ import annotations

import os
from pathlib import Path

import click

from storage_core.cli.common import chain_options, has_config, open_subtensor
from storage_core.cli.output import print_json, print_table
from storage_core.config import StorageConfig, default_layer, environment_layer, resolve
from storage_core.plugins import DISABLED, FAILED, LOADED, PluginRecord, PluginRegistry

NO_CONFIG = "loaded (no config known: give --netuid to read the subnet's)"


def plugin_status(record: PluginRecord, config: StorageConfig | None) -> str:
    """active / inactive by config / disabled / failed: reason."""
    if record.status == FAILED:
        return f"failed: {record.reason}"
    if record.status == DISABLED:
        return f"disabled ({record.reason})"
    if record.status != LOADED:
        return record.status
    if config is None:
        return NO_CONFIG
    entry = config.backends.get(record.name)
    if entry is None:
        return "inactive by config (not configured)"
    if not entry.enabled:
        return "inactive by config (disabled)"
    if entry.rollout_percent == 0:
        return "inactive by config (rollout 0%)"
    return f"active (rollout {entry.rollout_percent}%)"


def describe(records: list[PluginRecord], config: StorageConfig | None) -> list[dict]:
    return [
        {
            "id": r.name,
            "package": r.package,
            "version": r.version,
            "module": r.value,
            "api_version": r.descriptor.api_version if r.descriptor else None,
            "capabilities": sorted(r.capabilities),  # from the hooks it implements, as the dispatcher sees it
            "hooks": list(r.hooks),
            "status": plugin_status(r, config),
            "loaded": r.status == LOADED,
            "reason": r.reason,
            "options": [
                {"name": o.name, "type": o.type, "required": o.required, "description": o.description}
                for o in (r.descriptor.options if r.descriptor else ())
            ],
        }
        for r in records
    ]


def effective_config(netuid: int | None, network: str | None, chain_endpoint: str | None,
                     mirror: Path | None) -> tuple[StorageConfig | None, str]:
    """The config a node would use (chain > environment > defaults) and where it came from; None when only the
    built-in defaults are known, so no status claims what a subnet's owner never said."""
    if netuid is not None:
        from storage_core.chain.source import MIRROR_ENV, ConfigSource, DocumentFetcher
        from storage_core.node import default_state_dir

        try:
            source = ConfigSource(open_subtensor(network, chain_endpoint), netuid,
                                  cache_path=default_state_dir(netuid) / "config-cache.json",
                                  fetcher=DocumentFetcher(mirror=mirror or os.environ.get(MIRROR_ENV) or None))
            resolved = source.refresh()
        except Exception as error:  # the listing must work even when the chain does not
            return None, f"subnet {netuid}: config unknown ({error})"
        return (resolved.config, f"subnet {netuid}") if has_config(resolved) else (None, f"subnet {netuid}: no config")
    try:
        resolved = resolve([default_layer(), environment_layer()])
    except Exception as error:  # a bad environment must not hide the plugins
        return None, f"environment config unusable ({error})"
    return (resolved.config, "environment") if has_config(resolved) else (None, "no config (no --netuid)")


@click.command("plugins")
@chain_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
                    as_json: bool) -> None:
    """List installed backend plugins and their status under the effective config (works even when one cannot
    be imported). With --netuid the status follows the subnet's config on chain."""
    registry = click.get_current_context().find_object(PluginRegistry) or PluginRegistry()
    records = registry.load_all()
    config, origin = effective_config(netuid, network, chain_endpoint, mirror)
    rows = describe(records, config)
    if as_json:
        print_json(rows)
        return
    print_table(
        f"storage-core backends (status from: {origin})",
        ["id", "package", "version", "api", "can", "status"],
        [
            [r["id"], r["package"], r["version"], r["api_version"], ", ".join(r["capabilities"]), r["status"]]
            for r in rows
        ],
    )
