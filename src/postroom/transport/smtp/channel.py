"""One connection's socket, never blocking: buffered writes, buffered reads, TLS on demand.

A conversation is a generator that does its own non-blocking I/O on a :class:`Channel` and
yields a :class:`Wait` (which socket events, until when) whenever it cannot go on; the
multiplexer resumes it when one of those events happened or the deadline passed. Nothing in
here waits: ``pump`` sends what the socket takes and reads what has arrived.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Generator
from typing import Final, NamedTuple, TypeVar

from postroom.transport.smtp.replies import Answer, ProtocolError, take_answer

__all__ = [
    "ASK_NEXT_ENVELOPE",
    "POLLIN",
    "POLLOUT",
    "Channel",
    "ConnectionLost",
    "Turns",
    "Wait",
    "await_answer",
]

POLLIN: Final = select.POLLIN
POLLOUT: Final = select.POLLOUT
_RECV_SIZE = 65536
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Wait(NamedTuple):
    """What a conversation waits for: ``events`` on ``fd`` (``None``: only the deadline),
    until ``deadline`` (monotonic seconds). A tuple: one is made at every turn."""

    fd: int | None
    events: int
    deadline: float


class _AskNextEnvelope:
    """Yielded just before a message's data goes out: "give me the next message's envelope to
    send along" (answered with the bytes, ``b""`` for none)."""


ASK_NEXT_ENVELOPE: Final = _AskNextEnvelope()

T = TypeVar("T")
Turns = Generator[Wait | _AskNextEnvelope, bytes | None, T]
"""A conversation step by step: it yields what it waits for, then returns ``T``."""


class ConnectionLost(Exception):
    """The connection can no longer be used: closed, broken, timed out, or the server spoke
    nonsense (``malformed``)."""

    def __init__(self, why: str, *, timed_out: bool = False, malformed: bool = False) -> None:
        super().__init__(why)
        self.timed_out = timed_out
        self.malformed = malformed


class Channel:
    """A connected non-blocking socket (plain or TLS) with an output and an input buffer."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._out: deque[memoryview] = deque()
        self._in = bytearray()
        self.closed_why: str | None = None
        self._eof = False
        self.drained_at = time.monotonic()  # when the output buffer last became empty
        self.progress_at = self.drained_at  # when the socket last took some output

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def writing(self) -> bool:
        """Output is waiting for the socket to take it."""
        return bool(self._out)

    @property
    def unread(self) -> bool:
        """The server sent something nobody has read yet."""
        return bool(self._in)

    def write(self, data: bytes) -> None:
        """Queue ``data`` and send as much of it as the socket takes now."""
        if data:
            self._out.append(memoryview(data))
            self.flush()

    def flush(self) -> None:
        """Send queued output until the socket would block."""
        while self._out and self.closed_why is None:
            try:
                sent = self.sock.send(self._out[0])
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._lost(f"sending failed: {exc}")
                return
            self.progress_at = time.monotonic()
            if sent < len(self._out[0]):
                self._out[0] = self._out[0][sent:]
            else:
                self._out.popleft()
                if not self._out:
                    self.drained_at = self.progress_at

    def fill(self) -> None:
        """Read whatever has arrived, until the socket would block."""
        while not self._eof:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._eof = True
                self._lost(str(exc))
                return
            if not data:
                self._eof = True
                self._lost("the server closed the connection")
                return
            self._in += data
            if len(data) < _RECV_SIZE and not self._tls_pending():
                return

    def pump(self) -> None:
        self.flush()
        self.fill()

    def take_answer(self) -> Answer | None:
        """The next complete reply, if one has arrived; raises :class:`ConnectionLost` when the
        connection is gone or the server's bytes are not a reply."""
        try:
            answer = take_answer(self._in)
        except ProtocolError as exc:
            self._lost(f"protocol error: {exc}")
            raise ConnectionLost(f"protocol error: {exc}", malformed=True) from None
        if answer is None and self.closed_why is not None:
            raise ConnectionLost(f"connection lost: {self.closed_why}")
        return answer

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Wrap the socket in TLS; the handshake is driven by :func:`handshake`."""
        if self._in or self._out:
            raise ConnectionLost("protocol error: the server sent data before the TLS handshake")
        self.sock = context.wrap_socket(
            self.sock, server_hostname=server_hostname, do_handshake_on_connect=False
        )

    def close(self) -> None:
        self._eof = True
        self._lost("closed")
        self.sock.close()

    def _lost(self, why: str) -> None:
        if self.closed_why is None:
            self.closed_why = why
        self._out.clear()

    def _tls_pending(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0


def await_answer(
    channel: Channel, what: str, *, timeout_s: float, deadline: float | None = None
) -> Turns[Answer]:
    """The next reply on ``channel``, waiting at most ``timeout_s`` from the moment it became
    due: when its command was written out and the wait began (or until ``deadline``)."""
    began = time.monotonic()
    while True:
        answer = channel.take_answer()
        if answer is not None:
            return answer
        due = channel.progress_at if channel.writing else channel.drained_at
        until = deadline if deadline is not None else max(began, due) + timeout_s
        if time.monotonic() >= until:
            raise ConnectionLost(f"timed out after {timeout_s:g} s {what}", timed_out=True)
        yield Wait(channel.fileno(), POLLIN | (POLLOUT if channel.writing else 0), until)
        channel.pump()


def handshake(channel: Channel, deadline: float, timeout_s: float) -> Turns[None]:
    """Drive the TLS handshake of ``channel`` (after :meth:`Channel.start_tls`) to its end."""
    sock = channel.sock
    assert isinstance(sock, ssl.SSLSocket)
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            events = POLLIN
        except ssl.SSLWantWriteError:
            events = POLLOUT
        if time.monotonic() >= deadline:
            why = f"timed out after {timeout_s:g} s in the TLS handshake"
            raise ConnectionLost(why, timed_out=True)
        yield Wait(sock.fileno(), events, deadline)
