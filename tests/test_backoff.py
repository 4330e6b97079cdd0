"""storage_core.backoff: one retry policy for every backend (full jitter, Retry-After, a cap)."""

from __future__ import annotations

import email.utils
import random

import pytest

from storage_core.backoff import Backoff, is_transient, parse_retry_after, retry_after_of
from storage_core.errors import BackendError


class Response:
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        self.status_code = status
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}


class HttpError(Exception):
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = Response(status, retry_after)


def test_full_jitter_stays_under_an_exponential_ceiling_and_the_cap():
    backoff = Backoff(attempts=8, base=0.5, cap=3.0, rng=random.Random(7))
    delays = list(backoff.delays())
    assert len(delays) == 7 and len(set(delays)) == 7
    ceilings = [min(3.0, 0.5 * 2**n) for n in range(7)]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    many = [Backoff(base=1.0, cap=8.0, rng=random.Random(seed)).delay(4) for seed in range(200)]
    assert min(many) < 1.0 and max(many) > 7.0  # the whole range 0..8 is used: full, not equal, jitter


def test_retry_after_in_seconds_or_as_an_http_date():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_of(HttpError(429, "4")) == 4.0 and retry_after_of(HttpError(503)) is None
    assert retry_after_of(ValueError("x")) is None


def test_a_server_retry_after_wins_over_the_jitter_up_to_its_cap():
    backoff = Backoff(base=0.1, cap=1.0, max_retry_after=10.0, rng=random.Random(1))
    assert backoff.delay(1, retry_after=7.0) == 7.0
    assert backoff.delay(1, retry_after=3600.0) == 10.0  # a proxy's "an hour" does not stall a round
    assert backoff.delay(1, retry_after=0.0) <= 0.1


def test_call_retries_transient_errors_and_honours_retry_after():
    waits: list[float] = []
    answers = iter([HttpError(429, "3"), HttpError(503), ConnectionError("reset")])

    def flaky() -> str:
        error = next(answers, None)
        if error is not None:
            raise error
        return "ok"

    backoff = Backoff(attempts=4, base=0.5, cap=2.0, sleep=waits.append, rng=random.Random(3))
    assert backoff.call("read", flaky) == "ok"
    assert len(waits) == 3 and waits[0] == 3.0 and 0 <= waits[1] <= 1.0 and 0 <= waits[2] <= 2.0


def test_call_stops_at_once_on_a_permanent_error_and_gives_up_after_the_attempts():
    waits: list[float] = []
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise HttpError(403)

    with pytest.raises(HttpError):
        Backoff(attempts=5, sleep=waits.append).call("write", refused)
    assert calls == [1] and waits == []

    def down() -> None:
        calls.append(1)
        raise BackendError("store down", retryable=True)

    calls.clear()
    with pytest.raises(BackendError, match="store down"):
        Backoff(attempts=3, base=0.0, sleep=waits.append).call("write", down)
    assert len(calls) == 3 and waits == [0.0, 0.0]


def test_what_is_transient_and_a_backend_s_own_rule():
    assert is_transient(HttpError(429)) and is_transient(HttpError(502)) and is_transient(TimeoutError())
    assert not is_transient(HttpError(404)) and not is_transient(ValueError("bad"))
    assert not is_transient(BackendError("refused", retryable=False))
    waits: list[float] = []
    only_key_errors = Backoff(attempts=2, base=0.0, sleep=waits.append, retryable=lambda e: isinstance(e, KeyError))
    with pytest.raises(KeyError):
        only_key_errors.call("x", lambda: {}["missing"])
    assert waits == [0.0]
    assert Backoff(attempts=0).attempts == 1  # at least one try
