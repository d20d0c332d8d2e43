"""Setting up a connection, one non-blocking step at a time.

The life of a connection, each arrow one step of its conversation in the multiplexed loop::

    resolve --> connect --> [TLS handshake] --> greeting 220 --> EHLO (HELO if refused)
      --> [STARTTLS 220 --> TLS handshake --> EHLO] --> [AUTH ... 235] --> ready
    ready --> transactions (see transaction.py) --> ready | closed
    ready --idle too long--> QUIT (not waited for) --> closed

Resolving, connecting, the implicit TLS handshake and the greeting share ``connect_timeout_s``;
every later reply gets ``command_timeout_s`` of its own. Any failure here is the relay's, not a
message's: :class:`SetupFailed` carries the reply (or code 0 and the error) naming the step.
Under ``tls: auto`` a password is never sent over a connection that is not encrypted.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from postroom.transport.base import Reply
from postroom.transport.smtp.channel import (
    POLLIN,
    POLLOUT,
    Channel,
    ConnectionLost,
    Turns,
    Wait,
    await_answer,
    handshake,
)
from postroom.transport.smtp.replies import Answer
from postroom.transport.smtp.settings import SmtpSettings, TlsMode

__all__ = ["Session", "SetupFailed", "open_session"]

_Address = tuple[int, int, int, tuple[Any, ...]]


class SetupFailed(Exception):
    """A connection could not be set up; ``reply`` says where and why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(slots=True)
class Session:
    """A ready connection: its channel, the extensions the server offered (upper-case keyword
    to parameters) and how many transactions it carried."""

    channel: Channel
    extensions: Mapping[str, str]
    transactions: int = 0

    def offers(self, extension: str) -> bool:
        return extension in self.extensions

    @property
    def size_limit(self) -> int | None:
        """The SIZE the server announced (RFC 1870); ``None`` when none or unlimited (0)."""
        value = self.extensions.get("SIZE", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    def close(self, *, quit: bool = True) -> None:
        """Close; with ``quit``, say QUIT first without waiting for the answer."""
        if quit and not self.channel.writing and self.channel.closed_why is None:
            self.channel.write(b"QUIT\r\n")
        self.channel.close()


def open_session(settings: SmtpSettings, helo: str) -> Turns[Session]:
    """Connect, greet, secure and log in; raises :class:`SetupFailed` naming what went wrong."""
    where = f"{settings.host}:{settings.port}"
    deadline = time.monotonic() + settings.connect_timeout_s
    channel: Channel | None = None
    try:
        channel = Channel((yield from _connect(settings, deadline)))
        if settings.implicit_tls:
            channel.start_tls(settings.tls_context(), settings.host)
            yield from handshake(channel, deadline, settings.connect_timeout_s)
        yield from _greeting(channel, settings, deadline)
        extensions = yield from _hello(channel, settings, helo)
        if _wants_starttls(settings, extensions):
            extensions = yield from _starttls(channel, settings, helo, extensions)
        if settings.username:
            yield from _login(channel, settings, extensions)
    except SetupFailed:
        _discard(channel)
        raise
    except ssl.SSLCertVerificationError as exc:
        _discard(channel)
        raise SetupFailed(Reply(0, f"TLS certificate of {where} not trusted: {exc}")) from exc
    except (ConnectionLost, OSError) as exc:
        _discard(channel)
        raise SetupFailed(Reply(0, f"{where}: {exc}")) from exc
    return Session(channel, extensions)


def _discard(channel: Channel | None) -> None:
    if channel is not None:
        channel.close()


# -- connecting ---------------------------------------------------------------------------------


def _connect(settings: SmtpSettings, deadline: float) -> Turns[socket.socket]:
    """A connected TCP socket to the first address of the host that answers."""
    try:
        return (yield from _first_answering(settings, deadline))
    except (OSError, ConnectionLost) as exc:
        where = f"{settings.host}:{settings.port}"
        raise SetupFailed(Reply(0, f"cannot connect to {where}: {exc}")) from exc


def _first_answering(settings: SmtpSettings, deadline: float) -> Turns[socket.socket]:
    addresses = yield from _resolve(settings.host, settings.port, deadline)
    failure: str = "no address"
    for family, kind, proto, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            yield from _connect_one(sock, address, deadline, settings.connect_timeout_s)
        except OSError as exc:
            sock.close()
            failure = str(exc)
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise OSError(failure)


def _connect_one(
    sock: socket.socket, address: tuple[Any, ...], deadline: float, timeout_s: float
) -> Turns[None]:
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        raise OSError(code, os.strerror(code))
    while code != 0 and not _writable(sock):
        if time.monotonic() >= deadline:
            raise ConnectionLost(f"timed out after {timeout_s:g} s connecting", timed_out=True)
        yield Wait(sock.fileno(), POLLOUT, deadline)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


def _writable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), POLLOUT)
    return bool(poller.poll(0))


def _resolve(host: str, port: int, deadline: float) -> Turns[list[_Address]]:
    """The addresses of ``host``; a name is looked up in a helper thread, never in the loop."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, (host, port))]
    lookup = _Lookup(host, port)
    try:
        while not lookup.done():
            if time.monotonic() >= deadline:
                raise ConnectionLost(f"timed out looking up {host}", timed_out=True)
            yield Wait(lookup.fileno(), POLLIN, deadline)
        return lookup.result()
    finally:
        lookup.close()


class _Lookup:
    """``getaddrinfo`` in a daemon thread, which wakes the loop through a socket pair."""

    def __init__(self, host: str, port: int) -> None:
        self._wake_read, self._wake_write = socket.socketpair()
        self._found: list[_Address] | None = None
        self._error: OSError | None = None
        self._finished = threading.Event()
        args = (host, port)
        threading.Thread(target=self._run, args=args, name="postroom-dns", daemon=True).start()

    def _run(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            self._found = [(f, t, p, tuple(a)) for f, t, p, _, a in infos]
        except OSError as exc:
            self._error = exc
        self._finished.set()
        with contextlib.suppress(OSError):  # the waiting side may have given up already
            self._wake_write.send(b"x")

    def fileno(self) -> int:
        return self._wake_read.fileno()

    def done(self) -> bool:
        return self._finished.is_set()

    def result(self) -> list[_Address]:
        if self._error is not None:
            raise OSError(f"cannot resolve host: {self._error}")
        return self._found or []

    def close(self) -> None:
        self._wake_read.close()
        self._wake_write.close()


# -- greeting, EHLO, STARTTLS, AUTH -----------------------------------------------------------


def _greeting(channel: Channel, settings: SmtpSettings, deadline: float) -> Turns[None]:
    what = "waiting for the greeting"
    answer = yield from await_answer(
        channel, what, timeout_s=settings.connect_timeout_s, deadline=deadline
    )
    if answer.code != 220:
        raise SetupFailed(answer.reply(f"{settings.host}:{settings.port} greeting"))


def _command(
    channel: Channel, settings: SmtpSettings, line: str, what: str, *, secret: bool = False
) -> Turns[Answer]:
    """Send one command and wait for its reply (``secret``: leave the line out of errors)."""
    channel.write(line.encode("utf-8") + b"\r\n")
    shown = what if secret else f"{what} ({line})"
    return (
        yield from await_answer(
            channel, f"waiting for {shown}", timeout_s=settings.command_timeout_s
        )
    )


def _hello(channel: Channel, settings: SmtpSettings, helo: str) -> Turns[dict[str, str]]:
    answer = yield from _command(channel, settings, f"EHLO {helo}", "EHLO")
    if answer.code == 250:
        return _extensions(answer)
    if 500 <= answer.code < 600 and answer.code != 521:
        answer = yield from _command(channel, settings, f"HELO {helo}", "HELO")
        if answer.code == 250:
            return {}
    raise SetupFailed(answer.reply("EHLO/HELO refused"))


def _extensions(answer: Answer) -> dict[str, str]:
    """The extensions of an EHLO reply: keyword (upper case) to its parameters."""
    found: dict[str, str] = {}
    for line in answer.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.upper()] = params.strip()
    return found


def _wants_starttls(settings: SmtpSettings, extensions: Mapping[str, str]) -> bool:
    if settings.implicit_tls or settings.tls is TlsMode.NONE:
        return False
    if "STARTTLS" in extensions:
        return True
    if settings.tls is TlsMode.STARTTLS:
        raise SetupFailed(
            Reply(0, "the server does not offer STARTTLS, which tls: starttls requires")
        )
    if settings.username:
        raise SetupFailed(
            Reply(
                0,
                "the server does not offer STARTTLS; refusing to send the password in clear "
                "(set tls: none to allow it)",
            )
        )
    return False


def _starttls(
    channel: Channel, settings: SmtpSettings, helo: str, extensions: Mapping[str, str]
) -> Turns[dict[str, str]]:
    answer = yield from _command(channel, settings, "STARTTLS", "STARTTLS")
    if answer.code != 220:
        raise SetupFailed(answer.reply("STARTTLS refused"))
    channel.start_tls(settings.tls_context(), settings.host)
    deadline = time.monotonic() + settings.command_timeout_s
    yield from handshake(channel, deadline, settings.command_timeout_s)
    return (yield from _hello(channel, settings, helo))


def _login(channel: Channel, settings: SmtpSettings, extensions: Mapping[str, str]) -> Turns[None]:
    """AUTH PLAIN (RFC 4616) when offered, else AUTH LOGIN; only 235 is a success."""
    if "AUTH" not in extensions:
        raise SetupFailed(Reply(0, "the server does not offer AUTH, but a username is set"))
    mechanisms = extensions["AUTH"].upper().split()
    if "PLAIN" in mechanisms:
        token = f"{settings.identity}\0{settings.username}\0{settings.password}".encode()
        line = "AUTH PLAIN " + base64.b64encode(token).decode("ascii")
        answer = yield from _command(channel, settings, line, "AUTH PLAIN", secret=True)
    elif settings.identity:
        raise SetupFailed(
            Reply(0, "an auth identity needs AUTH PLAIN, which the server does not offer")
        )
    elif "LOGIN" in mechanisms:
        answer = yield from _auth_login(channel, settings)
    else:
        offered = extensions["AUTH"] or "none"
        raise SetupFailed(Reply(0, f"no AUTH mechanism in common (the server offers {offered})"))
    if answer.code != 235:
        raise SetupFailed(answer.reply("authentication failed"))


def _auth_login(channel: Channel, settings: SmtpSettings) -> Turns[Answer]:
    answer = yield from _command(channel, settings, "AUTH LOGIN", "AUTH LOGIN")
    for secret in (settings.username, settings.password):
        if answer.code != 334:
            return answer
        line = base64.b64encode(secret.encode()).decode("ascii")
        answer = yield from _command(channel, settings, line, "AUTH LOGIN", secret=True)
    return answer
