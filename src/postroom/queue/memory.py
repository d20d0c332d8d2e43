"""An in-process queue engine: for tests and for an application that runs its own dispatcher.

It keeps the full contract of :mod:`postroom.queue.base`, including redelivery of items taken and
not acknowledged, but nothing survives the process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from postroom.queue.base import QueueEngine, Taken

__all__ = ["MemoryQueue"]


class MemoryQueue(QueueEngine):
    """A deque of waiting items plus a table of taken ones, under one condition variable."""

    engine = "memory"

    def __init__(
        self,
        *,
        redeliver_after_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(redeliver_after_s=redeliver_after_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: deque[tuple[bytes, int]] = deque()
        self._taken: OrderedDict[str, tuple[bytes, int, float]] = OrderedDict()
        self._tags = itertools.count(1)

    def push(self, payloads: Sequence[bytes]) -> None:
        with self._cond:
            self._waiting.extend((bytes(p), 0) for p in payloads)
            self._cond.notify_all()

    def take(self, max_items: int, timeout_s: float) -> list[Taken]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while True:
                self._requeue_overdue()
                if self._waiting:
                    return self._take_now(max_items)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(min(remaining, self._next_redelivery_in()))

    def ack(self, tags: Sequence[str]) -> None:
        with self._cond:
            for tag in tags:
                self._taken.pop(tag, None)

    def size(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._taken)

    def _take_now(self, max_items: int) -> list[Taken]:
        now = self._clock()
        out: list[Taken] = []
        while self._waiting and len(out) < max_items:
            payload, deliveries = self._waiting.popleft()
            tag = str(next(self._tags))
            self._taken[tag] = (payload, deliveries + 1, now)
            out.append(Taken(tag=tag, payload=payload, deliveries=deliveries + 1))
        return out

    def _requeue_overdue(self) -> None:
        cutoff = self._clock() - self.redeliver_after_s
        overdue = [tag for tag, (_, _, at) in self._taken.items() if at <= cutoff]
        for tag in overdue:
            payload, deliveries, _ = self._taken.pop(tag)
            self._waiting.append((payload, deliveries))

    def _next_redelivery_in(self) -> float:
        if not self._taken:
            return 3600.0
        oldest = next(iter(self._taken.values()))[2]
        return max(oldest + self.redeliver_after_s - self._clock(), 0.001)
