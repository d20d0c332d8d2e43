"""A scripted SMTP server for tests: plain sockets, one thread per connection, on 127.0.0.1.

Where :mod:`tests.smtp_servers` (aiosmtpd) is a correct server, this one misbehaves on purpose,
exactly as told, byte for byte::

    with ScriptedSmtp(extensions=["PIPELINING", "SIZE 1000"]) as server:
        server.on("GREETING", "220 slow", delay_s=3, connection=1)   # only the second connection
        server.on("RCPT", b"2x0-weird\\r\\n550 5.1.1 no\\r\\n", match="bad@")
        server.on("DOT", "250 2.0.0 OK", drip_s=0.4)                # one byte every 0.4 s
        server.on("MAIL", NEVER)                                     # read it, never answer
        server.on("DATA", DROP)                                      # close the connection
        ...
        server.commands        # every command line received: (connection index, line)
        server.messages        # every message whose final dot arrived
        server.auth_attempts   # how many AUTH commands arrived

Steps: ``GREETING``, ``DOT`` (after the message) and each command verb (``EHLO``, ``AUTH``,
``MAIL``, ``RCPT``, ``DATA``, ``STARTTLS``, ...); unknown verbs get 500 unless scripted. After a
220 to STARTTLS the server says nothing more (it cannot do TLS). A rule matches a step, optionally
only on connection number ``connection`` (0-based, in accept order) and only when
``match`` is in the command line; the newest matching rule wins, for ``times`` uses or forever.
A reply given as ``str`` gets CRLF appended; ``bytes`` go out exactly as given. Without a rule
each step gets a correct reply; AUTH PLAIN is checked against ``users``.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

__all__ = ["DROP", "NEVER", "ScriptedMessage", "ScriptedSmtp"]

DROP = "DROP"
"""Close the connection instead of answering."""
NEVER = "NEVER"
"""Never answer (keep reading what the client sends)."""

_DEFAULTS = {
    "GREETING": "220 scripted.test ESMTP",
    "HELO": "250 scripted.test",
    "MAIL": "250 2.1.0 OK",
    "RCPT": "250 2.1.5 OK",
    "DATA": "354 go ahead",
    "DOT": "250 2.0.0 queued",
    "RSET": "250 2.0.0 reset",
    "QUIT": "221 2.0.0 bye",
    "NOOP": "250 2.0.0 OK",
    "EHLO": "",  # the configured extensions
    "AUTH": "",  # checked against the users
}


@dataclass(frozen=True)
class ScriptedMessage:
    """A message whose final dot reached the server."""

    connection: int
    mail: str  # the MAIL FROM command line
    rcpts: tuple[str, ...]  # the RCPT TO command lines
    data: bytes  # what came between DATA and the final dot


@dataclass
class _Rule:
    step: str
    reply: str | bytes
    delay_s: float
    drip_s: float
    times: int | None
    connection: int | None
    match: str | None

    def matches(self, step: str, connection: int, line: str) -> bool:
        return (
            self.step == step
            and self.connection in (None, connection)
            and (self.match is None or self.match in line)
        )


class ScriptedSmtp:
    """A server that answers as scripted; use as a context manager."""

    def __init__(
        self,
        *,
        extensions: Iterable[str] = ("PIPELINING", "8BITMIME"),
        users: dict[str, str] | None = None,
    ) -> None:
        self.extensions = list(extensions)
        self.users = dict(users or {})
        self._lock = threading.Condition()
        self._rules: list[_Rule] = []
        self._commands: list[tuple[int, str]] = []
        self._messages: list[ScriptedMessage] = []
        self._connections: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="scripted-smtp", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> ScriptedSmtp:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._thread.join(timeout=5)

    # -- scripting and what happened ---------------------------------------------------------

    def on(
        self,
        step: str,
        reply: str | bytes,
        *,
        delay_s: float = 0.0,
        drip_s: float = 0.0,
        times: int | None = None,
        connection: int | None = None,
        match: str | None = None,
    ) -> None:
        """Answer ``step`` with ``reply`` (or :data:`DROP`, :data:`NEVER`)."""
        with self._lock:
            self._rules.append(_Rule(step, reply, delay_s, drip_s, times, connection, match))

    @property
    def commands(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._commands)

    def lines(self, verb: str) -> list[str]:
        """The command lines starting with ``verb`` (e.g. ``"MAIL"``), in arrival order."""
        return [line for _, line in self.commands if line.upper().startswith(verb)]

    @property
    def messages(self) -> list[ScriptedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def auth_attempts(self) -> int:
        return len(self.lines("AUTH"))

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def wait_for(self, condition: Callable[[ScriptedSmtp], bool], timeout_s: float = 5) -> None:
        """Wait until ``condition(self)`` holds, woken by every event of the server."""
        with self._lock:
            reached = self._lock.wait_for(lambda: condition(self), timeout=timeout_s)
        assert reached, "the server did not reach the expected state in time"

    # -- serving ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = len(self._connections)
                self._connections.append(conn)
                self._lock.notify_all()
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        reader = conn.makefile("rb")
        try:
            _Session(self, conn, reader, index).run()
        except (OSError, ValueError):
            pass  # the client went away, or the test ended
        finally:
            reader.close()
            conn.close()

    def _rule(self, step: str, connection: int, line: str) -> _Rule:
        with self._lock:
            for rule in reversed(self._rules):
                if rule.matches(step, connection, line):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return _Rule(step, _DEFAULTS.get(step, "500 5.5.2 unknown command"), 0, 0, None, None, None)

    def _record(self, connection: int, line: str) -> None:
        with self._lock:
            self._commands.append((connection, line))
            self._lock.notify_all()

    def _received(self, message: ScriptedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()


class _Closed(Exception):
    """The script closed the connection."""


class _Session:
    """One connection's conversation on the server side."""

    def __init__(self, server: ScriptedSmtp, conn: socket.socket, reader: object, index: int):
        self.server, self.conn, self.index = server, conn, index
        self.reader = reader
        self.mail = ""
        self.rcpts: list[str] = []

    def run(self) -> None:
        try:
            self._answer(self.server._rule("GREETING", self.index, ""))
            while (line := self._readline()) is not None:
                self.server._record(self.index, line)
                self._command(line)
        except _Closed:
            return

    def _readline(self) -> str | None:
        raw = self.reader.readline()  # type: ignore[attr-defined]
        if not raw:
            return None
        return str(raw.rstrip(b"\r\n").decode("utf-8", "replace"))

    def _command(self, line: str) -> None:
        verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
        if verb == "EHLO":
            return self._ehlo(line)
        if verb == "AUTH":
            return self._auth(line)
        if verb == "MAIL":
            self.mail, self.rcpts = line, []
        elif verb == "RCPT":
            self.rcpts.append(line)
        elif verb == "DATA":
            return self._data(line)
        rule = self.server._rule(verb, self.index, line)
        self._answer(rule)
        if verb == "STARTTLS" and str(rule.reply).startswith("220"):
            while self.reader.read(4096):  # type: ignore[attr-defined]
                pass  # the handshake starts here, and is never answered
            raise _Closed
        if verb == "QUIT":
            raise _Closed

    def _ehlo(self, line: str) -> None:
        rule = self.server._rule("EHLO", self.index, line)
        if rule.reply == "":  # no script: the configured extensions
            lines = ["scripted.test", *self.server.extensions]
            if self.server.users:
                lines.append("AUTH PLAIN")
            rule.reply = "\r\n".join(
                f"250{'-' if n < len(lines) - 1 else ' '}{text}" for n, text in enumerate(lines)
            )
        self._answer(rule)

    def _auth(self, line: str) -> None:
        rule = self.server._rule("AUTH", self.index, line)
        if rule.reply == "":  # no script: check the credentials
            rule.reply = "535 5.7.8 authentication credentials invalid"
            parts = line.split()
            if len(parts) == 3 and parts[1].upper() == "PLAIN":
                _, login, password = base64.b64decode(parts[2]).decode().split("\0")
                if self.server.users.get(login) == password:
                    rule.reply = "235 2.7.0 authenticated"
        self._answer(rule)

    def _data(self, line: str) -> None:
        rule = self.server._rule("DATA", self.index, line)
        self._answer(rule)
        if not str(rule.reply).startswith("354"):
            return
        data = bytearray()
        while (chunk := self.reader.readline()) != b".\r\n":  # type: ignore[attr-defined]
            if not chunk:
                raise _Closed  # the client left before the final dot: nothing arrived
            data += chunk
        message = ScriptedMessage(self.index, self.mail, tuple(self.rcpts), bytes(data))
        self.server._received(message)
        self._answer(self.server._rule("DOT", self.index, ""))

    def _answer(self, rule: _Rule) -> None:
        if rule.delay_s:
            time.sleep(rule.delay_s)
        if rule.reply == NEVER:
            return
        if rule.reply == DROP:
            self.conn.shutdown(socket.SHUT_RDWR)
            raise _Closed
        reply = rule.reply if isinstance(rule.reply, bytes) else f"{rule.reply}\r\n".encode()
        if not rule.drip_s:
            self.conn.sendall(reply)
            return
        for octet in reply:
            self.conn.sendall(bytes([octet]))
            time.sleep(rule.drip_s)
