"""The keeper: a dispatcher's promises to the database, kept from a thread of its own.

While the dispatcher's thread is busy in SMTP conversations, the keeper

* writes a heartbeat every ``heartbeat_s`` (with the relay's state) and, in the same
  transaction, renews the lease of every row the dispatcher holds;
* writes what the :class:`~postroom.dispatch.ledger.Ledger` owes (results, releases, rows that
  began their delivery) once it has waited ``flush_s``. On a fast relay the dispatcher's own
  thread writes it sooner, at the end of each batch, and the keeper finds nothing to do: it
  never competes with the dispatcher's thread for Python's lock while that one keeps up.

Lifecycle::

    idle ──start()──▶ running ──stop()──▶ stopped (one last write first)

Every write goes through :meth:`Keeper.tick`, which the dispatcher's thread also calls at the end
of each batch (and which tests call directly with a fake clock): one mechanism, whoever runs it.

**Vouching.** A dispatcher may start a delivery only while it can vouch for its leases: the
last heartbeat that reached the database is recent enough that no other dispatcher can think it
dead. :attr:`Keeper.vouched_until` is that moment minus a safety margin::

    vouched_until = last successful heartbeat (its start) + min(lease, dead_after) - margin

When the database is unreachable, heartbeats fail, ``vouched_until`` passes, and the dispatcher
starts nothing new until a heartbeat succeeds again. That heartbeat also tells which rows are
still this dispatcher's: those another one took over meanwhile are dropped from the ledger
before vouching resumes, so they are never sent from here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from postroom.dispatch.ledger import Ledger, Owed
from postroom.errors import StoreError
from postroom.store import DispatcherBeat, Store
from postroom.transport.base import RelayState

__all__ = ["Keeper", "Liveness"]

log = logging.getLogger("postroom.dispatch")


class Liveness:
    """The timing of heartbeats and leases, derived from two settings.

    ``heartbeat_s``: how often a dispatcher proves it is alive. ``dead_after_s`` (5 beats): a
    dispatcher silent that long is dead and its rows are taken over. ``margin_s`` (2 beats):
    how long before that moment a dispatcher stops starting deliveries on its own.
    """

    def __init__(self, *, lease_s: float, heartbeat_s: float) -> None:
        if not 0 < heartbeat_s * 5 <= lease_s:
            raise ValueError(
                f"the lease ({lease_s}s) must be at least 5 heartbeats ({heartbeat_s}s each)"
            )
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self.dead_after_s = 5 * heartbeat_s
        self.margin_s = 2 * heartbeat_s

    def vouched_until(self, beat_started: datetime) -> datetime:
        return beat_started + timedelta(seconds=self.dead_after_s - self.margin_s)


class Keeper:
    """Heartbeats, lease renewal and prompt writes; see the module docstring."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        me: DispatcherBeat,
        liveness: Liveness,
        *,
        clock: Callable[[], datetime],
        relay: Callable[[], RelayState] = RelayState,
        flush_s: float = 0.1,
    ) -> None:
        self.store, self.ledger, self.me, self.liveness = store, ledger, me, liveness
        self.clock, self.relay, self.flush_s = clock, relay, flush_s
        self._tick_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat: datetime | None = None
        self._relay_written: tuple[datetime | None, str | None] = (None, None)
        self._beat_failing = False
        self._write_failing = False
        self.vouched_until: datetime | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Beat once (so the dispatcher can vouch for its first claim), then keep going in a
        thread of its own."""
        self.tick()
        self._thread = threading.Thread(target=self._run, name="postroom-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last write."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.tick()

    def may_start(self, now: datetime) -> bool:
        """Whether a delivery may start now (see *Vouching* in the module docstring)."""
        return self.vouched_until is not None and now < self.vouched_until

    # -- one tick -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Write what is owed, and the heartbeat when it is due. Never raises a StoreError:
        what could not be written stays owed and is tried again at the next tick."""
        with self._tick_lock:
            self._write_owed()
            if self._beat_due():
                self._beat(self.clock())

    @property
    def _beat_every(self) -> timedelta:
        return timedelta(seconds=self.liveness.heartbeat_s)

    def _write_owed(self) -> None:
        owed = self.ledger.take()
        if not owed:
            return
        try:
            self._write(owed)
        except StoreError as exc:
            self.ledger.restore(owed)
            if not self._write_failing:
                log.error("could not record results, retrying: %s", exc)
            self._write_failing = True
            return
        if self._write_failing:
            log.info("recording results works again")
        self._write_failing = False

    def _write(self, owed: Owed) -> None:
        owner, now = self.me.id, self.clock()
        if owed.releases:
            self.store.release(owner, owed.releases, now)
            owed.releases = []
        if owed.finishes or owed.started:  # one transaction for both
            updated = self.store.finish(owner, owed.finishes, now, started=owed.started)
            if updated < len(owed.finishes):
                log.warning(
                    "%d result(s) not recorded: another dispatcher took the message over",
                    len(owed.finishes) - updated,
                )
            owed.finishes, owed.started = [], []

    def _beat(self, now: datetime) -> None:
        relay = self.relay()
        outage = _outage(relay)
        me = DispatcherBeat(
            id=self.me.id,
            host=self.me.host,
            pid=self.me.pid,
            started_at=self.me.started_at,
            relay_down_since=None if relay.up else relay.down_since,
            relay_failure=None if relay.up else relay.reason,
        )
        held_before = self.ledger.held()
        try:
            renewed = self.store.heartbeat(me, now, self.liveness.lease_s)
        except StoreError as exc:
            if not self._beat_failing:
                log.error("heartbeat failed; no new deliveries until it works: %s", exc)
            self._beat_failing = True
            return
        if self._beat_failing:
            log.info("heartbeat works again")
        self._beat_failing = False
        lost = self.ledger.lose(held_before - renewed)  # before vouching again: never sent
        if lost:
            log.warning(
                "%d message(s) were taken over by another dispatcher while this one could not "
                "vouch for its leases; they will not be sent from here",
                lost,
            )
        self._last_beat = now
        self._relay_written = outage
        self.vouched_until = self.liveness.vouched_until(now)

    def _run(self) -> None:
        while not self._stopping.wait(self.flush_s / 2):
            if self.ledger.owed_for_s() >= self.flush_s or self._beat_due():
                self.tick()

    def _beat_due(self) -> bool:
        """A beat is due every ``heartbeat_s``, and at once when the relay went down or up."""
        last = self._last_beat
        if last is None or not timedelta(0) <= self.clock() - last < self._beat_every:
            return True
        return _outage(self.relay()) != self._relay_written


def _outage(relay: RelayState) -> tuple[datetime | None, str | None]:
    """What the ``dispatchers`` table says of a relay: down since when and why (or nothing)."""
    return (None, None) if relay.up else (relay.down_since, relay.reason)
