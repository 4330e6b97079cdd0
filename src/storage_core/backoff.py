"""One retry policy for every backend: exponential back-off with full jitter, honouring Retry-After.

Full jitter (each wait drawn uniformly between 0 and ``base * 2**n``, capped) spreads out the retries of many
miners that failed at the same moment, so a store that throttled them is not hit again by all of them at once.
A server that says when to come back (``Retry-After`` on a 429 or 503, in seconds or as an HTTP date) is
believed, up to ``max_retry_after``: a proxy's "come back in an hour" must not stall a round. A backend decides
only which of its errors are worth retrying; the waiting, the counting and the logging are here.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses worth another try: time-outs, throttling and server errors.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds ("7") or an HTTP date; None when absent or
    unreadable. A date in the past means "now" (0)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def status_of(error: BaseException) -> int | None:
    """The HTTP status an error carries: its own ``status`` or ``status_code``, or its ``response``'s."""
    for holder in (error, getattr(error, "response", None)):
        for name in ("status", "status_code"):
            status = getattr(holder, name, None)
            if isinstance(status, int) and not isinstance(status, bool):
                return status
    return None


def retry_after_of(error: BaseException) -> float | None:
    """Seconds the server asked for: an error's ``retry_after`` (seconds), or its response's ``Retry-After``."""
    own = getattr(error, "retry_after", None)
    if isinstance(own, (int, float)) and not isinstance(own, bool):
        return max(0.0, float(own))
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        return parse_retry_after(headers.get("Retry-After"))
    except AttributeError:
        return None


def is_transient(error: BaseException) -> bool:
    """The default "worth another try": an error's own ``retryable`` flag when it has one, else a retryable HTTP
    status, else a connection error or time-out."""
    flag = getattr(error, "retryable", None)
    if isinstance(flag, bool):
        return flag
    status = status_of(error)
    if status is not None:
        return status in RETRY_STATUSES
    return isinstance(error, (ConnectionError, TimeoutError))


def _at_least_one(value: Any) -> int:
    return max(1, int(value))


@attrs.frozen
class Backoff:
    """``attempts`` tries in all; before retry ``n`` (1, 2, ...) wait ``uniform(0, min(cap, base * 2**(n-1)))``,
    or what the server's Retry-After asked when that is longer (never more than ``max_retry_after``).
    ``retryable`` says which errors are worth another try (a backend passes its own)."""

    attempts: int = attrs.field(default=5, converter=_at_least_one)
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0
    retryable: Callable[[BaseException], bool] = attrs.field(default=is_transient, eq=False, repr=False)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``retry`` (1 is the first retry)."""
        ceiling = max(0.0, min(self.cap, self.base * 2 ** (retry - 1)))
        wait = self.rng.uniform(0.0, ceiling) if ceiling > 0 else 0.0
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait

    def delays(self) -> Iterator[float]:
        """The ``attempts - 1`` waits of a call whose every try fails without a Retry-After."""
        for retry in range(1, self.attempts):
            yield self.delay(retry)

    def call(
        self,
        what: str,
        function: Callable[[], T],
        *,
        retryable: Callable[[BaseException], bool] | None = None,
        retry_after: Callable[[BaseException], float | None] = retry_after_of,
    ) -> T:
        """Run ``function`` until it returns. An error that is not retryable (``retryable``, else the policy's) is
        raised at once; the last error is raised when every attempt failed (the caller words "gave up")."""
        worth_retrying = self.retryable if retryable is None else retryable
        for attempt in range(1, self.attempts + 1):
            try:
                return function()
            except Exception as error:
                if not worth_retrying(error):
                    raise
                if attempt == self.attempts:
                    logger.warning("%s failed %d times; giving up: %s", what, attempt, error)
                    raise
                wait = self.delay(attempt, retry_after(error))
                logger.info("%s failed (%s); retry %d/%d in %.2fs", what, error, attempt, self.attempts - 1, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
