"""ConnectionPool: the bounded, idle-expiring pool under the SMTP transport (fake clock)."""

from __future__ import annotations

import threading
import time

import pytest

from postroom.transport.pool import ConnectionPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def closed() -> list[str]:
    return []


def make_pool(clock: Clock, closed: list[str], size: int = 2) -> ConnectionPool[str]:
    return ConnectionPool(size, idle_timeout_s=60.0, close_conn=closed.append, clock=clock)


def test_an_empty_pool_gives_an_empty_lease(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    lease = pool.acquire()
    assert (lease.conn, lease.reused) == (None, False)
    pool.release(lease)
    assert pool.idle_count == 0


def test_a_released_connection_is_reused(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    lease = pool.acquire()
    lease.conn = "c1"
    pool.release(lease)

    again = pool.acquire()

    assert (again.conn, again.reused) == ("c1", True)
    assert closed == []


def test_the_freshest_idle_connection_is_handed_out(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    first, second = pool.acquire(), pool.acquire()
    first.conn, second.conn = "older", "newer"
    pool.release(first)
    clock.now += 1
    pool.release(second)

    assert pool.acquire().conn == "newer"


def test_a_connection_not_reusable_is_closed(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    lease = pool.acquire()
    lease.conn, lease.reusable = "broken", False
    pool.release(lease)
    assert closed == ["broken"]
    assert pool.idle_count == 0


def test_idle_connections_expire_when_borrowing(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    a, b = pool.acquire(), pool.acquire()
    a.conn, b.conn = "old", "young"
    pool.release(a)
    clock.now += 30
    pool.release(b)
    clock.now += 31  # "old" idle 61 s, "young" 31 s

    lease = pool.acquire()

    assert lease.conn == "young"
    assert closed == ["old"]


def test_close_closes_idle_now_and_borrowed_on_release(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed)
    idle, busy = pool.acquire(), pool.acquire()
    idle.conn, busy.conn = "idle", "busy"
    pool.release(idle)

    pool.close()
    assert closed == ["idle"]
    pool.release(busy)
    assert closed == ["idle", "busy"]

    fresh = pool.acquire()  # still usable afterwards
    assert fresh.conn is None
    fresh.conn = "new"
    pool.release(fresh)
    assert pool.idle_count == 1


def test_acquire_blocks_while_every_slot_is_taken(clock: Clock, closed: list[str]) -> None:
    pool = make_pool(clock, closed, size=1)
    held = pool.acquire()
    got = threading.Event()

    def borrow() -> None:
        pool.release(pool.acquire())
        got.set()

    thread = threading.Thread(target=borrow)
    thread.start()
    time.sleep(0.05)
    assert not got.is_set()
    pool.release(held)
    assert got.wait(2)
    thread.join()


def test_size_must_be_positive(clock: Clock, closed: list[str]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        make_pool(clock, closed, size=0)
