"""A local SMTP server that keeps every message it receives as an ``.eml`` file.

``postroom serve --dev`` delivers to it instead of a real relay, so a developer can read what
would have been sent. Each message is stored as received, with one header line added at the
top, ``X-Postroom-Rcpt-To:``, naming the envelope recipients (Bcc recipients only show there).

File names sort by arrival: ``20260101T120000123456Z-000001-3f9a1c2e.eml`` (UTC time, a counter
for this server, a random suffix). A file appears complete or not at all: it is written under a
temporary name and renamed.

States: created --start()--> running --stop()--> stopped (a stopped server may start again).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import threading
import weakref
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postroom._files import private_dir, write_private

log = logging.getLogger("postroom.capture")

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ["RCPT_TO_HEADER", "CaptureServer"]

RCPT_TO_HEADER = "X-Postroom-Rcpt-To"
_FOLD_AT = 76
_CLOSE_WAIT_S = 2.0


class CaptureServer:
    """An SMTP server on ``host:port`` that writes each message to ``mailbox_dir``.

    ``port=0`` picks a free port; :attr:`port` tells which after :meth:`start`. It accepts
    every sender and recipient, without TLS or AUTH: bind it to a loopback address.

    >>> with CaptureServer(Path("mailbox"), port=0) as capture:
    ...     deliver_to("127.0.0.1", capture.port)
    ...     [path.name for path in capture.messages()]
    """

    def __init__(self, mailbox_dir: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.mailbox_dir = Path(mailbox_dir)
        self.host = host
        self._requested_port = port
        self._handler = _MailboxHandler(self.mailbox_dir)
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when started with ``port=0``)."""
        if self._controller is not None:
            return self._controller.port
        return self._requested_port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Create the mailbox directory and start listening; returns once the server answers.

        Raises ``OSError`` naming the address when it cannot listen (e.g. the port is taken).
        """
        if self._controller is not None:
            raise RuntimeError("the capture server is already running")
        private_dir(self.mailbox_dir)
        listener = _listen(self.host, self._requested_port)
        controller = _Controller(
            self._handler,
            listener,
            hostname=self.host,
            port=listener.getsockname()[1],
            server_hostname="postroom-capture",
            ident="postroom capture server",
        )
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            controller.loop.close()
            listener.close()
            raise
        self._controller = controller

    def stop(self) -> None:
        """Close every client connection and stop listening. Safe to call when stopped."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def messages(self) -> list[Path]:
        """The stored messages, oldest first."""
        if not self.mailbox_dir.is_dir():
            return []
        return sorted(self.mailbox_dir.glob("*.eml"))

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _MailboxHandler:
    """aiosmtpd handler: store the message, answer 250 with the file name."""

    def __init__(self, mailbox_dir: Path) -> None:
        self.mailbox_dir = mailbox_dir
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        path = self.store(list(envelope.rcpt_tos), content)
        log.info("captured a message for %s -> %s", ", ".join(envelope.rcpt_tos), path)
        return f"250 2.0.0 OK stored as {path.name}"

    def store(self, recipients: list[str], content: bytes) -> Path:
        """Write one message atomically; return its path."""
        with self._lock:
            number = next(self._counter)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{number:06d}-{secrets.token_hex(4)}.eml"
        final = self.mailbox_dir / name
        temporary = self.mailbox_dir / f".{name}.tmp"
        write_private(temporary, _rcpt_header(recipients) + content)
        os.replace(temporary, final)
        return final


def _rcpt_header(recipients: list[str]) -> bytes:
    """``X-Postroom-Rcpt-To: a, b`` folded below 78 columns, ending in CRLF."""
    lines = [f"{RCPT_TO_HEADER}:"]
    for i, rcpt in enumerate(recipients):
        item = f" {rcpt}" + ("," if i < len(recipients) - 1 else "")
        if len(lines[-1]) + len(item) > _FOLD_AT and lines[-1] != f"{RCPT_TO_HEADER}:":
            lines.append("")
        lines[-1] += item
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so a taken port fails at once and port 0 is resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise OSError(
            exc.errno, f"the capture server cannot listen on {host}:{port}: {exc.strerror}"
        ) from exc


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to bind port 0 and to stop with clients connected.

    It serves on a socket bound beforehand (aiosmtpd binds in its thread and reports a failure
    only after its ready timeout). aiosmtpd's ``stop()`` cancels the connection tasks without
    closing their sockets, which leaves "unclosed transport" warnings: this one aborts them.
    """

    def __init__(self, handler: object, listener: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._listener = listener
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        protocol: SMTP = super().factory()  # type: ignore[no-untyped-call]
        self._protocols.add(protocol)
        return protocol

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        async def bind() -> asyncio.AbstractServer:
            return await self.loop.create_server(
                self._factory_invoker, sock=self._listener, ssl=self.ssl_context
            )

        return bind()

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._close_clients(), self.loop)
            future.result(timeout=_CLOSE_WAIT_S + 1)
        super().stop(no_assert)

    async def _close_clients(self) -> None:
        """Abort every client connection and wait (briefly) until each one is gone."""
        protocols = [p for p in self._protocols if p.transport is not None]
        for protocol in protocols:
            if isinstance(protocol.transport, asyncio.Transport):
                protocol.transport.abort()
            elif protocol.transport is not None:
                protocol.transport.close()
        deadline = self.loop.time() + _CLOSE_WAIT_S
        while any(p.transport is not None for p in protocols) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
