"""Which Hub failures are worth another try: 429 and 5xx answers and network errors.

The Hub rate-limits commits; the client retries some calls itself but not the commit, so every Hub call
the backend makes goes through the core's ``storage_core.backoff.Backoff`` with ``is_retryable``.
"""

from __future__ import annotations

from huggingface_hub.errors import HfHubHTTPError

from storage_core_huggingface.http_compat import TRANSPORT_ERRORS

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, HfHubHTTPError):
        return status_of(error) in RETRY_STATUSES
    return isinstance(error, (*TRANSPORT_ERRORS, ConnectionError, TimeoutError))
