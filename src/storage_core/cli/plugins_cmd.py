"""``storage-core plugins``: what backends are installed, loaded, active, and why not."""

from __future__ import annotations

import click

from storage_core.cli.output import print_json, print_table
from storage_core.config import StorageConfig, default_layer, environment_layer, resolve
from storage_core.plugins import DISABLED, FAILED, LOADED, PluginRecord, PluginRegistry


def plugin_status(record: PluginRecord, config: StorageConfig | None) -> str:
    """active / inactive by config / disabled / failed: reason."""
    if record.status == FAILED:
        return f"failed: {record.reason}"
    if record.status == DISABLED:
        return f"disabled ({record.reason})"
    if record.status != LOADED:
        return record.status
    entry = config.backends.get(record.name) if config else None
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
            "capabilities": sorted(r.descriptor.capabilities) if r.descriptor else [],
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


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(as_json: bool) -> None:
    """List installed backend plugins and their status (works even when one cannot be imported)."""
    registry = click.get_current_context().find_object(PluginRegistry) or PluginRegistry()
    records = registry.load_all()
    try:
        config: StorageConfig | None = resolve([default_layer(), environment_layer()]).config
    except Exception:  # the listing must work even with a bad config
        config = None
    rows = describe(records, config)
    if as_json:
        print_json(rows)
        return
    print_table(
        "storage-core backends",
        ["id", "package", "version", "api", "hooks", "status"],
        [
            [r["id"], r["package"], r["version"], r["api_version"],
             ", ".join(h.removeprefix("storage_") for h in r["hooks"] if h != "storage_backends"), r["status"]]
            for r in rows
        ],
    )
