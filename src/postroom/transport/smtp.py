"""SMTP delivery over a bounded pool of reused :mod:`smtplib` connections.

One :meth:`SmtpTransport.deliver` call borrows a connection (opening one when none is idle), runs
one transaction per chunk of at most 100 recipients, and returns the connection for the next
call. :meth:`SmtpTransport.deliver_batch` does the same for many messages from one thread, one
conversation per connection: each conversation is a generator that yields whenever it waits for
a reply, and the batch goes on with whichever the server has answered. Everything the server
says ends up in the :class:`~postroom.transport.base.DeliveryResult`; only bad arguments raise.

Life of a pooled connection::

    connect --> greeting --> EHLO --> [STARTTLS --> EHLO] --> [AUTH] --> ready
    ready --MAIL/RCPT/DATA/dot, success--> ready
    ready --transaction failed, reply received--> RSET --> ready    (RSET failing: closed)
    ready --421, dropped connection, timeout, malformed reply--> closed
    ready --idle longer than idle_timeout_s--> QUIT, closed          (checked when borrowing)

Outcome rules beyond :mod:`postroom.transport.base`, decided here:

* **Session setup is never the message's fault.** A refused connection, a DNS failure, a
  non-220 greeting, a refused EHLO or STARTTLS, an untrusted certificate, a missing STARTTLS
  offer when TLS is required, and an AUTH failure (e.g. 535) all report ``TEMPORARY``, with the
  server's reply code and text when there was one (code 0 otherwise) and a text that names
  the step. A permanent verdict would fail every queued message at once because of a
  configuration mistake; as temporary failures they wait, bounded by ``max-fails``/``max-time``.
* **Stale connections are invisible.** When MAIL FROM on a connection that already carried a
  transaction meets a closed connection or a 421, nothing of that transaction has reached the
  server: the connection is replaced and the transaction runs again, once per delivery.
* **Chunks.** More than 100 recipients are sent as several transactions with the same message.
  The result is ``SENT`` if any chunk was sent, else the outcome most worth retrying
  (``MAYBE_DELIVERED``, then ``TEMPORARY``, then ``PERMANENT``). Recipients whose chunk ended
  differently from that overall outcome appear in ``refused`` with the reply that ended their
  chunk, so a retry reaches exactly them. After a lost connection the remaining chunks are not
  attempted (code 0, "not attempted").
* **Pipelining.** When the server offers PIPELINING (RFC 2920), the envelope (MAIL, every RCPT,
  DATA) goes out in one write, and in a batch the next message's envelope goes out right behind
  the data of the one before (RFC 2920 lets message content open a group), so a message costs
  about one round trip. The message lined up that way waits for its predecessor's reply; if the
  connection is lost meanwhile, its envelope is sent again on a new one (nothing of it was
  delivered).
* Line endings of the message are normalised to CRLF and leading dots are doubled.
"""

from __future__ import annotations

import base64
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypeVar, cast, get_args

from postroom.errors import AddressError, ConfigError
from postroom.transport.base import DeliveryResult, Job, Outcome, Reply, Transport, unsendable
from postroom.transport.pool import ConnectionPool, Lease

if TYPE_CHECKING:
    from postroom.config import SmtpConfig

__all__ = ["MAX_RECIPIENTS_PER_TRANSACTION", "SmtpTransport", "TlsMode"]

TlsMode = Literal["auto", "starttls", "implicit", "none"]
T = TypeVar("T")
Turns = Generator[object, bytes | None, T]
"""A conversation step by step: it yields the socket whose reply it waits for (its timeout
already set for that reply), then returns ``T``. Nothing of the server's is left unread when
it yields: SMTP answers only what was sent."""

_NEXT_ENVELOPE = object()
"""Yielded just before a message's data goes out: "give me the next message's envelope to send
with it" (``b""`` for none). Only asked when the server offers PIPELINING."""

MAX_RECIPIENTS_PER_TRANSACTION = 100
"""RFC 5321 4.5.3.1.8: servers must accept at least 100 recipients per transaction."""

_IMPLICIT_TLS_PORT = 465
_QUIT_TIMEOUT_S = 2.0
_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
# What a broken connection looks like in smtplib: its own exceptions (a closed connection, a
# reply line that is too long) and the socket's (reset, broken pipe, timeout, TLS errors).
_LOST = (smtplib.SMTPException, OSError)


class _SetupError(Exception):
    """Raised while opening a connection; carries the reply to report."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(slots=True)
class _Connection:
    client: smtplib.SMTP
    transactions: int = 0


@dataclass(slots=True)
class _Conversation:
    """One delivery under way in :meth:`SmtpTransport.deliver_batch`.

    ``waiting`` is the socket whose reply it waits for (``None``: it has not begun), since
    ``since`` (monotonic seconds).
    """

    lease: Lease[_Connection]
    turns: Turns[list[_Txn]]
    started: float
    since: float
    waiting: socket.socket | None = None
    #: the envelope of its first transaction, written behind the previous message's data
    presented: bytes = b""
    #: the conversation lined up behind this one on the same connection, with its index
    follower: tuple[int, _Conversation] | None = None


def _timeout_of(sock: socket.socket) -> float:
    timeout = sock.gettimeout()
    return float("inf") if timeout is None else timeout


def _answered(running: dict[int, _Conversation]) -> list[int]:
    """The conversations that can go on without blocking: not begun, or answered by the server.

    Waits until there is one. A conversation whose socket timeout passed in the meantime goes on
    too, with a timeout of nothing left, so its read fails as a timeout at once.
    """
    while True:
        ready = [i for i, c in running.items() if c.waiting is None or c.waiting.fileno() < 0]
        if ready:
            return ready
        now = time.monotonic()
        deadlines = {i: c.since + _timeout_of(c.waiting) for i, c in running.items() if c.waiting}
        overdue = [i for i, deadline in deadlines.items() if deadline <= now]
        if overdue:
            for i in overdue:
                cast("socket.socket", running[i].waiting).settimeout(1e-6)
            return overdue
        by_fd = {c.waiting.fileno(): i for i, c in running.items() if c.waiting is not None}
        earliest = min(deadlines.values())
        wait_s = None if earliest == float("inf") else earliest - now
        ready = [by_fd[fd] for fd in _readable(list(by_fd), wait_s)]
        if ready:
            return ready


def _readable(fds: list[int], wait_s: float | None) -> list[int]:
    """The descriptors with something to read (or closed), waiting up to ``wait_s``. ``poll``
    where there is one: ``select`` cannot watch descriptors numbered 1024 or more."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return select.select(fds, [], [], wait_s)[0]
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    timeout_ms = None if wait_s is None else max(wait_s, 0.0) * 1000
    return [fd for fd, _ in poller.poll(timeout_ms)]


@dataclass(slots=True)
class _Txn:
    """How one transaction (one chunk of recipients) ended."""

    outcome: Outcome
    reply: Reply
    recipients: tuple[str, ...]
    accepted: tuple[str, ...] = ()
    refused: dict[str, Reply] = field(default_factory=dict)
    keep: bool = True  # the connection is clean and may be reused
    stale: bool = False  # MAIL FROM met a closed connection: nothing was sent


class SmtpTransport(Transport):
    """Deliver through one SMTP server over at most ``connections`` pooled connections.

    ``tls``: ``"implicit"`` (TLS from the first byte), ``"starttls"`` (required; a server that
    does not offer it gets nothing), ``"none"`` (plain text, even the password), or ``"auto"``:
    implicit on port 465, else STARTTLS when offered; when it is not offered the session stays
    plain, except that a configured password is never sent in clear (``TEMPORARY`` instead).
    Certificates and host names are verified unless ``verify=False``; ``ssl_context`` replaces
    the default context entirely.

    Timeouts: ``connect_timeout_s`` covers the TCP connection, the implicit TLS handshake and
    the greeting; ``command_timeout_s`` each later command; ``data_timeout_s`` the wait for the
    reply after the final dot. ``helo`` is the EHLO name (default: this host's FQDN).
    ``identity`` is the SASL PLAIN authorization identity, ``auth_host`` the only host name the
    credentials may be sent to (empty: ``host``).

    >>> transport = SmtpTransport("smtp.example.com", 587, username="me", password="secret")
    >>> result = transport.deliver("me@example.com", ["you@example.org"], raw_message)
    >>> transport.close()
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: TlsMode = "auto",
        verify: bool = True,
        username: str = "",
        password: str = "",
        identity: str = "",
        auth_host: str = "",
        connections: int = 4,
        connect_timeout_s: float = 30.0,
        command_timeout_s: float = 300.0,
        data_timeout_s: float = 600.0,
        idle_timeout_s: float = 60.0,
        helo: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _check_settings(host, port, tls, username, password, auth_host, connections)
        for key, value in (
            ("connect-timeout", connect_timeout_s),
            ("command-timeout", command_timeout_s),
            ("data-timeout", data_timeout_s),
            ("idle-timeout", idle_timeout_s),
        ):
            if not value > 0:
                raise ConfigError(f"email.server.smtp.{key}", f"must be positive, got {value}")
        self.host, self.port, self.tls = host, port, tls
        self._implicit = tls == "implicit" or (tls == "auto" and port == _IMPLICIT_TLS_PORT)
        self._username, self._password, self._identity = username, password, identity
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._data_timeout_s = data_timeout_s
        self._helo = helo
        self._ssl_context = ssl_context or _default_context(verify)
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            connections, idle_timeout_s, self._close_connection
        )

    @classmethod
    def from_config(cls, smtp: SmtpConfig) -> SmtpTransport:
        """Build a transport from the ``email.server.smtp`` configuration section."""
        return cls(
            smtp.host,
            smtp.port,
            tls=smtp.tls,
            verify=smtp.verify,
            username=smtp.auth.username,
            password=smtp.auth.password.reveal(),
            identity=smtp.auth.identity,
            auth_host=smtp.auth.host,
            connections=smtp.connections,
            connect_timeout_s=smtp.connect_timeout.total_seconds(),
            command_timeout_s=smtp.command_timeout.total_seconds(),
            data_timeout_s=smtp.data_timeout.total_seconds(),
            idle_timeout_s=smtp.idle_timeout.total_seconds(),
            helo=smtp.helo,
        )

    def __repr__(self) -> str:
        user = f", username={self._username!r}" if self._username else ""
        return f"SmtpTransport({self.host!r}, {self.port}, tls={self.tls!r}{user})"

    @property
    def concurrency(self) -> int:
        """How many deliveries :meth:`deliver_batch` runs side by side: the pool size."""
        return self._pool.size

    def deliver(self, mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        """Send ``message`` to ``recipients``; blocks while all connections are busy.

        ``duration_s`` counts from the moment a connection slot is free (connecting included).
        Raises :class:`~postroom.errors.AddressError` for an address that cannot go into an
        SMTP command and ``ValueError`` for an empty recipient list.
        """
        _checked_recipients(mail_from, recipients)
        [result] = self.deliver_batch([(mail_from, recipients, message)])
        return result

    def deliver_batch(
        self,
        jobs: Iterable[Job],
        on_result: Callable[[int, DeliveryResult], None] | None = None,
    ) -> list[DeliveryResult]:
        """Deliver rendered messages side by side from this thread, one per pooled connection.

        Each conversation runs until it waits for a reply, then the next one takes its turn, so
        the round trips of the connections overlap without a thread per connection; when one
        ends, its connection takes the next job. ``jobs`` is read lazily, whenever a connection
        is free, so a caller stops a batch by ending the iterable. Results come in the order of
        the jobs read. A job that cannot go into an SMTP command is a ``PERMANENT`` result.
        """
        source = iter(jobs)
        results: list[DeliveryResult | None] = []
        running: dict[int, _Conversation] = {}
        idle: list[Lease[_Connection]] = []
        try:
            while True:
                while len(running) < self.concurrency and (job := next(source, None)):
                    results.append(None)
                    conversation = self._start(job, idle)
                    if isinstance(conversation, DeliveryResult):
                        results[-1] = conversation
                        if on_result is not None:
                            on_result(len(results) - 1, conversation)
                    else:
                        running[len(results) - 1] = conversation
                if not running:
                    break
                for index in _answered(running):
                    conversation = running[index]
                    try:
                        self._advance(conversation, source, results)
                    except StopIteration as finished:
                        took = time.monotonic() - conversation.started
                        results[index] = done = replace(_merge(finished.value), duration_s=took)
                        if on_result is not None:
                            on_result(index, done)
                        del running[index]
                        if conversation.follower is None:
                            idle.append(conversation.lease)
                        else:  # the next message's envelope went out on this connection
                            running[conversation.follower[0]] = conversation.follower[1]
        except BaseException:
            for conversation in running.values():
                conversation.lease.reusable = False  # interrupted mid-conversation
            raise
        finally:
            for lease in [*idle, *(c.lease for c in running.values())]:
                self._pool.release(lease)
        return [result for result in results if result is not None]

    def _advance(
        self,
        conversation: _Conversation,
        source: Iterator[Job],
        results: list[DeliveryResult | None],
    ) -> None:
        """Run ``conversation`` to its next wait. When it is about to send its message and asks
        for the envelope of the next one (PIPELINING lets both go in one write), take the next
        job from ``source`` and line it up behind this conversation, on the same connection."""
        step = next(conversation.turns)
        while step is _NEXT_ENVELOPE:
            envelope = b""
            follower = self._follower(conversation.lease, source, results)
            if follower is not None:
                conversation.follower = follower
                envelope = follower[1].presented
            step = conversation.turns.send(envelope)
        conversation.waiting = cast("socket.socket | None", step)
        conversation.since = time.monotonic()

    def _follower(
        self,
        lease: Lease[_Connection],
        source: Iterator[Job],
        results: list[DeliveryResult | None],
    ) -> tuple[int, _Conversation] | None:
        """The next sendable job as a conversation whose first envelope is already written."""
        while (job := next(source, None)) is not None:
            results.append(None)
            prepared = _prepared(job)
            if isinstance(prepared, DeliveryResult):
                results[-1] = prepared
                continue
            mail_from, rcpts, payload = prepared
            envelope = _group(_commands(mail_from, rcpts[:MAX_RECIPIENTS_PER_TRANSACTION]))
            turns = self._run(lease, mail_from, rcpts, payload, presented_on=lease.conn)
            now = time.monotonic()
            return len(results) - 1, _Conversation(lease, turns, now, now, presented=envelope)
        return None

    def _start(self, job: Job, idle: list[Lease[_Connection]]) -> _Conversation | DeliveryResult:
        """Begin the conversation of ``job`` on an idle lease or a new one; a job that cannot
        be sent at all is its result at once."""
        prepared = _prepared(job)
        if isinstance(prepared, DeliveryResult):
            return prepared
        lease = idle.pop() if idle else self._pool.acquire()
        turns = self._run(lease, *prepared)
        now = time.monotonic()
        return _Conversation(lease, turns, now, since=now)

    def close(self) -> None:
        """QUIT every idle connection now and every busy one when its delivery ends.

        The transport stays usable: a later :meth:`deliver` opens new connections.
        """
        self._pool.close()

    # -- one delivery ---------------------------------------------------------------------------

    def _run(
        self,
        lease: Lease[_Connection],
        mail_from: str,
        rcpts: tuple[str, ...],
        payload: bytes,
        presented_on: _Connection | None = None,
    ) -> Turns[list[_Txn]]:
        """One delivery: a generator that yields each time it waits for the server's reply.

        ``presented_on``: the connection on which the envelope of the first transaction was
        already written (behind the previous message's data); on any other, it is sent again.
        """
        chunks = [
            rcpts[i : i + MAX_RECIPIENTS_PER_TRANSACTION]
            for i in range(0, len(rcpts), MAX_RECIPIENTS_PER_TRANSACTION)
        ]
        txns: list[_Txn] = []
        stale_retried = False
        while len(txns) < len(chunks):
            chunk = chunks[len(txns)]
            if lease.conn is None:
                try:
                    lease.conn = self._open()
                except _SetupError as exc:
                    txns.extend(_Txn(Outcome.TEMPORARY, exc.reply, c) for c in chunks[len(txns) :])
                    break
            conn = lease.conn
            presented = conn is presented_on and not txns and not stale_retried
            last = len(txns) == len(chunks) - 1
            txn = yield from self._transaction(
                conn.client, mail_from, chunk, payload, presented=presented, last=last
            )
            if txn.stale and conn.transactions > 0 and not stale_retried:
                stale_retried = True
                self._discard(lease)
                continue
            txns.append(txn)
            conn.transactions += 1
            if not txn.keep:
                self._discard(lease)
                gone = Reply(0, f"not attempted: the connection was lost earlier ({txn.reply})")
                txns.extend(_Txn(Outcome.TEMPORARY, gone, c) for c in chunks[len(txns) :])
        return txns

    def _discard(self, lease: Lease[_Connection]) -> None:
        """Drop a connection in an unknown state: no QUIT, it could only wait for a late reply."""
        if lease.conn is not None:
            lease.conn.client.close()
            lease.conn = None

    def _transaction(
        self,
        client: smtplib.SMTP,
        mail_from: str,
        rcpts: tuple[str, ...],
        payload: bytes,
        *,
        presented: bool = False,
        last: bool = True,
    ) -> Turns[_Txn]:
        """MAIL, RCPT for each recipient, DATA, the message, and the reply to the final dot.

        When the server offers PIPELINING (RFC 2920), MAIL, every RCPT and DATA leave in one
        write and their replies are read in order afterwards: one round trip for the envelope
        instead of two plus one per recipient. The replies are judged the same way either way.
        Yields after every write that a reply answers. ``presented``: the pipelined envelope was
        written already, behind the previous message's data; its replies follow the reply to
        that message's final dot, so they are read at once (they may be buffered already, where
        waiting for the socket would not see them).
        """
        pipelined = client.has_extn("pipelining")
        commands = _commands(mail_from, rcpts)
        if pipelined and not presented:
            try:
                client.send(_group(commands))
            except _LOST as exc:
                return self._lost(rcpts, exc, "at MAIL FROM", {}, stale=not _timed_out(exc))
            yield client.sock
        try:
            code, text = yield from _command(client, commands[0], pipelined)
        except _LOST as exc:
            return self._lost(rcpts, exc, "at MAIL FROM", {}, stale=not _timed_out(exc))
        if code == 421:
            return _Txn(Outcome.TEMPORARY, _reply(code, text), rcpts, keep=False, stale=True)
        mail_reply = (code, text)
        if not 200 <= code < 300 and not pipelined:
            return self._refused_step(client, rcpts, code, text, {}, "MAIL FROM")
        refused: dict[str, Reply] = {}
        accepted: list[str] = []
        for rcpt, command in zip(rcpts, commands[1:], strict=False):
            try:
                code, text = yield from _command(client, command, pipelined)
            except _LOST as exc:
                return self._lost(rcpts, exc, f"at RCPT TO <{rcpt}>", refused)
            if code == 421:
                return _Txn(
                    Outcome.TEMPORARY, _reply(code, text), rcpts, refused=refused, keep=False
                )
            if 200 <= code < 300:
                accepted.append(rcpt)
            else:
                refused[rcpt] = _reply(code, text)
        if pipelined:
            return (
                yield from self._pipelined_data(
                    client, rcpts, mail_reply, tuple(accepted), refused, payload, last
                )
            )
        if not accepted:
            return self._all_refused(client, rcpts, refused)
        try:
            data_reply = yield from _command(client, "DATA", pipelined)
        except _LOST as exc:
            return self._lost(rcpts, exc, "at DATA", refused)
        return (yield from self._data(client, rcpts, data_reply, tuple(accepted), refused, payload))

    def _pipelined_data(
        self,
        client: smtplib.SMTP,
        rcpts: tuple[str, ...],
        mail_reply: tuple[int, bytes],
        accepted: tuple[str, ...],
        refused: dict[str, Reply],
        payload: bytes,
        last: bool,
    ) -> Turns[_Txn]:
        """Read the reply to a pipelined DATA, then judge the envelope as in lock-step."""
        try:
            code, text = client.getreply()
        except _LOST as exc:
            return self._lost(rcpts, exc, "at DATA", refused)
        mail_ok = 200 <= mail_reply[0] < 300
        if code == 354 and not (mail_ok and accepted):
            # RFC 2920 3.1 says DATA must be refused here; a lone dot would send an empty message
            reply = Reply(
                0, f"the server accepted DATA with no valid recipient: {_reply(code, text)}"
            )
            return _Txn(Outcome.TEMPORARY, reply, rcpts, refused=refused, keep=False)
        if not mail_ok:
            return self._refused_step(client, rcpts, *mail_reply, {}, "MAIL FROM")
        if not accepted:
            return self._all_refused(client, rcpts, refused)
        follow = last  # the next message's envelope may go with the data of the last chunk
        return (
            yield from self._data(client, rcpts, (code, text), accepted, refused, payload, follow)
        )

    def _data(
        self,
        client: smtplib.SMTP,
        rcpts: tuple[str, ...],
        data_reply: tuple[int, bytes],
        accepted: tuple[str, ...],
        refused: dict[str, Reply],
        payload: bytes,
        follow: bool = False,
    ) -> Turns[_Txn]:
        """Given the reply to DATA: send the message and judge the reply to the final dot.

        ``follow``: ask for the next message's envelope to write right behind the data.
        """
        code, text = data_reply
        if code != 354:
            return self._refused_step(client, rcpts, code, text, refused, "DATA")
        envelope = (yield _NEXT_ENVELOPE) if follow else None
        try:
            client.send(payload + envelope if envelope else payload)
            _set_timeout(client, self._data_timeout_s)
        except _LOST as exc:
            return self._lost(rcpts, exc, "while sending the message", refused)
        yield client.sock
        try:
            code, text = client.getreply()
            _set_timeout(client, self._command_timeout_s)
        except _LOST as exc:
            why = _explain(exc, "waiting for the reply to the final dot", self._data_timeout_s)
            reply = Reply(0, f"{why}; the server may have the message")
            return _Txn(Outcome.MAYBE_DELIVERED, reply, rcpts, refused=refused, keep=False)
        reply = _reply(code, text)
        if reply.is_success:
            return _Txn(Outcome.SENT, reply, rcpts, accepted=accepted, refused=refused)
        # After the final dot the transaction is over whatever the reply: no RSET needed.
        if reply.is_permanent:
            return _Txn(Outcome.PERMANENT, reply, rcpts, refused=refused)
        keep = reply.is_temporary and reply.code not in (0, 421)
        return _Txn(Outcome.TEMPORARY, reply, rcpts, refused=refused, keep=keep)

    def _refused_step(
        self,
        client: smtplib.SMTP,
        rcpts: tuple[str, ...],
        code: int,
        text: bytes,
        refused: dict[str, Reply],
        step: str,
    ) -> _Txn:
        """MAIL FROM or DATA answered with something other than success."""
        reply = _reply(code, text)
        if reply.is_permanent:
            return _Txn(Outcome.PERMANENT, reply, rcpts, refused=refused, keep=_rset(client))
        if reply.is_temporary and reply.code not in (0, 421):
            return _Txn(Outcome.TEMPORARY, reply, rcpts, refused=refused, keep=_rset(client))
        if reply.code not in (0, 421):  # 1yz, 2yz or 3yz where they make no sense
            reply = Reply(reply.code, f"unexpected reply to {step}: {reply.text}", reply.enhanced)
        elif reply.code == 0:
            reply = Reply(0, f"malformed reply to {step}: {reply.text}")
        return _Txn(Outcome.TEMPORARY, reply, rcpts, refused=refused, keep=False)

    def _all_refused(
        self, client: smtplib.SMTP, rcpts: tuple[str, ...], refused: dict[str, Reply]
    ) -> _Txn:
        temporary = [reply for reply in refused.values() if not reply.is_permanent]
        if temporary:
            return _Txn(Outcome.TEMPORARY, temporary[0], rcpts, refused=refused, keep=_rset(client))
        first = next(iter(refused.values()))
        return _Txn(Outcome.PERMANENT, first, rcpts, refused=refused, keep=_rset(client))

    def _lost(
        self,
        rcpts: tuple[str, ...],
        exc: BaseException,
        where: str,
        refused: dict[str, Reply],
        *,
        stale: bool = False,
    ) -> _Txn:
        reply = Reply(0, _explain(exc, where, self._command_timeout_s))
        return _Txn(Outcome.TEMPORARY, reply, rcpts, refused=refused, keep=False, stale=stale)

    # -- opening and closing connections --------------------------------------------------------

    def _open(self) -> _Connection:
        """Connect, greet, secure and log in; raises :class:`_SetupError` with what went wrong."""
        where = f"{self.host}:{self.port}"
        try:
            client = self._connect()
        except smtplib.SMTPConnectError as exc:
            raise _SetupError(_reply(exc.smtp_code, exc.smtp_error, f"{where} greeting")) from exc
        except ssl.SSLCertVerificationError as exc:
            raise _SetupError(Reply(0, f"TLS certificate of {where} not trusted: {exc}")) from exc
        except _LOST as exc:
            why = f"timed out after {self._connect_timeout_s:g} s" if _timed_out(exc) else exc
            raise _SetupError(Reply(0, f"cannot connect to {where}: {why}")) from exc
        step = "EHLO"
        try:
            self._hello(client)
            if not self._implicit and self.tls != "none":
                step = "STARTTLS"
                self._starttls(client)
            if self._username:
                step = "AUTH"
                self._login(client)
        except _SetupError:
            self._close_client(client)
            raise
        except ssl.SSLCertVerificationError as exc:
            client.close()
            raise _SetupError(Reply(0, f"TLS certificate of {where} not trusted: {exc}")) from exc
        except _LOST as exc:
            client.close()
            why = _explain(exc, f"during {step}", self._command_timeout_s)
            raise _SetupError(Reply(0, f"{where}: {why}")) from exc
        return _Connection(client)

    def _connect(self) -> smtplib.SMTP:
        helo = self._helo_name()
        client: smtplib.SMTP
        if self._implicit:
            client = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=helo,
                timeout=self._connect_timeout_s,
                context=self._ssl_context,
            )
        else:
            client = smtplib.SMTP(
                self.host, self.port, local_hostname=helo, timeout=self._connect_timeout_s
            )
        _set_timeout(client, self._command_timeout_s)
        return client

    def _helo_name(self) -> str:
        if self._helo is None:
            self._helo = socket.getfqdn()
        return self._helo

    def _hello(self, client: smtplib.SMTP) -> None:
        code, text = client.ehlo()
        if not 200 <= code < 300:
            code, text = client.helo()
            if not 200 <= code < 300:
                raise _SetupError(_reply(code, text, "EHLO/HELO refused"))

    def _starttls(self, client: smtplib.SMTP) -> None:
        if not client.has_extn("starttls"):
            if self.tls == "starttls":
                raise _SetupError(
                    Reply(0, "the server does not offer STARTTLS, which tls: starttls requires")
                )
            if self._username:
                raise _SetupError(
                    Reply(
                        0,
                        "the server does not offer STARTTLS; refusing to send the password "
                        "in clear (set tls: none to allow it)",
                    )
                )
            return
        code, text = client.starttls(context=self._ssl_context)
        if code != 220:
            raise _SetupError(_reply(code, text, "STARTTLS refused"))
        self._hello(client)

    def _login(self, client: smtplib.SMTP) -> None:
        if not client.has_extn("auth"):
            raise _SetupError(Reply(0, "the server does not offer AUTH, but a username is set"))
        mechanisms = client.esmtp_features.get("auth", "").upper().split()
        if "PLAIN" in mechanisms:
            secret = f"{self._identity}\0{self._username}\0{self._password}".encode()
            code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(secret).decode())
            if code not in (235, 503):
                raise _SetupError(_reply(code, text, "authentication failed"))
            return
        if self._identity:
            raise _SetupError(
                Reply(0, "an auth identity needs AUTH PLAIN, which the server does not offer")
            )
        try:
            client.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            raise _SetupError(
                _reply(exc.smtp_code, exc.smtp_error, "authentication failed")
            ) from exc
        except UnicodeEncodeError as exc:
            raise _SetupError(Reply(0, "authentication failed: AUTH LOGIN needs ASCII")) from exc
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPException as exc:  # no mechanism in common
            raise _SetupError(Reply(0, f"authentication failed: {exc}")) from exc

    def _close_connection(self, conn: _Connection) -> None:
        self._close_client(conn.client)

    def _close_client(self, client: smtplib.SMTP) -> None:
        """QUIT briefly and close; for connections in a clean state only."""
        try:
            _set_timeout(client, min(_QUIT_TIMEOUT_S, self._command_timeout_s))
            if client.sock is not None:
                client.quit()
        except _LOST:
            pass
        finally:
            client.close()


# -- helpers --------------------------------------------------------------------------------------


def _check_settings(
    host: str,
    port: int,
    tls: str,
    username: str,
    password: str,
    auth_host: str,
    connections: int,
) -> None:
    key = "email.server.smtp"
    if not host:
        raise ConfigError(f"{key}.host", "must not be empty")
    if not 0 < port < 65536:
        raise ConfigError(f"{key}.port", f"must be between 1 and 65535, got {port}")
    if tls not in get_args(TlsMode):
        modes = ", ".join(get_args(TlsMode))
        raise ConfigError(f"{key}.tls", f"{tls!r} is not one of {modes}")
    if connections < 1:
        raise ConfigError(f"{key}.connections", f"must be at least 1, got {connections}")
    if password and not username:
        raise ConfigError(f"{key}.auth.username", "a password is set but the username is empty")
    if auth_host and auth_host.lower().rstrip(".") != host.lower().rstrip("."):
        raise ConfigError(
            f"{key}.auth.host",
            f"credentials are only for {auth_host!r}, but the server is {host!r}",
        )


def _default_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _checked_recipients(mail_from: str, recipients: Sequence[str]) -> tuple[str, ...]:
    """The recipients without duplicates, in order; refuses what cannot go into a command."""
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not one string")
    for address in (mail_from, *recipients):
        if any(ch in address for ch in "\r\n\0<>"):
            raise AddressError(f"address {address!r} cannot be used in an SMTP command")
        if not address.isascii():
            raise AddressError(f"address {address!r} is not ASCII and SMTPUTF8 is not used")
    rcpts = tuple(dict.fromkeys(recipients))
    if not rcpts or not all(rcpts):
        raise ValueError("deliver() needs at least one recipient, and no empty ones")
    return rcpts


def _prepared(job: Job) -> tuple[str, tuple[str, ...], bytes] | DeliveryResult:
    """A job's sender, checked recipients and DATA section; or its result when it cannot be
    sent at all (an address that cannot go into a command, no recipient)."""
    mail_from, recipients, message = job
    try:
        return mail_from, _checked_recipients(mail_from, recipients), _data_payload(message)
    except (AddressError, ValueError, TypeError) as exc:
        return unsendable(exc)


def _data_payload(message: bytes) -> bytes:
    """The DATA section: CRLF line endings, leading dots doubled, ending in CRLF . CRLF.

    What postroom renders already has CRLF line endings and seldom a line starting with a dot;
    counting first (in C) spares it the two substitutions.
    """
    crlf = message.count(b"\r\n")
    clean = crlf == message.count(b"\n") == message.count(b"\r")
    if clean and not message.startswith(b".") and b"\n." not in message:
        body = message
    else:
        body = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", message))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _reply(code: int, text: bytes | str, context: str = "") -> Reply:
    """A reply from smtplib's ``(code, text)``; smtplib's -1 ("unreadable") becomes 0."""
    reply = Reply.parse(code if 100 <= code <= 599 else 0, text)
    if context:
        text = f"{context}: {reply.text}" if reply.text else context
        reply = Reply(reply.code, text, reply.enhanced)
    return reply


def _commands(mail_from: str, rcpts: Sequence[str]) -> list[str]:
    """The envelope of one transaction: MAIL, one RCPT per recipient, and DATA."""
    return [f"MAIL FROM:<{mail_from}>", *(f"RCPT TO:<{r}>" for r in rcpts), "DATA"]


def _group(commands: Sequence[str]) -> bytes:
    """Commands as one pipelined group (RFC 2920): one write."""
    return "".join(f"{c}\r\n" for c in commands).encode("ascii")


def _command(client: smtplib.SMTP, command: str, pipelined: bool) -> Turns[tuple[int, bytes]]:
    """The reply to ``command``: already sent in a pipelined group, else sent now (then a turn
    passes while the server answers)."""
    if not pipelined:
        client.send(f"{command}\r\n".encode("ascii"))
        yield client.sock
    code, text = client.getreply()
    return code, text


def _rset(client: smtplib.SMTP) -> bool:
    """Reset a failed transaction; ``True`` when the connection can carry the next one."""
    try:
        code, _ = client.rset()
    except _LOST:
        return False
    return code == 250


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _explain(exc: BaseException, where: str, timeout_s: float) -> str:
    if _timed_out(exc):
        return f"timed out after {timeout_s:g} s {where}"
    cause = exc.__context__ if isinstance(exc, smtplib.SMTPServerDisconnected) else None
    detail = str(exc) or type(exc).__name__
    if cause is not None and str(cause) not in detail:
        detail = f"{detail} ({cause})"
    return f"connection lost {where}: {detail}"


def _set_timeout(client: smtplib.SMTP, timeout_s: float) -> None:
    if client.sock is not None:
        client.sock.settimeout(timeout_s)


_RETRY_RANK = {Outcome.MAYBE_DELIVERED: 0, Outcome.TEMPORARY: 1, Outcome.PERMANENT: 2}


def _merge(txns: Sequence[_Txn]) -> DeliveryResult:
    """One result from the transactions of one delivery; see the module docstring."""
    sent = [t for t in txns if t.outcome is Outcome.SENT]
    decisive = sent[0] if sent else min(txns, key=lambda t: _RETRY_RANK[t.outcome])
    accepted = tuple(rcpt for t in sent for rcpt in t.accepted)
    refused: dict[str, Reply] = {}
    for t in txns:
        refused.update(t.refused)
    done = set(accepted) | set(refused)
    for t in txns:
        if t.outcome is not decisive.outcome:
            refused.update((rcpt, t.reply) for rcpt in t.recipients if rcpt not in done)
    return DeliveryResult(decisive.outcome, decisive.reply, accepted, refused)
