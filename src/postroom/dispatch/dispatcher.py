"""The dispatcher: claim due messages, deliver them over SMTP, record every outcome.

Everything happens in the one thread that calls :meth:`Dispatcher.run`. Deliveries overlap
without threads: the transport keeps one conversation per pooled connection going, goes on with
whichever the server has answered, and gives a connection the next message as soon as it is
done. A Python thread per connection would hand the GIL back and forth
at every socket and database call, and that cost more than the SMTP work itself.

Lifecycle of a dispatcher (one per ``postroom serve`` process)::

    running ──stop()──▶ stopping ──the deliveries under way are done──▶ stopped

*running*: each :meth:`Dispatcher.step`

1. writes results a failed database write left behind, if any (before claiming more);
2. at most once a second, expires queued messages past their ``expires_at``;
3. claims up to ``batch`` due rows under a lease;
4. delivers them and writes every result in one transaction, fenced by the lease owner.

Between steps it waits on one event, set when ingest stored new rows or by :meth:`stop`, and
otherwise only until the next row falls due (at most ``poll_s``, the fallback for rows that
other dispatchers ingested).

*stopping*: :meth:`stop` (safe from a signal handler or another thread) lets the deliveries
under way finish (bounded by the SMTP timeouts); the rows of the batch that did not start are
released (back to ``queued``, no failure counted) and the results are written. Whoever runs
the dispatcher in a thread may stop waiting for it after a grace period: a delivery still
running then keeps its lease, which expires, and the row is claimed again. That message may be
sent twice, and it is the only way one can be.

Lifecycle of one claimed row::

    claimed (lease held) ──▶ delivered ──▶ result written with its batch
            │
            ├── stop() before its delivery began ──▶ released
            └── this process dies ──▶ lease expires ──▶ claimed again by any dispatcher
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from postroom.dispatch.parsed import ParsedEmails
from postroom.dispatch.policy import RetryPolicy, decide
from postroom.errors import StoreError
from postroom.store import AttemptRecord, Claimed, Finish, Store
from postroom.transport.base import DeliveryResult, Job, Outcome, Reply, Transport

__all__ = ["Dispatcher"]

log = logging.getLogger("postroom.dispatch")

_EXPIRY_EVERY = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Claims, delivers and records; see the module docstring for the lifecycle."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        owner: str,
        policy: RetryPolicy,
        batch: int = 50,
        lease_s: float = 300.0,
        poll_s: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
        parsed: ParsedEmails | None = None,
    ) -> None:
        self.store, self.transport, self.owner = store, transport, owner
        self.parsed = parsed
        self.policy, self.batch, self.lease_s = policy, batch, lease_s
        self.poll_s, self.clock, self.rand = poll_s, clock, rand
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_expiry: datetime | None = None
        self._unwritten: list[Finish] = []
        self._unreleased: list[str] = []

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a step now (ingest calls this after storing new rows)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the deliveries under way; :meth:`run` then returns. Signal-handler safe."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Dispatch until :meth:`stop`. Runs in the calling thread."""
        while not self._stopping.is_set():
            self._wake.clear()
            busy = self._step_safely()
            if not busy and not self._stopping.is_set():
                self._wake.wait(self._idle_wait_s())
        try:
            self._write_results()
        except StoreError as exc:
            log.error("could not record the last results (leases will expire): %s", exc)

    # -- one step -----------------------------------------------------------------------------

    def step(self) -> bool:
        """Write leftovers, expire, claim, deliver, write. True when more may be due at once."""
        self._write_results()
        now = self.clock()
        self._expire(now)
        if self._stopping.is_set():
            return False
        rows = self.store.claim_due(self.owner, self.batch, self.lease_s, now)
        if rows:
            self._deliver_all(rows)
            self._write_results()
        return len(rows) == self.batch

    def _step_safely(self) -> bool:
        try:
            return self.step()
        except StoreError as exc:
            log.error("database error, retrying in %.1fs: %s", self.poll_s, exc)
            return False

    def _deliver_all(self, rows: Sequence[Claimed]) -> None:
        """Deliver ``rows``; after :meth:`stop`, the rows not yet started are released."""

        def jobs() -> Iterator[Job]:
            for row in rows:
                if self._stopping.is_set():
                    return
                yield row.mail_from, row.recipients, row.data

        results = self._deliver(jobs(), rows)
        ended = self.clock()
        self._unwritten.extend(
            self._finish_for(row, result, ended - timedelta(seconds=result.duration_s), ended)
            for row, result in zip(rows, results, strict=False)
        )
        self._unreleased.extend(row.id for row in rows[len(results) :])

    def _deliver(self, jobs: Iterator[Job], rows: Sequence[Claimed]) -> list[DeliveryResult]:
        try:
            render = self.parsed.render if self.parsed is not None else None
            return self.transport.deliver_payloads(jobs, render)
        except Exception as exc:  # a transport must not raise; never lose the rows if one does
            log.exception("transport raised while sending %s", ", ".join(r.id for r in rows))
            reply = Reply(0, f"transport error: {exc!r}")
            return [DeliveryResult(Outcome.TEMPORARY, reply) for _ in rows]

    def _write_results(self) -> None:
        """Release and finish what is pending, in that order; kept for the next try on error."""
        if self._unreleased:
            self.store.release(self.owner, self._unreleased, self.clock())
            self._unreleased = []
        if not self._unwritten:
            return
        finishes = self._unwritten
        updated = self.store.finish(self.owner, finishes)
        self._unwritten = []
        if updated < len(finishes):
            log.warning(
                "%d result(s) not recorded: their lease was taken over by another dispatcher",
                len(finishes) - updated,
            )

    def _finish_for(
        self, claimed: Claimed, result: DeliveryResult, started_at: datetime, ended_at: datetime
    ) -> Finish:
        decision = decide(
            result,
            recipients=claimed.recipients,
            num_fails=claimed.num_fails,
            expires_at=claimed.expires_at,
            now=ended_at,
            policy=self.policy,
            rand=self.rand,
        )
        attempt = AttemptRecord(
            started_at=started_at,
            ended_at=ended_at,
            outcome=result.outcome.value,
            code=result.reply.code or None,
            enhanced_code=result.reply.enhanced,
            reply=result.reply.text,
            dispatcher=self.owner,
            recipients=list(claimed.recipients),
        )
        if decision.failure:
            log.info("message %s: %s (%s)", claimed.id, decision.status, decision.failure)
        return Finish(
            id=claimed.id,
            status=decision.status,
            attempt=attempt,
            count_fail=decision.count_fail,
            failure=decision.failure,
            next_attempt_at=decision.next_attempt_at,
            pending_recipients=decision.pending_recipients,
            sent_at=decision.sent_at,
        )

    def _expire(self, now: datetime) -> None:
        last = self._last_expiry
        if last is not None and timedelta(0) <= now - last < _EXPIRY_EVERY:
            return  # (a clock set back does not postpone expiry)
        self._last_expiry = now
        expired = self.store.expire_overdue(now)
        if expired:
            log.info("%d message(s) expired: not sent within max-time", expired)

    def _idle_wait_s(self) -> float:
        try:
            due = self.store.next_due_at()
        except StoreError:
            return self.poll_s
        if due is None:
            return self.poll_s
        return min(max((due - self.clock()).total_seconds(), 0.0), self.poll_s)
