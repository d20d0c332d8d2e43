"""A bounded, thread-safe pool of reusable connections.

The pool hands out *leases*. A lease is one of at most ``size`` slots; it may come with an idle
connection to reuse, or empty, in which case the borrower opens a connection itself and stores
it on the lease. The pool knows nothing about SMTP: it keeps, expires and closes opaque objects.

States of a connection::

    (opened by a borrower) --> borrowed --release(reusable)--> idle --acquire--> borrowed
                                  |                             |
                                  +--release(not reusable)--+   +--idle too long / close()--+
                                                            v                               v
                                                          closed <--------------------------+

* At most ``size`` connections exist at once: a connection only exists inside a lease or in the
  idle list, and a lease holds one of ``size`` slots. ``acquire`` blocks until a slot is free.
* An idle connection older than ``idle_timeout_s`` is closed, never handed out; the check runs on
  every ``acquire`` (no background thread).
* ``close()`` closes every idle connection now, and each borrowed one when it is released. The
  pool stays usable: later leases open new connections.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

__all__ = ["ConnectionPool", "Lease"]

C = TypeVar("C")


@dataclass(slots=True)
class Lease(Generic[C]):
    """One pool slot. ``conn`` is the connection to use, ``None`` until one is opened.

    ``reused`` says whether ``conn`` came from the idle list (it may have gone stale meanwhile).
    Set ``reusable`` to ``False`` before releasing when the connection must not be kept.
    """

    conn: C | None
    reused: bool
    generation: int
    reusable: bool = True


class ConnectionPool(Generic[C]):
    """A LIFO pool of at most ``size`` connections; ``close_conn`` must not raise."""

    def __init__(
        self,
        size: int,
        idle_timeout_s: float,
        close_conn: Callable[[C], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: deque[tuple[C, float]] = deque()
        self._idle_timeout_s = idle_timeout_s
        self._close_conn = close_conn
        self._clock = clock
        self._generation = 0

    @overload
    def acquire(self) -> Lease[C]: ...

    @overload
    def acquire(self, *, blocking: bool) -> Lease[C] | None: ...

    def acquire(self, *, blocking: bool = True) -> Lease[C] | None:
        """Wait until a slot is free (``blocking=False``: ``None`` when none is); return a lease
        with the freshest idle connection, if any."""
        if not self._slots.acquire(blocking=blocking):
            return None
        try:
            conn, expired = self._take_idle()
        except BaseException:
            self._slots.release()
            raise
        for old in expired:
            self._close_conn(old)
        with self._lock:
            generation = self._generation
        return Lease(conn=conn, reused=conn is not None, generation=generation)

    def release(self, lease: Lease[C]) -> None:
        """Give the slot back, keeping the connection for reuse when it is reusable."""
        try:
            conn = lease.conn
            lease.conn = None
            if conn is None:
                return
            with self._lock:
                keep = lease.reusable and lease.generation == self._generation
                if keep:
                    self._idle.append((conn, self._clock()))
            if not keep:
                self._close_conn(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection now; borrowed ones are closed when released."""
        with self._lock:
            self._generation += 1
            idle = [conn for conn, _ in self._idle]
            self._idle.clear()
        for conn in idle:
            self._close_conn(conn)

    @property
    def idle_count(self) -> int:
        """How many connections wait in the pool right now."""
        with self._lock:
            return len(self._idle)

    def _take_idle(self) -> tuple[C | None, list[C]]:
        """Pop the newest idle connection and every expired one (the oldest come first)."""
        with self._lock:
            cutoff = self._clock() - self._idle_timeout_s
            expired: list[C] = []
            while self._idle and self._idle[0][1] < cutoff:
                expired.append(self._idle.popleft()[0])
            conn = self._idle.pop()[0] if self._idle else None
        return conn, expired
