"""The dispatcher: claim due messages, deliver them over SMTP, record every outcome.

Deliveries happen in the one thread that calls :meth:`Dispatcher.run`: the transport keeps one
conversation per pooled connection going and goes on with whichever the server has answered
(a Python thread per connection would hand the GIL back and forth at every socket call). The
database writes that must not wait for a batch to end (heartbeats, lease renewals, results) are
made by the :class:`~postroom.dispatch.keeper.Keeper` from a thread of its own.

Lifecycle of a dispatcher (one per ``postroom serve`` process)::

    created ──run()──▶ running ──stop()──▶ stopping ──deliveries under way done──▶ stopped
                                              │
                                              └── close() while one still hangs ──▶ stopped,
                                                  that row left to be taken over

*running*: the keeper beats and writes; each :meth:`Dispatcher.step`

1. at most once a second: forgets dispatchers of this host whose process is gone, takes over
   the rows of dead dispatchers (each takeover is a recorded attempt, see
   :func:`~postroom.dispatch.policy.decide_takeover`) and expires overdue queued rows;
2. claims up to ``batch`` due rows under a lease (one row only, as a probe, while the relay is
   down; none before its next probe);
3. delivers them; a row goes on the wire only while the keeper can vouch for the lease, and
   each result goes to the ledger the moment it is known, for the keeper to write;
4. writes what is still owed (one write for the whole batch on a fast relay).

Between steps it waits on one event, set when ingest stored new rows or by :meth:`stop`, and
otherwise only until the next row falls due (at most ``poll_s``).

*stopping*: :meth:`stop` (safe from a signal handler or another thread): no new delivery starts;
the deliveries under way finish; the rows not started are released. :meth:`close` then writes
everything owed and removes the dispatcher from the ``dispatchers`` table; a delivery still
hanging keeps its lease only until another dispatcher sees this one gone, and is taken over.

Lifecycle of one claimed row::

    claimed ──lease vouched──▶ started ──reply──▶ result written (within a fraction of a second)
       │                          └── this process dies ──▶ taken over: maybe_delivered
       ├── stop() / lease not vouched before it started ──▶ released
       └── this process dies ──▶ taken over within seconds: abandoned (counts as an attempt)
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from postroom.dispatch.keeper import Keeper, Liveness
from postroom.dispatch.ledger import Ledger
from postroom.dispatch.parsed import ParsedEmails, render_payload
from postroom.dispatch.policy import (
    Decision,
    RetryPolicy,
    decide,
    decide_deferred,
    decide_takeover,
)
from postroom.errors import MessageError, PayloadError, StoreError
from postroom.store import (
    Abandoned,
    AttemptRecord,
    Claimed,
    DispatcherBeat,
    Finish,
    RecipientReply,
    Store,
)
from postroom.transport.base import DeliveryResult, Job, Outcome, Reply, Transport

__all__ = ["Dispatcher", "recipient_replies", "utc_now"]

log = logging.getLogger("postroom.dispatch")

_MAINTAIN_EVERY = timedelta(seconds=1)
#: how long a message deferred by the relay waits when the relay names no time for its probe
_DEFERRED_WAIT = timedelta(seconds=5)
#: jobs one delivery stream takes at most (it keeps a result per job until it ends)
_STREAM_JOBS = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def recipient_replies(recipients: Sequence[str], result: DeliveryResult) -> list[RecipientReply]:
    """What decided each recipient in one attempt: its own refusal at RCPT, else the reply that
    ended its transaction (after the final dot when it was accepted). ``code`` is ``None`` when
    there was no reply (a timeout, a lost connection). None at all when the relay was down."""
    if result.outcome is Outcome.DEFERRED:
        return []
    replies = []
    for rcpt in recipients:
        reply = result.refused.get(rcpt, result.reply)
        replies.append(RecipientReply(rcpt, reply.code or None, reply.enhanced, reply.text))
    return replies


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


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
        lease_s: float = 60.0,
        heartbeat_s: float = 2.0,
        poll_s: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
        parsed: ParsedEmails | None = None,
        host: str | None = None,
        process_exists: Callable[[int], bool] = _process_exists,
    ) -> None:
        self.store, self.transport, self.owner = store, transport, owner
        self.parsed = parsed
        self.policy, self.batch = policy, batch
        self.liveness = Liveness(lease_s=lease_s, heartbeat_s=heartbeat_s)
        self.poll_s, self.clock, self.rand = poll_s, clock, rand
        self.host = host or socket.gethostname()
        self._process_exists = process_exists
        self.ledger = Ledger()
        me = DispatcherBeat(id=owner, host=self.host, pid=os.getpid(), started_at=clock())
        self.keeper = Keeper(
            store, self.ledger, me, self.liveness, clock=clock, relay=lambda: transport.relay
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_maintained: datetime | None = None
        self._not_vouched_logged = False

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a step now (ingest calls this after storing new rows)."""
        self._wake.set()

    def stop(self) -> None:
        """Start no new delivery; :meth:`run` returns after those under way. Signal-safe."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Dispatch until :meth:`stop`. Runs in the calling thread; the keeper in its own."""
        self.take_over_leftovers()
        self.keeper.start()
        while not self._stopping.is_set():
            self._wake.clear()
            busy = self._step_safely()
            if not busy and not self._stopping.is_set():
                self._wake.wait(self._idle_wait_s())

    def close(self) -> int:
        """After :meth:`stop`: release what did not start, write everything owed, leave the
        ``dispatchers`` table. Returns how many deliveries were still hanging (their rows are
        taken over by the next dispatcher that looks)."""
        self.stop()
        hanging = self.ledger.close()
        self.keeper.stop()
        owed = self.ledger.owing
        if owed:
            raise StoreError(f"{owed} result(s) could not be recorded before stopping")
        self.store.forget_dispatchers([self.owner])
        return hanging

    # -- one step -----------------------------------------------------------------------------

    def take_over_leftovers(self) -> None:
        """Before the first heartbeat: rows a previous run under the same (configured) id left
        in ``sending`` are taken over, as rows of any dead dispatcher are."""
        while self._take_over(self.clock(), own_leftovers=True) >= self._takeover_limit:
            pass

    def step(self) -> bool:
        """Maintain, claim, deliver a stream, write. True when more may be due at once."""
        self.keeper.tick()
        now = self.clock()
        self._maintain(now)
        if self._stopping.is_set():
            return False
        rows = self._claim(now)
        more = self._deliver_stream(rows) if rows else False
        self.keeper.tick()
        return more

    def _step_safely(self) -> bool:
        try:
            return self.step()
        except StoreError as exc:
            log.error("database error, retrying in %.1fs: %s", self.poll_s, exc)
            return False

    def _claim(self, now: datetime) -> list[Claimed]:
        if not self.keeper.may_start(now):
            return []
        relay = self.transport.relay
        limit = self.batch
        if not relay.up:
            if relay.retry_at is not None and relay.retry_at > now:
                return []
            limit = 1  # a probe
        lease_s = self.liveness.lease_s
        rows = self.store.claim_due(self.owner, limit, lease_s, now)
        self.ledger.hold(row.id for row in rows)
        return rows

    def _refill(self, waiting: deque[Claimed]) -> bool:
        """A connection is free and nothing claimed waits: write what is owed, maintain, and
        claim the next ``batch`` due rows into ``waiting``. False when none came (nothing due,
        stopping, the relay down, or the leases not vouched for)."""
        self.keeper.tick()
        now = self.clock()
        self._maintain(now)
        if self._stopping.is_set() or not self.transport.relay.up:
            return False
        rows = self._claim(now)
        waiting.extend(rows)
        return bool(rows)

    def _deliver_stream(self, first: Sequence[Claimed]) -> bool:
        """Deliver ``first``, then keep every connection busy: each time the transport can take
        another job and nothing claimed waits, claim more (:meth:`_refill`). The stream ends when
        nothing more is due, on stop, or after ``_STREAM_JOBS`` jobs (True then: more may be
        due), which bounds what the transport keeps of one stream. Each result goes to the
        ledger as soon as it is known; rows whose delivery did not start are released."""
        waiting: deque[Claimed] = deque(first)
        started: dict[int, Claimed] = {}  # by position, until the result is recorded
        full = False

        def jobs() -> Iterator[Job]:
            nonlocal full
            position = 0  # the transport numbers jobs in the order they are read
            while position < _STREAM_JOBS:
                if not waiting and not self._refill(waiting):
                    return
                row = waiting[0]
                if not self._may_start(row):
                    return
                waiting.popleft()
                message = self._render(row)
                if message is None:
                    continue
                if not self.ledger.begin(row.id):
                    if self.ledger.closed:
                        return  # the dispatcher is stopping
                    continue  # taken over by another dispatcher meanwhile
                started[position] = row
                position += 1
                yield row.mail_from, row.recipients, message
            full = True

        def on_result(position: int, result: DeliveryResult) -> None:
            self._record(started.pop(position), result)

        for position, result in self._deliver(jobs(), on_result, started):
            if position in started:
                self._record(started.pop(position), result)
        self.ledger.release(row.id for row in waiting)  # claimed, never started
        return full

    def _may_start(self, row: Claimed) -> bool:
        if self._stopping.is_set():
            return False
        if self.keeper.may_start(self.clock()):
            self._not_vouched_logged = False
            return True
        if not self._not_vouched_logged:
            log.warning("cannot vouch for the leases (no recent heartbeat): no new deliveries")
            self._not_vouched_logged = True
        return False

    def _render(self, row: Claimed) -> bytes | None:
        """The message bytes of ``row``; a payload that cannot be rendered fails it now."""
        try:
            if self.parsed is not None:
                return self.parsed.render(row.data)
            return render_payload(row.data)
        except (MessageError, PayloadError, ValueError, KeyError, TypeError) as exc:
            reply = Reply(0, f"cannot render the message: {exc}")
            self._record(row, DeliveryResult(Outcome.PERMANENT, reply))
            return None

    def _deliver(
        self,
        jobs: Iterator[Job],
        on_result: Callable[[int, DeliveryResult], None],
        started: Mapping[int, Claimed],
    ) -> Iterator[tuple[int, DeliveryResult]]:
        """Results by position; those ``on_result`` already had are skipped by the caller."""
        try:
            return enumerate(self.transport.deliver_batch(jobs, on_result))
        except Exception as exc:  # a transport must not raise; never lose the rows if one does
            ids = ", ".join(row.id for row in started.values())
            log.exception("transport raised while sending %s", ids)
            result = DeliveryResult(Outcome.TEMPORARY, Reply(0, f"transport error: {exc!r}"))
            return ((position, result) for position in list(started))

    # -- outcomes -----------------------------------------------------------------------------

    def _record(self, claimed: Claimed, result: DeliveryResult) -> None:
        self.ledger.result(self._finish_for(claimed, result))

    def _finish_for(self, claimed: Claimed, result: DeliveryResult) -> Finish:
        ended_at = self.clock()
        if result.outcome is Outcome.DEFERRED:
            return self._deferred(claimed, result, ended_at)
        decision = decide(
            result,
            recipients=claimed.recipients,
            num_fails=claimed.num_fails,
            expires_at=claimed.expires_at,
            now=ended_at,
            policy=self.policy,
            rand=self.rand,
            refused_before=claimed.refused,
        )
        attempt = AttemptRecord(
            started_at=ended_at - timedelta(seconds=result.duration_s),
            ended_at=ended_at,
            outcome=result.outcome.value,
            code=result.reply.code or None,
            enhanced_code=result.reply.enhanced,
            reply=result.reply.text,
            dispatcher=self.owner,
            recipients=list(claimed.recipients),
            replies=recipient_replies(claimed.recipients, result),
        )
        return self._finish(claimed.id, decision, attempt)

    def _deferred(self, claimed: Claimed, result: DeliveryResult, now: datetime) -> Finish:
        relay = self.transport.relay
        retry_at = relay.retry_at or now + _DEFERRED_WAIT  # (no probe time known yet)
        decision = decide_deferred(
            relay.reason or str(result.reply),
            retry_at=max(retry_at, now),
            recipients=claimed.recipients,
            expires_at=claimed.expires_at,
        )
        return self._finish(claimed.id, decision, None)

    def _finish(self, id: str, decision: Decision, attempt: AttemptRecord | None) -> Finish:
        if decision.failure and decision.status != "queued":
            log.info("message %s: %s (%s)", id, decision.status, decision.failure)
        return Finish(
            id=id,
            status=decision.status,
            attempt=attempt,
            count_fail=decision.count_fail,
            failure=decision.failure,
            next_attempt_at=decision.next_attempt_at,
            pending_recipients=decision.pending_recipients,
            sent_at=decision.sent_at,
            refused=decision.refused,
        )

    # -- maintenance --------------------------------------------------------------------------

    def _maintain(self, now: datetime) -> None:
        last = self._last_maintained
        if last is not None and timedelta(0) <= now - last < _MAINTAIN_EVERY:
            return  # (a clock set back does not postpone maintenance)
        self._last_maintained = now
        self._forget_gone_processes()
        self._take_over(now)
        expired = self.store.expire_overdue(now)
        if expired:
            log.info("%d message(s) expired: not sent within max-time", expired)

    def _forget_gone_processes(self) -> None:
        """Dispatchers of this host whose process is gone are dead now, not in seconds."""
        gone = [
            d.id
            for d in self.store.dispatchers()
            if d.host == self.host and d.id != self.owner and not self._process_exists(d.pid)
        ]
        if gone:
            log.info("dispatcher(s) %s are gone: taking over their messages", ", ".join(gone))
            self.store.forget_dispatchers(gone)

    @property
    def _takeover_limit(self) -> int:
        return max(self.batch, 100)

    def _take_over(self, now: datetime, *, own_leftovers: bool = False) -> int:
        """Take over rows of dead dispatchers and finish each as an attempt; return how many."""
        taken = self.store.take_over(
            self.owner,
            now,
            dead_after_s=self.liveness.dead_after_s,
            lease_s=self.liveness.lease_s,
            limit=self._takeover_limit,
            own_leftovers=own_leftovers,
        )
        if not taken:
            return 0
        self.ledger.hold(row.id for row in taken)
        for row in taken:
            self.ledger.result(self._takeover_finish(row, now))
        log.warning("took over %d message(s) from dead dispatcher(s)", len(taken))
        self.keeper.tick()
        return len(taken)

    def _takeover_finish(self, row: Abandoned, now: datetime) -> Finish:
        began = row.attempt_started_at
        what = f"dispatcher {row.previous_owner} stopped while holding it"
        if began is not None:
            what += f" (its delivery had begun at {began:%Y-%m-%d %H:%M:%S} UTC)"
        decision = decide_takeover(
            what,
            recipients=row.recipients,
            num_fails=row.num_fails,
            expires_at=row.expires_at,
            now=now,
            policy=self.policy,
        )
        attempt = AttemptRecord(
            started_at=began or now,
            ended_at=now,
            outcome="maybe_delivered" if began is not None else "abandoned",
            code=None,
            enhanced_code=None,
            reply=what,
            dispatcher=row.previous_owner,
            recipients=list(row.recipients),
        )
        return self._finish(row.id, decision, attempt)

    def _idle_wait_s(self) -> float:
        try:
            due = self.store.next_due_at()
        except StoreError:
            return self.poll_s
        relay = self.transport.relay
        if not relay.up and relay.retry_at is not None:
            due = relay.retry_at if due is None else max(due, relay.retry_at)
        if due is None:
            return self.poll_s
        return min(max((due - self.clock()).total_seconds(), 0.0), self.poll_s)
