"""Scriptable SMTP servers for tests: aiosmtpd in a thread on 127.0.0.1, on a free port.

Every test that needs a real SMTP peer uses :class:`SmtpServer`::

    from tests.smtp_servers import DROP, SmtpServer

    with SmtpServer() as server:                  # accepts everything
        server.on_rcpt("bob@example.com", "550 5.1.1 no such user")
        server.on_dot("451 4.3.0 try later", times=1)   # then back to 250
        server.on_dot("250 OK", delay_s=2.0)      # answer the final dot late
        server.on_mail(DROP)                      # close the connection at MAIL FROM
        ...                                       # deliver to ("127.0.0.1", server.port)
        server.messages                           # what arrived after the final dot
        server.count("<id@example.com>")          # how often a Message-ID arrived

Steps that can be scripted: ``on_mail``, ``on_rcpt`` (per address or for all), ``on_data``
(the DATA command, before 354) and ``on_dot`` (after the message). A rule answers with a reply
line or :data:`DROP`, optionally after ``delay_s``, for ``times`` uses or forever; the newest
matching rule wins, and when none matches the step succeeds.

Other knobs: ``idle_timeout_s`` (the server silently closes connections idle that long),
``tls_context`` (offer STARTTLS), ``implicit_tls_context`` (TLS from the first byte),
``require_starttls``, ``users`` (accept AUTH with these name/password pairs),
``auth_require_tls`` (aiosmtpd's default True: AUTH only after STARTTLS),
``auth_exclude`` (mechanisms not to offer, e.g. ``["PLAIN"]``), ``pipelining`` (offer RFC 2920
PIPELINING; aiosmtpd reads commands one by one, so a pipelined client is served in order).
``connections_peak`` / ``connections_open`` count sessions that said EHLO/HELO.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import shutil
import ssl
import subprocess
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "DROP",
    "AuthAttempt",
    "Received",
    "SmtpServer",
    "make_self_signed_cert",
]

DROP = "DROP"
"""Reply that closes the connection instead of answering."""


@dataclass(frozen=True)
class Received:
    """A message whose data (up to the final dot) reached the server."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    reply: str  # what the server answered (or DROP); a late reply may never have arrived
    tls: bool
    login: str | None  # the authenticated user name, if any

    @property
    def message_id(self) -> str | None:
        return BytesHeaderParser().parsebytes(self.content).get("Message-ID")

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")


@dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    login: str
    identity: str | None  # the PLAIN authorization identity; None for other mechanisms
    success: bool


@dataclass
class _Rule:
    reply: str
    delay_s: float
    times: int | None
    address: str | None = None

    def matches(self, address: str | None) -> bool:
        return self.address is None or self.address == address


class SmtpServer:
    """A scriptable SMTP server running in its own thread; use as a context manager."""

    def __init__(
        self,
        *,
        idle_timeout_s: float = 300.0,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        users: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        auth_exclude: Iterable[str] = (),
        pipelining: bool = False,
    ) -> None:
        self.users = dict(users or {})
        self.pipelining = pipelining
        self._lock = threading.Lock()
        self._rules: dict[str, list[_Rule]] = collections.defaultdict(list)
        self._messages: list[Received] = []
        self._auth: list[AuthAttempt] = []
        self._live: set[int] = set()
        self.connections_peak = 0
        self.connections_total = 0
        kwargs: dict[str, Any] = {
            "timeout": idle_timeout_s,
            "auth_require_tls": auth_require_tls,
            "auth_exclude_mechanism": list(auth_exclude),
            "authenticator": self._authenticate,
        }
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
            kwargs["require_starttls"] = require_starttls
        self._controller = _Controller(
            self,
            hostname="127.0.0.1",
            port=0,
            ssl_context=implicit_tls_context,
            server_hostname="test.smtp.invalid",
            **kwargs,
        )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting ----------------------------------------------------------------------------

    def on_mail(self, reply: str, *, delay_s: float = 0.0, times: int | None = None) -> None:
        self._add("MAIL", _Rule(reply, delay_s, times))

    def on_rcpt(
        self,
        address: str | None,
        reply: str,
        *,
        delay_s: float = 0.0,
        times: int | None = None,
    ) -> None:
        """Answer RCPT TO for ``address`` (``None``: every address)."""
        self._add("RCPT", _Rule(reply, delay_s, times, address))

    def on_data(self, reply: str, *, delay_s: float = 0.0, times: int | None = None) -> None:
        """Answer the DATA command itself (instead of 354)."""
        self._add("DATA", _Rule(reply, delay_s, times))

    def on_dot(
        self,
        reply: str,
        *,
        delay_s: float = 0.0,
        times: int | None = None,
        address: str | None = None,
    ) -> None:
        """Answer the final dot (of messages to ``address`` first, if given): the message
        counts as received either way."""
        self._add("DOT", _Rule(reply, delay_s, times, address))

    def _add(self, step: str, rule: _Rule) -> None:
        with self._lock:
            self._rules[step].append(rule)

    def _take(self, step: str, address: str | None = None) -> _Rule | None:
        with self._lock:
            for rule in reversed(self._rules[step]):
                if rule.matches(address):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules[step].remove(rule)
                    return rule
        return None

    # -- what happened ------------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def accepted(self) -> list[Received]:
        return [m for m in self.messages if m.accepted]

    @property
    def logins(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth)

    @property
    def connections_open(self) -> int:
        with self._lock:
            return len(self._live)

    def count(self, message_id: str, *, accepted_only: bool = True) -> int:
        """How many messages with this Message-ID arrived (and were answered 2yz)."""
        found = self.accepted if accepted_only else self.messages
        return sum(1 for m in found if m.message_id == message_id)

    # -- aiosmtpd hooks -----------------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self._opened(server)
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self._opened(server)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> object:
        if len(args) == 2 and args[0].upper() == "PLAIN":
            identity, _login, _password = base64.b64decode(args[1]).split(b"\0")
            session.plain_identity = identity.decode()  # type: ignore[attr-defined]
        return MISSING

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rule = self._take("MAIL")
        if rule is not None:
            return await self._answer(server, rule)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rule = self._take("RCPT", address)
        if rule is not None:
            reply = await self._answer(server, rule)
            if not reply.startswith("2"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rule = self._take("DOT", envelope.rcpt_tos[0] if envelope.rcpt_tos else None)
        reply = rule.reply if rule is not None else "250 2.0.0 OK"
        auth = session.auth_data
        received = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            reply=reply,
            tls=_is_tls(server),
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
        )
        with self._lock:
            self._messages.append(received)
        if rule is not None:
            return await self._answer(server, rule)
        return reply

    async def data_command(self, server: SMTP) -> str | None:
        """Called by the protocol before it answers DATA; a reply replaces the 354."""
        rule = self._take("DATA")
        return None if rule is None else await self._answer(server, rule)

    async def _answer(self, server: SMTP, rule: _Rule) -> str:
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.reply == DROP:
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(3600)  # cancelled by connection_lost()
        return rule.reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        success = self.users.get(login) == password
        identity = getattr(session, "plain_identity", None) if mechanism == "PLAIN" else None
        with self._lock:
            self._auth.append(AuthAttempt(mechanism, login, identity, success))
        return AuthResult(success=success, handled=False, auth_data=data if success else None)

    def _opened(self, server: SMTP) -> None:
        with self._lock:
            if id(server) not in self._live:
                self._live.add(id(server))
                self.connections_total += 1
                self.connections_peak = max(self.connections_peak, len(self._live))

    def _closed(self, server: SMTP) -> None:
        with self._lock:
            self._live.discard(id(server))


def _is_tls(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Protocol(SMTP):
    """aiosmtpd's SMTP with two extra hooks: the DATA command, and connection loss."""

    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._owner = owner

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is not None and self.envelope.rcpt_tos and not arg:
            reply = await self._owner.data_command(self)
            if reply is not None:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._closed(self)
        super().connection_lost(error)


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to bind port 0 and to stop with clients connected.

    aiosmtpd connects to ``self.port`` to check the server answers, so the real port must be
    known before ``start()`` returns; and its ``stop()`` cancels the connection tasks without
    closing their sockets, which leaves "unclosed transport" warnings behind.
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        protocol = _Protocol(self.handler, **self.SMTP_kwargs)
        self._protocols.add(protocol)
        return protocol

    def _create_server(self) -> Any:
        async def bind() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close_clients(), self.loop).result(timeout=5)
        super().stop(no_assert)

    async def _close_clients(self) -> None:
        protocols = [p for p in self._protocols if p.transport is not None]
        for protocol in protocols:
            transport = protocol.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        deadline = self.loop.time() + 3
        while any(p.transport is not None for p in protocols) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)


def make_self_signed_cert(directory: Path, host: str = "localhost") -> tuple[Path, Path] | None:
    """Write a self-signed certificate and key for ``host`` (and 127.0.0.1) with ``openssl``.

    Returns ``(cert, key)``, or ``None`` when ``openssl`` is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host},IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for :class:`SmtpServer`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
