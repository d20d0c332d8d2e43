"""The bounded in-memory buffer between caller threads and the pusher thread.

Caller threads :meth:`~Buffer.put` items at the back; one consumer (the pusher) reads a batch
from the front with :meth:`~Buffer.next_batch`, pushes it, and only then :meth:`~Buffer.commit`\\ s
it, which removes it. An item being pushed therefore still counts in ``len(buffer)``: the
capacity bounds every item the process holds, and a failed push simply leaves the batch at the
front to be read again.

States of the buffer::

    open ──close()──▶ closed (put raises; the consumer may still drain)
      │                  │
      └──── stop() ──────┴──▶ stopped (next_batch returns None: the consumer exits)

One lock guards everything and is held only for deque operations, never during a push, so
``fork()`` can take it (see :meth:`before_fork`) without waiting for the network.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Generic, TypeVar

from postroom.errors import BufferFullError, QueueError

__all__ = ["Buffer"]

T = TypeVar("T")


class Buffer(Generic[T]):
    """A bounded FIFO with one consumer that commits what it has read only after pushing it."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._closed = False
        self._stopped = False
        self._consumer_idle = False
        self._new_lock()

    def _new_lock(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the consumer waits here for items
        self._progress = threading.Condition(self._lock)  # putters and flushers wait here

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: :meth:`put` refuses new items."""
        return self._closed

    def put(self, item: T, timeout_s: float) -> None:
        """Append ``item``, waiting up to ``timeout_s`` for room.

        Raises :class:`BufferFullError` when the buffer is still full after ``timeout_s``, and
        :class:`QueueError` when the buffer is closed.
        """
        with self._lock:
            if len(self._items) >= self.capacity:
                self._wait_for_room(timeout_s)
            if self._closed:
                raise QueueError("the outbox is closed: this email was not queued")
            self._items.append(item)
            if self._consumer_idle:
                self._arrived.notify()

    def _wait_for_room(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self._items) >= self.capacity and not self._closed:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise BufferFullError(
                    f"the outbox buffer is full: {len(self._items)} emails are waiting to be "
                    f"pushed (capacity {self.capacity}) and none could be pushed within "
                    f"{timeout_s:g}s; the queue engine is unreachable or slow. "
                    "This email was not queued."
                )
            self._progress.wait(remaining_s)

    def next_batch(self, max_items: int) -> list[T] | None:
        """Wait for at least one item; return up to ``max_items`` from the front, not removing them.

        Returns ``None`` once :meth:`stop` was called.
        """
        with self._lock:
            while not self._items and not self._stopped:
                self._consumer_idle = True
                try:
                    self._arrived.wait()
                finally:
                    self._consumer_idle = False
            if self._stopped:
                return None
            return list(itertools.islice(self._items, max_items))

    def peek(self, start: int, max_items: int) -> list[T]:
        """Up to ``max_items`` items from position ``start``, not removing them (no waiting)."""
        with self._lock:
            return list(itertools.islice(self._items, start, start + max_items))

    def commit(self, count: int) -> None:
        """Remove ``count`` items from the front: they are pushed. Wakes putters and flushers."""
        with self._lock:
            for _ in range(min(count, len(self._items))):
                self._items.popleft()
            self._progress.notify_all()

    def wait_empty(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` until every item is committed; return how many are left."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._items and not self._stopped:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                self._progress.wait(remaining_s)
            return len(self._items)

    def close(self) -> None:
        """Refuse new items from now on; putters waiting for room give up at once."""
        with self._lock:
            self._closed = True
            self._progress.notify_all()

    def stop(self) -> None:
        """Tell the consumer to exit: :meth:`next_batch` returns ``None`` from now on."""
        with self._lock:
            self._closed = True
            self._stopped = True
            self._arrived.notify_all()
            self._progress.notify_all()

    # -- fork support: hold the lock across fork(), start afresh in the child ------------------

    def before_fork(self) -> None:
        """Take the lock so no thread is half-way through an append when the process forks."""
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        """Release the lock taken by :meth:`before_fork`."""
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """Forget the parent's items (the parent pushes them) and start with fresh locks.

        The child has no consumer thread yet: the owner starts one when it puts again.
        """
        self._new_lock()
        self._items = deque()
        self._consumer_idle = False
