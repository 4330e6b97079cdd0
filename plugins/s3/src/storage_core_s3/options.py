"""The S3 backend's options (``backends.s3.options`` in the storage config): declared here, typed by the core
(``storage_core.options``), with S3's own ranges checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from storage_core.layout import check_hotkey
from storage_core.options import OptionError, at_least, one_of, option_field, parse_options
from storage_core.values import BackendContext, OptionSpec

MiB = 1024 * 1024
CHECKSUM_CHECKS = ("recorded", "full", "off")
ADDRESSING_STYLES = ("path", "virtual", "auto")

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("bucket", required=True, description="bucket that holds every miner's prefix"),
    OptionSpec("grant_url", required=True, description="base URL of the grant service (https:// in production)"),
    OptionSpec("grant_hotkey", description="ss58 hotkey the grant service signs for; read from its /v1/info when unset"),
    OptionSpec("region", default="us-east-1", description="S3 region of the bucket"),
    OptionSpec("endpoint_url", description="S3 endpoint for the grant service (empty: AWS; R2, Spaces, MinIO, SeaweedFS URL)"),
    OptionSpec("addressing_style", default="path", description="S3 addressing style for the grant service: path, virtual or auto"),
    OptionSpec("connect_timeout", type="float", default=10.0, description="seconds to open a connection"),
    OptionSpec("read_timeout", type="float", default=120.0, description="seconds without data before a request fails"),
    OptionSpec("concurrency", type="int", default=4, description="objects (and parts) transferred at once"),
    OptionSpec("max_attempts", type="int", default=5, description="tries per request on throttling, 5xx and connection errors"),
    OptionSpec("backoff_base", type="float", default=0.5, description="first back-off delay in seconds (doubles, with jitter)"),
    OptionSpec("backoff_max", type="float", default=20.0, description="longest back-off delay in seconds"),
    OptionSpec("multipart_threshold", type="int", default=64 * MiB, description="files of this many bytes or more go up in parts"),
    OptionSpec("part_size", type="int", default=16 * MiB, description="bytes per multipart part (at least 5 MiB)"),
    OptionSpec("page_size", type="int", default=1000, description="keys per listing page when validating (1..1000)"),
    OptionSpec("checksum_check", default="recorded",
               description="validation checksum: recorded (the store's sha256 from response headers; objects without "
                           "one are hashed in full), full (always hash objects in full), off (same as recorded: the core "
                           "always checks names)"),
)

BACKEND_ID = "s3"


def _bad(name: str, problem: str) -> OptionError:
    return OptionError(option_field(BACKEND_ID, name), problem)


@attrs.frozen
class S3Options:
    """Client-side options of the S3 backend."""

    bucket: str
    grant_url: str
    grant_hotkey: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    addressing_style: str = "path"
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    concurrency: int = 4
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    page_size: int = 1000
    checksum_check: str = "recorded"

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> S3Options:
        """Typed by the core from ``OPTION_SPECS`` (defaults, one spelling of booleans, URLs, bucket names); the
        ranges below are S3's own. OptionError (a non-retryable BackendError) names the option."""
        values = parse_options(BACKEND_ID, OPTION_SPECS, options)
        if values["grant_hotkey"]:
            try:
                check_hotkey(values["grant_hotkey"])
            except ValueError as error:
                raise _bad("grant_hotkey", str(error)) from None
        for name in ("connect_timeout", "read_timeout", "backoff_max", "concurrency", "max_attempts", "multipart_threshold"):
            if values[name] <= 0:
                raise _bad(name, f"must be positive, got {values[name]!r}")
        at_least(BACKEND_ID, "backoff_base", values["backoff_base"], 0)
        if values["part_size"] < 5 * MiB:
            raise _bad("part_size", f"must be at least 5 MiB (5242880), got {values['part_size']}")
        if not 1 <= values["page_size"] <= 1000:
            raise _bad("page_size", f"must be between 1 and 1000, got {values['page_size']}")
        one_of(BACKEND_ID, "checksum_check", values["checksum_check"], CHECKSUM_CHECKS)
        one_of(BACKEND_ID, "addressing_style", values["addressing_style"], ADDRESSING_STYLES)
        values["grant_url"] = str(values["grant_url"]).rstrip("/")
        return cls(**values)

    @classmethod
    def from_context(cls, context: BackendContext) -> S3Options:
        return cls.from_mapping(dict(context.options))
