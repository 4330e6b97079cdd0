"""``storage-core s3 serve``: run the grant service (added to the CLI through ``storage_register_commands``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from storage_core.errors import StorageCoreError

log = logging.getLogger(__name__)


class _JsonLines(logging.Formatter):
    """One JSON object per line: grant events as they are, other records wrapped."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "grant_event", None)
        if event is None:
            event = {"event": "log", "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                event["exception"] = self.formatException(record.exc_info)
        return json.dumps({"time": round(record.created, 3), **event}, sort_keys=True, default=str)


@click.group("s3")
def s3_group() -> None:
    """The S3 backend: its grant service."""


@s3_group.command("serve")
@click.option("--bucket", envvar="STORAGE_CORE_S3_BUCKET", required=True, help="Bucket holding every miner's prefix [env STORAGE_CORE_S3_BUCKET].")
@click.option("--endpoint-url", envvar="STORAGE_CORE_S3_ENDPOINT_URL", default=None,
              help="S3 endpoint (empty: AWS); e.g. https://<account>.r2.cloudflarestorage.com [env STORAGE_CORE_S3_ENDPOINT_URL].")
@click.option("--presign-endpoint-url", envvar="STORAGE_CORE_S3_PRESIGN_ENDPOINT_URL", default=None,
              help="Endpoint written into presigned URLs when clients reach S3 by another address.")
@click.option("--region", envvar="STORAGE_CORE_S3_REGION", default="us-east-1", show_default=True)
@click.option("--addressing-style", envvar="STORAGE_CORE_S3_ADDRESSING_STYLE", type=click.Choice(["path", "virtual", "auto"]),
              default="path", show_default=True)
@click.option("--upload-method", type=click.Choice(["post", "put"]), default="post", show_default=True,
              help="Presigned POST with a policy (AWS, MinIO, SeaweedFS) or presigned PUT with signed headers (R2).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep loopback behind a gateway).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--service-hotkey", default=None, help="ss58 address requests must be signed for (published to clients).")
@click.option("--wallet.name", "wallet_name", default=None, help="Take the service hotkey from this wallet...")
@click.option("--wallet.hotkey", "wallet_hotkey", default="default", show_default=True, help="...and this hotkey name.")
@click.option("--wallet.path", "wallet_path", default=None, help="Wallets directory [default ~/.bittensor/wallets].")
@click.option("--netuid", type=int, envvar="STORAGE_CORE_NETUID", default=None, help="Subnet whose members get grants (chain membership).")
@click.option("--subtensor.network", "network", default=None, help="finney, test, local, a ws(s):// URL or devchain[:PATH].")
@click.option("--subtensor.chain_endpoint", "chain_endpoint", default=None)
@click.option("--membership-refresh", type=float, default=60.0, show_default=True, help="Seconds between re-reads of the subnet.")
@click.option("--allow-miner", multiple=True, help="Development: a hotkey allowed to upload (repeatable); no chain is read.")
@click.option("--allow-validator", multiple=True, help="Development: a hotkey allowed to read (repeatable).")
@click.option("--allowlist", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help='Development: JSON file {"miners": [...], "validators": [...]}.')
@click.option("--freshness-window", type=float, default=60.0, show_default=True, help="Seconds a signed request stays valid (both ways).")
@click.option("--upload-ttl", type=int, default=300, show_default=True, help="Seconds an upload grant stays valid.")
@click.option("--multipart-ttl", type=int, default=1800, show_default=True, help="Seconds multipart part URLs stay valid.")
@click.option("--read-ttl", type=int, default=900, show_default=True, help="Seconds a validator's read grant stays valid.")
@click.option("--max-object-bytes", type=int, default=5 * 1024**3, show_default=True)
@click.option("--max-body-bytes", type=int, default=64 * 1024, show_default=True, help="Largest grant request body.")
@click.option("--rate-limit", type=float, default=20.0, show_default=True, help="Requests per second per hotkey (0: off).")
@click.option("--rate-burst", type=int, default=200, show_default=True)
@click.option("--max-parts-per-grant", type=int, default=1000, show_default=True, help="Most parts one multipart grant signs.")
@click.option("--max-pending-uploads", type=int, default=8, show_default=True, help="Open multipart uploads per hotkey.")
@click.option("--daily-quota-bytes", type=int, default=100 * 1024**3, show_default=True,
              help="Bytes each hotkey may be granted per UTC day (0: no quota).")
@click.option("--trusted-proxy", multiple=True, envvar="STORAGE_CORE_S3_TRUSTED_PROXIES",
              help="Peer address whose X-Forwarded-For is believed (repeatable; default: none).")
@click.option("--nonce-db", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="SQLite file for replay protection shared by several workers on this host.")
@click.option("--path-prefix", default="", help="Path prefix a gateway strips before forwarding (e.g. /s3-grants).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--check", "check_only", is_flag=True, help="Build the service, print its settings (no secrets) and exit.")
def serve_command(**params: Any) -> None:
    """Run the grant service under uvicorn.

    Bucket credentials come from STORAGE_CORE_S3_ACCESS_KEY / STORAGE_CORE_S3_SECRET_KEY, the AWS_*
    variables or boto3's usual chain; they are never accepted as flags.
    """
    import uvicorn

    from storage_core_s3.grants import create_app, settings_from_env
    from storage_core_s3.membership import chain_membership, static_membership
    from storage_core_s3.nonces import SqliteNonceStore

    service_hotkey = _service_hotkey(params)
    try:
        settings = settings_from_env(
            bucket=params["bucket"],
            service_hotkey=service_hotkey,
            endpoint_url=params["endpoint_url"],
            presign_endpoint_url=params["presign_endpoint_url"],
            region=params["region"],
            addressing_style=params["addressing_style"],
            upload_method=params["upload_method"],
            freshness_window=params["freshness_window"],
            upload_grant_ttl=params["upload_ttl"],
            multipart_grant_ttl=params["multipart_ttl"],
            read_grant_ttl=params["read_ttl"],
            max_object_bytes=params["max_object_bytes"],
            max_body_bytes=params["max_body_bytes"],
            rate_limit=params["rate_limit"],
            rate_burst=params["rate_burst"],
            path_prefix=params["path_prefix"],
            max_parts_per_grant=params["max_parts_per_grant"],
            max_pending_uploads=params["max_pending_uploads"],
            daily_quota_bytes=params["daily_quota_bytes"],
            trusted_proxies=tuple(params["trusted_proxy"]),
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None

    static = params["allow_miner"] or params["allow_validator"] or params["allowlist"]
    if static and params["netuid"] is not None:
        raise click.UsageError("use either --netuid (chain membership) or --allow-miner/--allow-validator/--allowlist, not both")
    if static:
        membership: Any = static_membership(params["allow_miner"], params["allow_validator"], params["allowlist"])
        membership_text = f"static: {len(membership.registered)} miners, {len(membership.validators)} validators"
    elif params["netuid"] is not None:
        membership = chain_membership(params["netuid"], params["network"], params["chain_endpoint"], params["membership_refresh"])
        membership_text = f"chain: netuid {params['netuid']} on {params['network'] or 'the default network'}"
    else:
        raise click.UsageError("say who may get grants: --netuid N (chain) or --allow-miner/--allow-validator/--allowlist")

    nonce_store = None
    if params["nonce_db"] is not None:
        nonce_store = SqliteNonceStore(params["nonce_db"], retention=2 * settings.freshness_window + 10)
    app = create_app(settings, membership, nonce_store=nonce_store)
    summary = {
        "bucket": settings.bucket,
        "endpoint_url": settings.endpoint_url or "AWS",
        "region": settings.region,
        "addressing_style": settings.addressing_style,
        "upload_method": settings.upload_method,
        "service_hotkey": settings.service_hotkey,
        "membership": membership_text,
        "nonce_store": str(params["nonce_db"]) if params["nonce_db"] else "memory (one worker)",
        "listen": f"http://{params['host']}:{params['port']}",
        "credentials": "configured" if settings.access_key else "boto3 default chain",
        "trusted_proxies": list(settings.trusted_proxies),
        "daily_quota_bytes": settings.daily_quota_bytes,
    }
    if params["check_only"]:
        click.echo(json.dumps(summary, indent=2))
        return
    _configure_logging(params["log_level"])
    log.info("grant service starting: %s", json.dumps(summary, sort_keys=True))
    # uvicorn's proxy headers stay off: the app believes X-Forwarded-For only from --trusted-proxy peers.
    uvicorn.run(app, host=params["host"], port=params["port"], log_level="warning", access_log=False,
                proxy_headers=False)


def _service_hotkey(params: dict[str, Any]) -> str:
    if params["service_hotkey"] and params["wallet_name"]:
        raise click.UsageError("use either --service-hotkey or --wallet.name, not both")
    if params["service_hotkey"]:
        return str(params["service_hotkey"])
    if params["wallet_name"]:
        from storage_core.chain.keys import hotkey_address, load_wallet

        try:
            return hotkey_address(load_wallet(params["wallet_name"], params["wallet_hotkey"], params["wallet_path"]))
        except StorageCoreError as error:
            raise click.UsageError(str(error)) from None
    from storage_core.chain.keys import new_keypair

    address = str(new_keypair().ss58_address)
    click.echo(
        f"warning: no --service-hotkey or --wallet.name; requests must be signed for the ephemeral {address} "
        "(clients read it from /v1/info; pin a stable one in production)",
        err=True,
    )
    return address


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    for name in ("storage_core_s3", "storage_core"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def register(cli: Any) -> None:
    """Attach ``s3`` to the ``storage-core`` group (or merge ``serve`` into an existing ``s3`` group)."""
    existing = cli.commands.get("s3") if hasattr(cli, "commands") else None
    if isinstance(existing, click.Group):
        existing.add_command(serve_command)
    else:
        cli.add_command(s3_group)
