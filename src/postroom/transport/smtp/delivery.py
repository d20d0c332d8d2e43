"""One job's delivery: its transactions (chunks of recipients), on one pooled connection.

    [set up a connection, if the lease has none] --> transaction per chunk --> merged result

* **Relay failures are the relay's.** Setting up a connection is admitted by the breaker
  (:mod:`.breaker`); a failed set-up opens it, and the chunks not sent come back ``DEFERRED``.
* **Stale connections are invisible.** When MAIL FROM on a connection that carried an earlier
  transaction meets a closed connection or a 421, nothing of this one reached the server: the
  connection is replaced and the transaction runs again, once per delivery.
* **Chunks.** More than 100 recipients go in several transactions with the same message. The
  result is ``SENT`` if any chunk was sent, else the outcome most worth retrying
  (``MAYBE_DELIVERED``, ``TEMPORARY``, ``DEFERRED``, then ``PERMANENT``). Recipients whose chunk
  ended otherwise appear in ``refused`` with the reply that ended it, so a retry reaches exactly
  them. After a lost connection the remaining chunks are not attempted (code 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.transport.base import DeliveryResult, Outcome, Reply
from postroom.transport.pool import Lease
from postroom.transport.smtp.breaker import Admission, RelayBreaker
from postroom.transport.smtp.channel import Turns
from postroom.transport.smtp.envelope import Prepared, mail_command, refusal
from postroom.transport.smtp.session import Session, SetupFailed, open_session
from postroom.transport.smtp.settings import SmtpSettings
from postroom.transport.smtp.transaction import Transaction, TxnEnd

__all__ = ["Relay", "RelayUnavailable", "deliver", "merge"]


class RelayUnavailable(Exception):
    """No connection could be set up: the relay failed, or rests after failing."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Relay:
    """What a delivery needs of its transport: the settings, the EHLO name, the breaker."""

    settings: SmtpSettings
    helo: str
    breaker: RelayBreaker

    def connect(self, *, admitted: bool) -> Turns[Session]:
        """A new ready session; ``admitted``: the breaker already admitted this set-up."""
        if not admitted and self.breaker.admit() is not Admission.OPEN:
            raise RelayUnavailable(self.resting())
        try:
            session = yield from open_session(self.settings, self.helo)
        except SetupFailed as exc:
            self.breaker.failed(str(exc.reply))
            raise RelayUnavailable(exc.reply) from exc
        except BaseException:
            self.breaker.abandon()
            raise
        self.breaker.opened()
        return session

    def resting(self) -> Reply:
        """The reply of a job deferred because the relay rests (or is being probed)."""
        state = self.breaker.state
        if state.up:
            return Reply(0, f"relay {self.breaker.name}: waiting for a first connection")
        when = state.retry_at.isoformat(timespec="seconds") if state.retry_at else "later"
        return Reply(0, f"relay {self.breaker.name} is down ({state.reason}); next try {when}")


def deliver(
    relay: Relay,
    lease: Lease[Session],
    job: Prepared,
    *,
    admitted: bool = False,
    presented_on: Session | None = None,
) -> Turns[DeliveryResult]:
    """Deliver ``job`` over ``lease``'s connection (set up when it has none).

    ``presented_on``: the session on which the first envelope was already written, behind the
    previous message's data; on any other it is written again.
    """
    started = time.monotonic()
    chunks = job.chunks()
    ends: list[TxnEnd] = []
    retried = False
    while len(ends) < len(chunks):
        session = yield from _session(relay, lease, admitted)
        admitted = False
        if isinstance(session, Reply):
            ends.extend(TxnEnd(Outcome.DEFERRED, session, c) for c in chunks[len(ends) :])
            break
        presented = session is presented_on and not ends and not retried
        last = len(ends) == len(chunks) - 1
        end = yield from _chunk(relay.settings, session, job, chunks[len(ends)], presented, last)
        if end.stale and (session.transactions > 0 or lease.reused) and not retried:
            retried = True
            discard(lease)
            continue
        ends.append(end)
        session.transactions += 1
        if not end.keep:
            discard(lease)
            gone = Reply(0, f"not attempted: the connection was lost earlier ({end.reply})")
            ends.extend(TxnEnd(Outcome.TEMPORARY, gone, c) for c in chunks[len(ends) :])
    return merge(ends, time.monotonic() - started)


def _session(relay: Relay, lease: Lease[Session], admitted: bool) -> Turns[Session | Reply]:
    """The lease's session, set up when it has none; the reply of the deferral when the relay
    cannot be used."""
    if lease.conn is None:
        try:
            lease.conn = yield from relay.connect(admitted=admitted)
        except RelayUnavailable as exc:
            return exc.reply
    return lease.conn


def _chunk(
    settings: SmtpSettings,
    session: Session,
    job: Prepared,
    chunk: tuple[str, ...],
    presented: bool,
    last: bool,
) -> Turns[TxnEnd]:
    """One transaction of ``job``; refused before MAIL when the server cannot take it."""
    mail = mail_command(job, session)
    if mail is None:
        return TxnEnd(Outcome.PERMANENT, Reply(0, refusal(job, session)), chunk)
    txn = Transaction(
        session, mail, chunk, job.data, settings.command_timeout_s, settings.data_timeout_s
    )
    return (yield from txn.run(presented=presented, follow=last and txn.pipelined))


def discard(lease: Lease[Session]) -> None:
    """Drop a connection in an unknown state: no QUIT, it could only meet a late reply."""
    if lease.conn is not None:
        lease.conn.close(quit=False)
        lease.conn = None


_RETRY_RANK = {
    Outcome.MAYBE_DELIVERED: 0,
    Outcome.TEMPORARY: 1,
    Outcome.DEFERRED: 2,
    Outcome.PERMANENT: 3,
}


def merge(ends: Sequence[TxnEnd], duration_s: float = 0.0) -> DeliveryResult:
    """One result from the transactions of one delivery; see the module docstring."""
    if len(ends) == 1:
        [end] = ends
        return DeliveryResult(
            end.outcome, end.reply, end.accepted, end.refused, duration_s, end.replies
        )
    sent = [t for t in ends if t.outcome is Outcome.SENT]
    decisive = sent[0] if sent else min(ends, key=lambda t: _RETRY_RANK[t.outcome])
    accepted = tuple(rcpt for t in sent for rcpt in t.accepted)
    refused: dict[str, Reply] = {}
    replies: dict[str, Reply] = {}
    for t in ends:
        refused.update(t.refused)
        replies.update(t.replies)
    done = set(accepted) | set(refused)
    for t in ends:
        if t.outcome is not decisive.outcome:
            refused.update((rcpt, t.reply) for rcpt in t.recipients if rcpt not in done)
    return DeliveryResult(decisive.outcome, decisive.reply, accepted, refused, duration_s, replies)
