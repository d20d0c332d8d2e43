"""What a dispatcher holds and what it still owes the database. Thread-safe.

The dispatcher's thread adds to the ledger as it claims and delivers; whoever writes to the
database (the keeper's thread every fraction of a second, the dispatcher's own thread at the end
of each batch) takes what is owed with :meth:`Ledger.take` and gives it back with
:meth:`Ledger.restore` when the write failed, so nothing is ever written twice or lost.

Life of one claimed row in the ledger::

    held ──begin()──▶ started ──result()──▶ finished ──take()──▶ written (gone)
     │                   │
     │                   └── (still in flight at take()) ──▶ marked started in the database
     └── release() / close() ──▶ to release ──take()──▶ released (gone)

A row the heartbeat no longer finds under this dispatcher's name (another one took it over while
this one could not vouch for its leases) is *lost*: :meth:`Ledger.lose` drops it, and it is
never started from here.

Life of the ledger::

    open ──close()──▶ closed: begin() refuses; every row held and not started is released

A row marked started is one the database knows may have reached the relay: if this dispatcher
dies, the takeover records ``maybe_delivered`` for it rather than ``abandoned``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from postroom.store import Finish

__all__ = ["Ledger", "Owed"]


@dataclass(slots=True)
class Owed:
    """One write's worth: results to record, rows to release, rows to mark started."""

    finishes: list[Finish] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.finishes or self.releases or self.started)


class Ledger:
    """Rows held by one dispatcher; see the module docstring for their life."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._in_flight: set[str] = set()
        self._owed = Owed()
        self._owed_since: float | None = None
        self._closed = False

    def _owe(self) -> None:
        """Called under the lock whenever something becomes owed."""
        if self._owed_since is None:
            self._owed_since = self._clock()

    def hold(self, ids: Iterable[str]) -> None:
        """Rows just claimed (or taken over) by this dispatcher; once closed, given back."""
        with self._lock:
            self._held.update(ids)
            unstarted = self._held - self._in_flight if self._closed else set()
        self.release(unstarted)

    def begin(self, id: str) -> bool:
        """The delivery of ``id`` starts now; ``False`` once the ledger is closed (don't)."""
        with self._lock:
            if self._closed or id not in self._held:
                return False
            self._in_flight.add(id)
            self._owed.started.append(id)
            self._owe()
            return True

    def result(self, finish: Finish) -> None:
        """The outcome of a held row, to be written."""
        with self._lock:
            self._held.discard(finish.id)
            self._in_flight.discard(finish.id)
            self._owed.finishes.append(finish)
            self._owe()

    def release(self, ids: Iterable[str]) -> None:
        """Held rows whose delivery did not start: give them back."""
        with self._lock:
            for id in ids:
                if id in self._held and id not in self._in_flight:
                    self._held.discard(id)
                    self._owed.releases.append(id)
                    self._owe()

    def held(self) -> set[str]:
        """The rows held now (a snapshot)."""
        with self._lock:
            return set(self._held)

    def lose(self, ids: Iterable[str]) -> int:
        """Rows another dispatcher took over: never start them, owe nothing for them. Returns
        how many were still held."""
        with self._lock:
            lost = self._held.intersection(ids)
            self._held -= lost
            self._in_flight -= lost
            return len(lost)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> int:
        """Refuse new deliveries and release every row not started; return how many are still
        in flight (they keep their lease)."""
        with self._lock:
            self._closed = True
            unstarted = self._held - self._in_flight
        self.release(unstarted)
        with self._lock:
            return len(self._in_flight)

    def take(self) -> Owed:
        """Everything owed now; the caller writes it or gives it back with :meth:`restore`.

        Rows started and finished since the last take need no mark: their result says it all.
        """
        with self._lock:
            owed, self._owed = self._owed, Owed()
            self._owed_since = None
            owed.started = [id for id in owed.started if id in self._in_flight]
            return owed

    def restore(self, owed: Owed) -> None:
        """Give back what a failed write could not record, ahead of what came since."""
        with self._lock:
            self._owed.finishes[:0] = owed.finishes
            self._owed.releases[:0] = owed.releases
            self._owed.started[:0] = owed.started
            if owed:
                self._owed_since = self._clock()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def owed_for_s(self) -> float:
        """How long the oldest thing owed has waited (0 when nothing is owed)."""
        with self._lock:
            since = self._owed_since
        return 0.0 if since is None else self._clock() - since

    @property
    def owing(self) -> int:
        """How many results and releases wait to be written."""
        with self._lock:
            return len(self._owed.finishes) + len(self._owed.releases)
