"""The export's read-ahead thread: order, how far ahead it reads, errors, and stopping early."""

from __future__ import annotations

import threading
import time

import pytest

from storage_core.export.exporter import _prefetch


def _counting(items: int, made: list[int]):
    for index in range(items):
        made.append(index)
        yield index


def test_every_item_comes_in_order():
    assert list(_prefetch(iter(range(100)), depth=1)) == list(range(100))


@pytest.mark.parametrize("depth", [1, 3])
def test_the_thread_is_never_more_than_depth_items_ahead(depth):
    made: list[int] = []
    for taken, item in enumerate(_prefetch(_counting(30, made), depth=depth)):
        assert item == taken
        time.sleep(0.002)  # give the thread every chance to run ahead
        # Beside the item being consumed: ``depth`` in the queue and one the thread made meanwhile.
        assert len(made) <= taken + 2 + depth


def test_an_error_in_the_thread_reaches_the_consumer_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise ValueError("page 3 is unreadable")

    seen = []
    with pytest.raises(ValueError, match="page 3 is unreadable"):
        for item in _prefetch(failing(), depth=1):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_early_stops_the_thread():
    made: list[int] = []
    before = threading.active_count()
    reader = _prefetch(_counting(1_000, made), depth=1)
    assert next(reader) == 0
    reader.close()
    assert threading.active_count() == before
    assert len(made) <= 3
