"""The relay's circuit breaker: failures of the relay itself are not charged to messages.

A connection that cannot be set up (refused, TLS failure, a greeting other than 220, a failed
login) says nothing about the message that was to use it. The breaker turns such failures into
a rest for the relay::

    unproven --set-up succeeds--> up --set-up fails--> down (until retry_at)
       |                                                 |  ^
       +--set-up fails--> down                 retry_at passed: one probe
                                                         |  +--probe fails (wait doubles)
                                                         +--probe succeeds--> up

* **unproven** (at start): one connection is set up at a time; the others wait for it, so a
  wrong password costs one login, not one per connection.
* **up**: connections are set up side by side.
* **down**: no connection is set up until ``retry_at``; jobs that need a new connection come
  back ``DEFERRED`` at once. Then one probe goes, and the others wait for its outcome. The
  rest starts at ``initial_s`` and doubles up to ``max_s``, each spread by ±20 %.

The outage is logged once when it starts (warning) and once when it ends, on the logger
``postroom.transport``.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from postroom.transport.base import RelayState

__all__ = ["Admission", "RelayBreaker"]

log = logging.getLogger("postroom.transport")
_JITTER = 0.2


class Admission(enum.Enum):
    """May a new connection be set up now?"""

    OPEN = "open"  # yes; report the outcome with opened() or failed(), or call abandon()
    WAIT = "wait"  # not yet: another set-up is proving (or probing) the relay
    DEFER = "defer"  # no: the relay is down


class RelayBreaker:
    """Thread-safe; ``name`` appears in the log lines (``host:port``)."""

    def __init__(
        self,
        name: str,
        initial_s: float,
        max_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._initial_s, self._max_s = initial_s, max_s
        self._clock, self._wall_clock, self._jitter = clock, wall_clock, jitter
        self._lock = threading.Lock()
        self._proven = False
        self._opening = 0
        self._failures = 0
        self._retry_at = 0.0
        self._state = RelayState()

    @property
    def state(self) -> RelayState:
        with self._lock:
            return self._state

    def admit(self) -> Admission:
        """Ask to set up a connection; an ``OPEN`` admission must be settled exactly once."""
        with self._lock:
            if self._state.up:
                if self._proven or self._opening == 0:
                    self._opening += 1
                    return Admission.OPEN
                return Admission.WAIT
            if self._clock() < self._retry_at:
                return Admission.DEFER
            if self._opening == 0:
                self._opening += 1
                return Admission.OPEN
            return Admission.WAIT

    def abandon(self) -> None:
        """An admitted set-up was not attempted after all."""
        with self._lock:
            self._opening -= 1

    def opened(self) -> None:
        """An admitted set-up succeeded: the relay is up."""
        with self._lock:
            self._opening -= 1
            self._proven = True
            was = self._state
            self._failures = 0
            self._state = RelayState()
        if not was.up:
            log.warning("relay %s is up again (down since %s)", self.name, was.down_since)

    def failed(self, reason: str) -> None:
        """An admitted set-up failed because of the relay: rest, then probe once."""
        with self._lock:
            self._opening -= 1
            self._proven = False
            self._failures += 1
            wait_s = min(self._initial_s * 2 ** (self._failures - 1), self._max_s)
            wait_s *= 1 + _JITTER * (2 * self._jitter() - 1)
            self._retry_at = self._clock() + wait_s
            now = self._wall_clock()
            was = self._state
            since = was.down_since if not was.up else now
            retry_at = now + timedelta(seconds=wait_s)
            self._state = RelayState(False, since, reason, retry_at)
        if was.up:
            log.warning("relay %s is down: %s; next try in %.0f s", self.name, reason, wait_s)
        else:
            log.debug("relay %s still down: %s; next try in %.0f s", self.name, reason, wait_s)
