"""The dispatcher: claim due messages, deliver them over SMTP, record every outcome.

Lifecycle of a dispatcher (one per ``postroom serve`` process)::

    running ──stop()──▶ draining ──in-flight work done, or grace over──▶ stopped

*running*: each :meth:`Dispatcher.step`

1. writes every result the workers produced, in one transaction, so a message is marked
   ``sent`` right after the server's 250 (fenced by the lease owner);
2. at most once a second, expires queued messages past their ``expires_at``;
3. when the workers are about to run out of claimed rows, claims up to ``batch`` due rows under
   a lease (never holding more than ``batch + workers``) and hands them to the worker threads
   (one SMTP delivery at a time per worker).

Between steps it waits on one event, set when a worker finishes, when ingest stored new rows, or
by :meth:`stop`, and otherwise only until the next row falls due (at most ``poll_s``, the fallback
for rows that other dispatchers ingested).

*draining*: no more claims; rows claimed but not yet started are released (back to ``queued``,
no failure counted); rows being sent are awaited up to ``grace_s`` and their results written.
A delivery still running after that keeps its lease, which expires, and the row is claimed
again: that message may be sent twice, and it is the only way one can be.

Lifecycle of one claimed row inside this process::

    claimed (lease held) ──▶ waiting for a worker ──▶ sending ──▶ result ──▶ finished
            │                        │
            │                        └── stop(), or waited longer than half its lease ──▶ released
            └── this process dies ──▶ lease expires ──▶ claimed again by any dispatcher
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from postroom.dispatch.policy import RetryPolicy, decide
from postroom.errors import StoreError
from postroom.store import AttemptRecord, Claimed, Finish, Store
from postroom.transport.base import DeliveryResult, Outcome, Reply, Transport

__all__ = ["Dispatcher"]

log = logging.getLogger("postroom.dispatch")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Job:
    claimed: Claimed
    claimed_mono: float


@dataclass(slots=True)
class _Done:
    claimed: Claimed
    finish: Finish | None  # None: released unstarted


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
        workers: int = 4,
        poll_s: float = 1.0,
        grace_s: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store, self.transport, self.owner = store, transport, owner
        self.policy, self.batch, self.lease_s = policy, batch, lease_s
        self.poll_s, self.grace_s = poll_s, grace_s
        self.clock, self.rand = clock, rand
        # a full batch can wait while every worker is busy: claims stay batch-sized
        self.max_inflight = batch + workers
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._done: list[_Done] = []
        self._inflight = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_expiry = 0.0
        self._last_claim_limit = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"postroom-smtp-{i}", daemon=True)
            for i in range(workers)
        ]

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a step now (ingest calls this after storing new rows)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then drains and returns. Safe from a signal handler."""
        self._stopping.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def inflight(self) -> int:
        with self._cond:
            return self._inflight

    def run(self) -> None:
        """Dispatch until :meth:`stop`, then drain. Runs in the calling thread."""
        for thread in self._threads:
            thread.start()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                busy = self._step_safely()
                if not busy and not self._stopping.is_set():
                    self._wake.wait(self._idle_wait_s())
        finally:
            self._drain()

    # -- one step -----------------------------------------------------------------------------

    def step(self) -> bool:
        """Finish results, expire, claim. Returns True when there may be more to claim at once.

        With no worker threads (``workers=0``) the claimed rows are delivered right here, which
        makes the dispatcher fully deterministic for tests driven by a fake clock.
        """
        self.finish_results()
        now = self.clock()
        self._expire(now)
        claimed = self._claim(now)
        if not self._threads and claimed:
            self._deliver_inline()
            self.finish_results()
        return claimed > 0 and claimed == self._last_claim_limit

    def _step_safely(self) -> bool:
        try:
            return self.step()
        except StoreError as exc:
            log.error("database error, retrying in %.1fs: %s", self.poll_s, exc)
            return False

    def finish_results(self) -> int:
        """Write every available result in one transaction; returns how many were written."""
        with self._cond:
            done, self._done = self._done, []
        if not done:
            return 0
        released = [d.claimed.id for d in done if d.finish is None]
        finishes = [d.finish for d in done if d.finish is not None]
        try:
            if released:
                self.store.release(self.owner, released, self.clock())
            updated = self.store.finish(self.owner, finishes) if finishes else 0
        except StoreError:
            with self._cond:
                self._done = done + self._done
            raise
        if updated < len(finishes):
            log.warning(
                "%d result(s) not recorded: their lease was taken over by another dispatcher",
                len(finishes) - updated,
            )
        with self._cond:
            self._inflight -= len(done)
        return len(done)

    def _finish_for(
        self, claimed: Claimed, result: DeliveryResult, started_at: datetime, ended_at: datetime
    ) -> Finish:
        """What to write for one delivery; runs in the worker, off the step loop's path."""
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
            log.info(
                "message %s: %s%s",
                claimed.id,
                decision.status,
                f" ({decision.failure})" if decision.failure else "",
            )
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
        mono = time.monotonic()
        if mono - self._last_expiry < 1.0 and self._threads:
            return
        self._last_expiry = mono
        expired = self.store.expire_overdue(now)
        if expired:
            log.info("%d message(s) expired: not sent within max-time", expired)

    def _claim(self, now: datetime) -> int:
        if self._stopping.is_set():
            return 0
        with self._cond:
            # refill at half a batch: a claim may wait behind another writer's transaction
            running_low = len(self._jobs) <= max(len(self._threads), self.batch // 2)
            limit = min(self.batch, self.max_inflight - self._inflight) if running_low else 0
        self._last_claim_limit = limit
        if limit <= 0:
            return 0
        rows = self.store.claim_due(self.owner, limit, self.lease_s, now)
        if rows:
            mono = time.monotonic()
            with self._cond:
                self._jobs.extend(_Job(row, mono) for row in rows)
                self._inflight += len(rows)
                self._cond.notify(len(rows))
        return len(rows)

    def _idle_wait_s(self) -> float:
        with self._cond:
            busy = self._inflight > 0
        if busy:
            return self.poll_s  # a finishing worker wakes us; no need to ask the database
        try:
            due = self.store.next_due_at()
        except StoreError:
            return self.poll_s
        if due is None:
            return self.poll_s
        return min(max((due - self.clock()).total_seconds(), 0.0), self.poll_s)

    # -- workers ------------------------------------------------------------------------------

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._jobs and not self._stopping.is_set():
                self._cond.wait()
            if self._stopping.is_set():
                return None
            return self._jobs.popleft()

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            self._run_job(job)

    def _deliver_inline(self) -> None:
        while True:
            with self._cond:
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            self._run_job(job)

    def _run_job(self, job: _Job) -> None:
        started = self.clock()
        if time.monotonic() - job.claimed_mono > self.lease_s / 2:
            self._record(_Done(job.claimed, None))
            return
        result = self._deliver(job.claimed)
        self._record(
            _Done(job.claimed, self._finish_for(job.claimed, result, started, self.clock()))
        )

    def _record(self, done: _Done) -> None:
        with self._cond:
            self._done.append(done)
        self._wake.set()

    def _deliver(self, claimed: Claimed) -> DeliveryResult:
        try:
            return self.transport.deliver_payload(
                claimed.mail_from, claimed.recipients, claimed.data
            )
        except Exception as exc:  # a transport must not raise; never lose the row if one does
            log.exception("transport raised while sending %s", claimed.id)
            return DeliveryResult(Outcome.TEMPORARY, Reply(0, f"transport error: {exc!r}"))

    # -- shutdown -----------------------------------------------------------------------------

    def _drain(self) -> None:
        self._stopping.set()
        with self._cond:
            unstarted, self._jobs = list(self._jobs), deque()
            self._cond.notify_all()
        for job in unstarted:
            self._record(_Done(job.claimed, None))
        deadline = time.monotonic() + self.grace_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(deadline - time.monotonic(), 0.0))
        try:
            self.finish_results()
        except StoreError as exc:
            log.error("could not record the last results (leases will expire): %s", exc)
        left = self.inflight
        if left:
            log.warning(
                "%d delivery(ies) still running at exit; their leases will expire and "
                "they will be retried",
                left,
            )
