"""Back-off around Hub calls: 429 and 5xx answers and network errors are retried, honouring Retry-After.

The Hub rate-limits commits; the client retries some calls itself but not the commit, so every Hub call
the backend makes goes through ``Backoff.call``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import attrs
from huggingface_hub.errors import HfHubHTTPError

from storage_core_huggingface.http_compat import TRANSPORT_ERRORS

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def retry_after_of(error: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), or None."""
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, HfHubHTTPError):
        return status_of(error) in RETRY_STATUSES
    return isinstance(error, (*TRANSPORT_ERRORS, ConnectionError, TimeoutError))


@attrs.frozen
class Backoff:
    """Retry policy: ``attempts`` tries, waits of Retry-After or ``base * 2**n``, each capped at ``cap``."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 120.0
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, repr=False)

    def wait_for(self, error: BaseException, attempt: int) -> float:
        retry_after = retry_after_of(error)
        wait = retry_after if retry_after is not None else self.base * (2 ** (attempt - 1))
        return min(wait, self.cap)

    def call(self, what: str, function: Callable[[], T]) -> T:
        """Run ``function``; on a retryable failure wait and try again, up to ``attempts`` times."""
        for attempt in range(1, self.attempts + 1):
            try:
                return function()
            except Exception as error:
                if not is_retryable(error) or attempt == self.attempts:
                    raise
                wait = self.wait_for(error, attempt)
                logger.warning("%s: %s (HTTP %s); retry %d/%d in %.1fs", what, type(error).__name__,
                               status_of(error), attempt, self.attempts - 1, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
