"""The one loop that runs every conversation of a batch side by side, from one thread.

Each job's delivery is a generator (:func:`.delivery.deliver`) that does non-blocking I/O and
yields a :class:`~.channel.Wait` whenever it cannot go on. The loop polls the sockets of all of
them at once, with the nearest deadline as its timeout, and resumes each conversation whose
socket is ready or whose deadline passed. Nothing else blocks, so one slow or silent connection
never holds up another by more than one turn of the loop.

The life of a batch::

    read a job when a connection slot is free (and the breaker admits a new connection)
      --> conversation runs turn by turn --> result (on_result called at once)
      --> the connection takes the next job, or goes back to the pool

* **Lazy reading.** A job is read only when a connection can take it; one that cannot be sent
  at all, or arrives while the relay is down, gets its result at once.
* **Cross-message pipelining.** When a conversation is about to send its message and the server
  offers PIPELINING, the loop reads the next job and writes its envelope right behind the data
  (RFC 2920 lets message content open a group). That follower waits for the leader's reply,
  then goes on on the same connection; if the connection is lost meanwhile, it sends its
  envelope again on a new one (nothing of it was delivered).
"""

from __future__ import annotations

import math
import select
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from postroom.transport.base import DeliveryResult, Job, OnResult, Outcome, Reply, unsendable
from postroom.transport.pool import ConnectionPool, Lease
from postroom.transport.smtp.breaker import Admission
from postroom.transport.smtp.channel import ASK_NEXT_ENVELOPE, Turns, Wait
from postroom.transport.smtp.delivery import Relay, deliver
from postroom.transport.smtp.envelope import Prepared, mail_command, prepare, refusal
from postroom.transport.smtp.session import Session
from postroom.transport.smtp.transaction import envelope

__all__ = ["Batch"]

_WAIT_FOR_OTHERS_S = 0.05
"""How often a batch with nothing running checks whether another thread proved the relay."""


@dataclass(slots=True)
class _Conversation:
    """One delivery under way: its lease, its generator, what it waits for, and the
    conversation lined up behind it on the same connection (with its position)."""

    lease: Lease[Session]
    turns: Turns[DeliveryResult]
    wait: Wait | None = None
    follower: tuple[int, _Conversation] | None = None


class Batch:
    """One call of ``deliver_batch``: read jobs lazily, run them, report each result."""

    def __init__(
        self,
        relay: Relay,
        pool: ConnectionPool[Session],
        jobs: Iterable[Job],
        on_result: OnResult | None,
    ) -> None:
        self._relay, self._pool, self._on_result = relay, pool, on_result
        self._source: Iterator[Job] = iter(jobs)
        self._exhausted = False
        self._results: list[DeliveryResult | None] = []
        self._running: dict[int, _Conversation] = {}
        self._spare: list[Lease[Session]] = []

    def run(self) -> list[DeliveryResult]:
        """Deliver every job; the results in reading order."""
        try:
            while True:
                blocked = self._start_jobs()
                if not self._running:
                    if self._exhausted:
                        break
                    if blocked:  # another thread is proving the relay
                        self._give_back_spare()
                        time.sleep(_WAIT_FOR_OTHERS_S)
                    continue
                for position in self._ready():
                    self._step(position)
        except BaseException:
            for conversation in self._running.values():
                conversation.lease.reusable = False  # interrupted mid-conversation
            raise
        finally:
            for lease in [*self._spare, *(c.lease for c in self._running.values())]:
                self._release(lease)
        return [result for result in self._results if result is not None]

    # -- taking jobs ----------------------------------------------------------------------------

    def _start_jobs(self) -> bool:
        """Start jobs while a connection is free; ``True`` when held back by the breaker."""
        while not self._exhausted and len(self._running) < self._pool.size:
            lease = self._lease()
            if lease is None:
                return False
            admission = Admission.OPEN if lease.conn is not None else self._relay.breaker.admit()
            if admission is Admission.WAIT:
                self._spare.append(lease)
                return True
            admitted = lease.conn is None and admission is Admission.OPEN
            if not self._start(lease, admission, admitted):
                if admitted:
                    self._relay.breaker.abandon()
                self._spare.append(lease)
        return False

    def _lease(self) -> Lease[Session] | None:
        """A lease to work with: a spare one, else a new one from the pool (waiting for it only
        when nothing runs here, so that conversations never wait on other threads)."""
        if self._spare:
            return self._spare.pop()
        return self._pool.acquire(blocking=not self._running)

    def _start(self, lease: Lease[Session], admission: Admission, admitted: bool) -> bool:
        """Read a job and begin it on ``lease``; ``False`` when the lease stays unused."""
        job = self._read()
        if job is None:
            return False
        position, prepared = job
        if isinstance(prepared, str):
            self._finish(position, unsendable(prepared))
            return False
        if admission is Admission.DEFER:
            self._finish(position, DeliveryResult(Outcome.DEFERRED, self._relay.resting()))
            return False
        turns = deliver(self._relay, lease, prepared, admitted=admitted)
        self._running[position] = _Conversation(lease, turns)
        self._step(position)
        return True

    def _read(self) -> tuple[int, Prepared | str] | None:
        """The next job with its position, prepared; ``None`` at the end."""
        job = next(self._source, None)
        if job is None:
            self._exhausted = True
            return None
        self._results.append(None)
        return len(self._results) - 1, prepare(job)

    # -- running conversations ------------------------------------------------------------------

    def _step(self, position: int) -> None:
        """Run one conversation to its next wait, or to its end."""
        conversation = self._running[position]
        try:
            step = next(conversation.turns)
            while step is ASK_NEXT_ENVELOPE:
                step = conversation.turns.send(self._next_envelope(conversation))
        except StopIteration as finished:
            self._ended(position, conversation, finished.value)
            return
        assert isinstance(step, Wait)
        conversation.wait = step

    def _ended(self, position: int, conversation: _Conversation, result: DeliveryResult) -> None:
        del self._running[position]
        self._finish(position, result)
        if conversation.follower is None:
            self._spare.append(conversation.lease)
            return
        follower_position, follower = conversation.follower
        self._running[follower_position] = follower
        self._step(follower_position)

    def _next_envelope(self, leader: _Conversation) -> bytes:
        """Read the next job that this connection can take, line it up behind ``leader`` and
        return its first envelope; ``b""`` when there is none."""
        session = leader.lease.conn
        while session is not None and not self._exhausted:
            job = self._read()
            if job is None:
                break
            position, prepared = job
            if isinstance(prepared, str):
                self._finish(position, unsendable(prepared))
                continue
            mail = mail_command(prepared, session)
            if mail is None:
                reply = Reply(0, refusal(prepared, session))
                self._finish(position, DeliveryResult(Outcome.PERMANENT, reply))
                continue
            turns = deliver(self._relay, leader.lease, prepared, presented_on=session)
            leader.follower = (position, _Conversation(leader.lease, turns))
            return envelope(mail, prepared.chunks()[0])
        return b""

    def _ready(self) -> list[int]:
        """Wait for the first socket event or deadline; the conversations that can go on."""
        now = time.monotonic()
        waits = {p: c.wait for p, c in self._running.items() if c.wait is not None}
        due = [p for p, w in waits.items() if w.deadline <= now]
        if due:
            return due
        poller = select.poll()
        by_fd: dict[int, int] = {}
        for position, wait in waits.items():
            if wait.fd is not None:
                poller.register(wait.fd, wait.events)
                by_fd[wait.fd] = position
        timeout_ms = math.ceil(max(0.0, min(w.deadline for w in waits.values()) - now) * 1000)
        fired = [by_fd[fd] for fd, _ in poller.poll(timeout_ms) if fd in by_fd]
        now = time.monotonic()
        return fired + [p for p, w in waits.items() if w.deadline <= now and p not in fired]

    # -- results and leases ---------------------------------------------------------------------

    def _finish(self, position: int, result: DeliveryResult) -> None:
        self._results[position] = result
        if self._on_result is not None:
            self._on_result(position, result)

    def _give_back_spare(self) -> None:
        """Let other threads use the slots this batch cannot use now."""
        while self._spare:
            self._release(self._spare.pop())

    def _release(self, lease: Lease[Session]) -> None:
        if lease.conn is not None and (lease.conn.channel.unread or lease.conn.channel.writing):
            lease.reusable = False  # the server said something unasked, or output is stuck
        self._pool.release(lease)
