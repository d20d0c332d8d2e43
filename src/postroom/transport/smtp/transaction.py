"""The conversation of one transaction: one chunk of at most 100 recipients of one message.

Each arrow waits for one reply, in order (with PIPELINING, RFC 2920, the envelope is written in
one go and the replies are read in the same order)::

    MAIL --2yz--> RCPT (each: 2yz accepted, 4yz/5yz refused) --> DATA --354--> message, dot
                                                                             --> reply to the dot
    2yz after the dot: SENT          4yz: TEMPORARY          5yz: PERMANENT   (no RSET needed)
    MAIL or DATA refused, or every recipient refused: RSET --250--> ready   (else closed)

    421, a lost connection, a timeout, a malformed reply, or a reply that does not fit its
    command (354 to RCPT, 2yz to DATA, 3yz to the dot): the connection is closed. Before the
    dot the transaction is TEMPORARY; after it MAYBE_DELIVERED (the server may have it).

A 421 or a lost connection at MAIL FROM means nothing of the transaction reached the server:
it is marked ``stale`` so that a reused connection can be replaced and the transaction run again.
An enhanced status code of an unexpected subject (``250 2.1.0`` after the dot) is recorded as
sent: the reply code decides, the enhanced code is only kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postroom.transport.base import Outcome, Reply
from postroom.transport.smtp.channel import (
    ASK_NEXT_ENVELOPE,
    ConnectionLost,
    Turns,
    await_answer,
)
from postroom.transport.smtp.replies import Answer
from postroom.transport.smtp.session import Session

__all__ = ["Transaction", "TxnEnd", "envelope"]


def envelope(mail: str, recipients: tuple[str, ...]) -> bytes:
    """The MAIL command ``mail``, RCPT for each recipient and DATA, as one pipelined group."""
    if len(recipients) == 1:
        return f"{mail}\r\nRCPT TO:<{recipients[0]}>\r\nDATA\r\n".encode()
    rcpts = "".join([f"RCPT TO:<{r}>\r\n" for r in recipients])
    return f"{mail}\r\n{rcpts}DATA\r\n".encode()


@dataclass(slots=True)
class TxnEnd:
    """How one transaction ended; ``keep``: the connection is clean and may carry the next."""

    outcome: Outcome
    reply: Reply
    recipients: tuple[str, ...]
    accepted: tuple[str, ...] = ()
    refused: dict[str, Reply] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    keep: bool = True
    stale: bool = False


@dataclass(slots=True)
class Transaction:
    """One transaction under way on ``session``; :meth:`run` is its conversation."""

    session: Session
    mail: str  # the MAIL FROM command with its parameters
    recipients: tuple[str, ...]
    data: bytes
    command_timeout_s: float
    data_timeout_s: float
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Reply] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    step: str = "MAIL FROM"
    dot_sent: bool = False

    def envelope(self) -> bytes:
        """MAIL, every RCPT and DATA as one pipelined group."""
        return envelope(self.mail, self.recipients)

    @property
    def pipelined(self) -> bool:
        return self.session.offers("PIPELINING")

    def run(self, *, presented: bool = False, follow: bool = False) -> Turns[TxnEnd]:
        """The conversation. ``presented``: the pipelined envelope was already written (behind
        the previous message's data). ``follow``: ask for the next message's envelope to write
        right behind this one's data."""
        try:
            if self.pipelined and not presented:
                self.session.channel.write(self.envelope())
            return (yield from self._converse(follow))
        except ConnectionLost as exc:
            return self._lost(exc)

    def _converse(self, follow: bool) -> Turns[TxnEnd]:
        mail = yield from self._ask(self.mail, "MAIL FROM")
        if mail.code == 421:
            return self._end(Outcome.TEMPORARY, mail.reply(), keep=False, stale=True)
        if mail.code // 100 != 2 and not self.pipelined:
            return (yield from self._refused(mail, "MAIL FROM"))
        for rcpt in self.recipients:
            answer = yield from self._recipient(rcpt, record=mail.code // 100 == 2)
            if answer.code == 421:
                return self._end(Outcome.TEMPORARY, answer.reply(), keep=False)
        if not self.pipelined and not self.accepted:
            return (yield from self._all_refused())
        data = yield from self._ask("DATA", "DATA", fits=(3, 4, 5))
        if data.code // 100 == 3 and data.code != 354:
            raise ConnectionLost(
                f"protocol error: {data.reply()} does not answer DATA", malformed=True
            )
        if mail.code // 100 != 2:
            return (yield from self._refused(mail, "MAIL FROM", data))
        if not self.accepted:
            return (yield from self._all_refused(data))
        if data.code != 354:
            return (yield from self._refused(data, "DATA"))
        return (yield from self._send_data(follow))

    def _recipient(self, rcpt: str, *, record: bool) -> Turns[Answer]:
        """The reply to RCPT TO, recorded (unless MAIL FROM failed, or it is a 421)."""
        answer = yield from self._ask(f"RCPT TO:<{rcpt}>", f"RCPT TO:<{rcpt}>")
        if not record or answer.code == 421:
            return answer
        reply = answer.reply()
        self.replies[rcpt] = reply
        if reply.is_success:
            self.accepted.append(rcpt)
        else:
            self.refused[rcpt] = reply
        return answer

    def _ask(
        self,
        command: str,
        step: str,
        fits: tuple[int, ...] = (2, 4, 5),
        *,
        write: bool | None = None,
    ) -> Turns[Answer]:
        """The reply to ``command``, written now unless pipelined (``write`` overrides); a reply
        of another class than ``fits`` does not answer this command, and ends the connection."""
        channel = self.session.channel
        self.step = step
        if write or (write is None and not self.pipelined):
            if channel.unread:
                raise ConnectionLost("protocol error: a reply nobody asked for", malformed=True)
            channel.write(command.encode() + b"\r\n")
        answer = yield from await_answer(
            channel, f"waiting for the reply to {step}", timeout_s=self.command_timeout_s
        )
        if answer.code // 100 not in fits:
            why = f"protocol error: {answer.reply()} does not answer {step}"
            raise ConnectionLost(why, malformed=True)
        return answer

    def _send_data(self, follow: bool) -> Turns[TxnEnd]:
        self.step = "while sending the message"
        envelope = (yield ASK_NEXT_ENVELOPE) if follow else None
        channel = self.session.channel
        if envelope and len(self.data) < 65536:
            channel.write(self.data + envelope)
        else:
            channel.write(self.data)
            channel.write(envelope or b"")
        self.dot_sent = True
        self.step = "the final dot"
        answer = yield from await_answer(
            channel, "waiting for the reply to the final dot", timeout_s=self.data_timeout_s
        )
        reply = answer.reply()
        if answer.code // 100 == 2:
            return self._end(Outcome.SENT, reply, accepted=tuple(self.accepted))
        if answer.code // 100 == 5:
            return self._end(Outcome.PERMANENT, reply)
        if answer.code // 100 == 4:
            return self._end(Outcome.TEMPORARY, reply, keep=answer.code != 421)
        raise ConnectionLost(
            f"protocol error: {reply} does not answer the final dot", malformed=True
        )

    def _refused(self, answer: Answer, step: str, data: Answer | None = None) -> Turns[TxnEnd]:
        """MAIL FROM or DATA refused with 4yz/5yz: the transaction fails, the connection is
        reset for the next one."""
        if data is not None and data.code == 354:
            return self._accepted_data_without_recipient(data)
        reply = answer.reply()
        if answer.code == 421:
            return self._end(Outcome.TEMPORARY, reply, keep=False)
        outcome = Outcome.PERMANENT if reply.is_permanent else Outcome.TEMPORARY
        keep = yield from self._reset()
        return self._end(outcome, reply, keep=keep)

    def _all_refused(self, data: Answer | None = None) -> Turns[TxnEnd]:
        if data is not None and data.code == 354:
            return self._accepted_data_without_recipient(data)
        temporary = [reply for reply in self.refused.values() if not reply.is_permanent]
        outcome = Outcome.TEMPORARY if temporary else Outcome.PERMANENT
        reply = temporary[0] if temporary else next(iter(self.refused.values()))
        keep = yield from self._reset()
        return self._end(outcome, reply, keep=keep)

    def _accepted_data_without_recipient(self, data: Answer) -> TxnEnd:
        """RFC 2920 3.1: DATA must be refused here; a lone dot would send an empty message."""
        why = f"the server accepted DATA with no valid recipient: {data.reply()}"
        return self._end(Outcome.TEMPORARY, Reply(0, why), keep=False)

    def _reset(self) -> Turns[bool]:
        """RSET after a failed transaction; ``True`` when the connection can carry the next."""
        try:
            answer = yield from self._ask("RSET", "RSET", write=True)
        except ConnectionLost:
            return False
        return answer.code == 250

    def _lost(self, exc: ConnectionLost) -> TxnEnd:
        if self.dot_sent:
            reply = Reply(0, f"{self._explain(exc)}; the server may have the message")
            return self._end(Outcome.MAYBE_DELIVERED, reply, keep=False)
        stale = self.step == "MAIL FROM" and not (exc.timed_out or exc.malformed)
        return self._end(Outcome.TEMPORARY, Reply(0, self._explain(exc)), keep=False, stale=stale)

    def _explain(self, exc: ConnectionLost) -> str:
        if exc.timed_out:  # it names the reply waited for
            return str(exc)
        if exc.malformed:
            return f"{exc} (at {self.step})"
        return str(exc).replace("connection lost", f"connection lost at {self.step}", 1)

    def _end(
        self,
        outcome: Outcome,
        reply: Reply,
        *,
        accepted: tuple[str, ...] = (),
        keep: bool = True,
        stale: bool = False,
    ) -> TxnEnd:
        return TxnEnd(
            outcome,
            reply,
            self.recipients,
            accepted=accepted,
            refused=dict(self.refused),
            replies=dict(self.replies),
            keep=keep,
            stale=stale,
        )
