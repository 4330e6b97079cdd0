"""Settings of the grant service: one bucket, its limits, and how to read them from the environment."""

from __future__ import annotations

import os
from typing import Any

import attrs

from storage_core.layout import check_hotkey
from storage_core.manifest.document import ManifestLimits
from storage_core_s3.protocol import S3_MAX_SINGLE_UPLOAD, S3_MIN_PART_SIZE

ADDRESSING_STYLES = ("path", "virtual", "auto")
UPLOAD_METHODS = ("post", "put")
ENV_PREFIX = "STORAGE_CORE_S3_"
GiB = 1024**3
#: The largest round manifest the core's default ``ManifestLimits`` accept (its prefix, header, chunk table
#: and URI index: ``storage_core.verify.manifest_index`` refuses anything larger).
DEFAULT_MAX_MANIFEST_BYTES = ManifestLimits().max_object_bytes


def _positive(_instance: object, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"grant setting {attribute.name!r} must be positive, got {value!r}")


def _not_negative(_instance: object, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"grant setting {attribute.name!r} must not be negative, got {value!r}")


@attrs.frozen
class GrantSettings:
    """Configuration of one grant service (one bucket)."""

    bucket: str
    service_hotkey: str  # the ss58 address every request must be signed *for* (receiver binding)
    endpoint_url: str | None = None  # None: AWS S3 for ``region``
    presign_endpoint_url: str | None = None  # the endpoint clients reach, when it differs (a proxy)
    region: str = "us-east-1"
    addressing_style: str = attrs.field(default="path", validator=attrs.validators.in_(ADDRESSING_STYLES))
    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    ticket_secret: bytes | None = attrs.field(default=None, repr=False)  # shared by every worker; derived if None
    upload_method: str = attrs.field(default="post", validator=attrs.validators.in_(UPLOAD_METHODS))
    freshness_window: float = attrs.field(default=60.0, validator=_positive)  # seconds back and ahead
    upload_grant_ttl: int = attrs.field(default=300, validator=_positive)
    multipart_grant_ttl: int = attrs.field(default=1800, validator=_positive)
    read_grant_ttl: int = attrs.field(default=900, validator=_positive)
    max_object_bytes: int = attrs.field(default=S3_MAX_SINGLE_UPLOAD, validator=_positive)
    max_single_upload_bytes: int = attrs.field(default=S3_MAX_SINGLE_UPLOAD, validator=_positive)
    max_manifest_bytes: int = attrs.field(default=DEFAULT_MAX_MANIFEST_BYTES, validator=_positive)  # per manifest grant
    min_part_size: int = attrs.field(default=S3_MIN_PART_SIZE, validator=_positive)
    max_keys: int = attrs.field(default=1000, validator=_positive)  # per listing page and per read grant
    max_body_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    rate_limit: float = 20.0  # tokens per second per hotkey (a request costs 1, plus its work); 0 disables
    rate_burst: int = 200
    # Work is charged in tokens of the same bucket: presigned URLs (parts, read keys) and bytes hashed.
    parts_per_token: int = attrs.field(default=10, validator=_positive)
    read_keys_per_token: int = attrs.field(default=50, validator=_positive)
    hashed_bytes_per_token: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    max_parts_per_grant: int = attrs.field(default=1000, validator=_positive)
    max_pending_uploads: int = attrs.field(default=8, validator=_positive)  # open multipart uploads per hotkey
    ticket_grace: int = attrs.field(default=900, validator=_positive)  # a ticket outlives its part URLs by this
    stale_sweep_interval: float = attrs.field(default=300.0, validator=_positive)  # seconds between bucket sweeps
    daily_quota_bytes: int = attrs.field(default=100 * GiB, validator=_not_negative)  # per hotkey per UTC day; 0: off
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # peers whose X-Forwarded-For counts
    path_prefix: str = ""  # a prefix a gateway strips before forwarding (clients sign the full path)

    def __attrs_post_init__(self) -> None:
        check_hotkey(self.service_hotkey)
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        if self.path_prefix and (not self.path_prefix.startswith("/") or self.path_prefix.endswith("/")):
            raise ValueError(f"path_prefix must start with '/' and not end with '/': {self.path_prefix!r}")

    @property
    def stale_upload_after(self) -> float:
        """Seconds after which a multipart upload can no longer be completed (its ticket expired)."""
        return self.multipart_grant_ttl + self.ticket_grace + 1


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> GrantSettings:
    """GrantSettings from ``STORAGE_CORE_S3_*`` variables (names in plugins/s3/README.md), then overrides."""
    env = dict(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name)
        return value if value not in (None, "") else None

    proxies = get("TRUSTED_PROXIES")
    values: dict[str, Any] = {
        "bucket": get("BUCKET"),
        "service_hotkey": get("SERVICE_HOTKEY"),
        "endpoint_url": get("ENDPOINT_URL"),
        "presign_endpoint_url": get("PRESIGN_ENDPOINT_URL"),
        "region": get("REGION"),
        "addressing_style": get("ADDRESSING_STYLE"),
        "access_key": get("ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": get("SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY") or None,
        "ticket_secret": (get("TICKET_SECRET") or "").encode() or None,
        "upload_method": get("UPLOAD_METHOD"),
        "path_prefix": get("PATH_PREFIX"),
        "trusted_proxies": tuple(p.strip() for p in proxies.split(",") if p.strip()) if proxies else None,
    }
    numbers = {
        "freshness_window": ("FRESHNESS_WINDOW", float),
        "upload_grant_ttl": ("UPLOAD_GRANT_TTL", int),
        "multipart_grant_ttl": ("MULTIPART_GRANT_TTL", int),
        "read_grant_ttl": ("READ_GRANT_TTL", int),
        "max_object_bytes": ("MAX_OBJECT_BYTES", int),
        "max_manifest_bytes": ("MAX_MANIFEST_BYTES", int),
        "max_keys": ("MAX_KEYS", int),
        "max_body_bytes": ("MAX_BODY_BYTES", int),
        "rate_limit": ("RATE_LIMIT", float),
        "rate_burst": ("RATE_BURST", int),
        "max_parts_per_grant": ("MAX_PARTS_PER_GRANT", int),
        "max_pending_uploads": ("MAX_PENDING_UPLOADS", int),
        "daily_quota_bytes": ("DAILY_QUOTA_BYTES", int),
    }
    for field, (name, kind) in numbers.items():
        raw = get(name)
        if raw is not None:
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a {kind.__name__}") from None
    values.update(overrides)
    values = {name: value for name, value in values.items() if value is not None}
    for required in ("bucket", "service_hotkey"):
        if required not in values:
            raise ValueError(f"{ENV_PREFIX}{required.upper()} is required")
    return GrantSettings(**values)
