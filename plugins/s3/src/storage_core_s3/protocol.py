"""The grant service's HTTP API: paths and the JSON messages both sides exchange.

Every ``POST`` under ``/v1`` is a ``btauth/1`` signed request (see ``storage_core.chain.http_auth``) bound
to the service's hotkey, with a JSON body decoded strictly (unknown fields are refused, so a typo never
silently changes a grant). Answers are JSON; errors are ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import msgspec

API_VERSION = 1
PATH_HEALTH = "/healthz"
PATH_INFO = "/v1/info"
PATH_UPLOAD = "/v1/upload/grant"
PATH_MULTIPART = "/v1/upload/multipart"
PATH_COMPLETE = "/v1/upload/multipart/complete"
PATH_ABORT = "/v1/upload/multipart/abort"
PATH_READ = "/v1/read/grant"

#: S3's own multipart limits (AWS, R2, MinIO and SeaweedFS share them).
S3_MAX_PARTS = 10_000
S3_MIN_PART_SIZE = 5 * 1024 * 1024
S3_MAX_PART_SIZE = 5 * 1024**3
S3_MAX_SINGLE_UPLOAD = 5 * 1024**3
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    pass


class UploadGrantRequest(_Request):
    """Ask to upload one chunk (or, with ``manifest_seq``, one round manifest) in one request.

    The server builds the key from the signer's hotkey: ``layout.object_key`` for a chunk,
    ``layout.manifest_key(hotkey, manifest_seq, sha256)`` for a manifest (which names no source or date).
    """

    sha256: str  # 64 lower-case hex characters: the whole file's sha256
    size: int  # exact size in bytes
    source: str = ""  # partition values: the only part of a chunk's key the client chooses (required for chunks)
    date: str = ""  # YYYY-MM-DD (required for chunks)
    manifest_seq: int | None = None  # a round manifest's round number: the grant is for the signer's manifest key


class MultipartGrantRequest(_Request):
    """Ask to upload one large chunk in parts of ``part_size`` bytes (the last part may be shorter)."""

    sha256: str
    size: int
    source: str
    date: str
    part_size: int
    part_sha256: list[str]  # hex sha256 of each part, in order


class CompletedPart(_Request):
    part_number: int
    etag: str
    sha256: str  # hex sha256 of the part, as granted


class CompleteRequest(_Request):
    """Finish a multipart upload; ``ticket`` is the one the multipart grant returned."""

    key: str
    upload_id: str
    ticket: str
    parts: list[CompletedPart]


class AbortRequest(_Request):
    key: str
    upload_id: str


class ReadGrantRequest(_Request):
    """A validator's read grant for one miner: a listing URL for one page, and GET URLs for ``keys``."""

    miner_hotkey: str
    list_page: bool = msgspec.field(default=True, name="list")
    continuation_token: str | None = None
    max_keys: int | None = None
    keys: list[str] = msgspec.field(default_factory=list)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
