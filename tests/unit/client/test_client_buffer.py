"""The bounded buffer between caller threads and the pusher."""

from __future__ import annotations

import threading
import time

import pytest

from postroom.client.buffer import Buffer
from postroom.errors import BufferFullError, QueueError


def test_items_stay_until_committed() -> None:
    buf: Buffer[int] = Buffer(10)
    for n in range(5):
        buf.put(n, 0)
    assert buf.next_batch(3) == [0, 1, 2]
    assert len(buf) == 5  # read, not removed
    assert buf.peek(3, 10) == [3, 4]
    buf.commit(3)
    assert len(buf) == 2
    assert buf.next_batch(10) == [3, 4]


def test_items_being_pushed_count_against_the_capacity() -> None:
    buf: Buffer[int] = Buffer(2)
    buf.put(1, 0)
    buf.put(2, 0)
    assert buf.next_batch(10) == [1, 2]
    with pytest.raises(BufferFullError, match="2 emails are waiting"):
        buf.put(3, 0.05)
    buf.commit(1)
    buf.put(3, 0)
    assert buf.peek(0, 10) == [2, 3]


def test_next_batch_waits_for_an_item_and_wakes_at_once() -> None:
    buf: Buffer[str] = Buffer(4)
    got: list[list[str] | None] = []
    reader = threading.Thread(target=lambda: got.append(buf.next_batch(10)))
    reader.start()
    time.sleep(0.05)
    assert not got
    start = time.monotonic()
    buf.put("a", 0)
    reader.join(2)
    assert got == [["a"]]
    assert time.monotonic() - start < 0.5


def test_stop_releases_the_consumer_and_close_refuses_puts() -> None:
    buf: Buffer[int] = Buffer(4)
    got: list[list[int] | None] = []
    reader = threading.Thread(target=lambda: got.append(buf.next_batch(10)))
    reader.start()
    buf.close()
    with pytest.raises(QueueError, match="closed"):
        buf.put(1, 0)
    buf.stop()
    reader.join(2)
    assert got == [None]


def test_wait_empty_returns_what_is_left() -> None:
    buf: Buffer[int] = Buffer(4)
    buf.put(1, 0)
    buf.put(2, 0)
    assert buf.wait_empty(0.05) == 2
    threading.Timer(0.05, buf.commit, args=(2,)).start()
    assert buf.wait_empty(2.0) == 0


def test_fork_handlers_hold_the_lock_and_the_child_starts_empty() -> None:
    buf: Buffer[int] = Buffer(4)
    buf.put(1, 0)
    buf.before_fork()
    blocked = threading.Thread(target=buf.put, args=(2, 1.0))
    blocked.start()
    time.sleep(0.05)
    assert len(buf) == 1  # the append waits for the fork to finish
    buf.after_fork_in_parent()
    blocked.join(2)
    assert len(buf) == 2
    buf.before_fork()
    buf.after_fork_in_child()  # as in a child: the lock is new, the parent's items are gone
    assert len(buf) == 0
    buf.put(3, 0)
    assert buf.next_batch(10) == [3]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Buffer(0)
