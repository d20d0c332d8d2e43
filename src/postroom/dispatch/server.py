"""``postroom serve``: one ingest thread and one dispatcher, wired from the configuration.

Lifecycle of a server process::

    created ──open()──▶ open ──run()──▶ running ──SIGTERM / SIGINT / stop()──▶ stopping ──▶ closed

*created*: nothing has happened yet (``Server(config)`` has no side effects).
*open*: with ``--dev`` the capture SMTP server runs; the database is open and migrated; the
queue and the SMTP pool are ready. Whatever failed half way is closed again.
*running*: the ingest thread moves payloads from the queue into the database and wakes the
dispatcher, which runs in a thread of its own (its keeper in another); the main thread waits.
*stopping*: ingest stops taking (what it took and stored is acknowledged; what it took and did not
store comes back from the queue); the dispatcher starts nothing new and finishes the deliveries
under way, for at most ``GRACE_S``; every result received is written; a delivery still hanging
then is left to the next dispatcher, which takes it over within seconds. The outcome of the stop
is a :class:`Stopped`: "stopped cleanly" is logged only when nothing hung and nothing failed.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from postroom.config import Config
from postroom.dispatch.dispatcher import Dispatcher, utc_now
from postroom.dispatch.ingest import Ingestor
from postroom.dispatch.parsed import ParsedEmails
from postroom.dispatch.policy import RetryPolicy
from postroom.errors import PostroomError, StoreError
from postroom.queue import open_queue
from postroom.queue.base import QueueEngine
from postroom.store import Store, open_store
from postroom.transport.base import Transport
from postroom.transport.capture import CaptureServer
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode

__all__ = ["Server", "Stopped", "serve_one"]

log = logging.getLogger("postroom.serve")

DEV_SMTP_PORT = 1025
GC_THRESHOLDS = (50_000, 50, 50)
"""The serve process creates and drops a few hundred objects per message, nearly all freed at
once by reference counting; with Python's default (700 new objects) the cycle collector would
run thousands of times a second for little. Set in ``postroom serve`` only, never on import."""
GRACE_S = 30.0
"""How long a stopping server waits for the deliveries under way."""
DEV_MAILBOX = Path(".postroom") / "mailbox"


def dispatcher_id(config: Config) -> str:
    """The configured dispatcher id, else ``hostname:pid:random`` (unique per process)."""
    configured = config.email.server.dispatcher_id
    if configured:
        return configured
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def retry_policy(config: Config) -> RetryPolicy:
    server = config.email.server
    return RetryPolicy(
        max_fails=server.max_fails,
        initial_s=server.retry.initial.total_seconds(),
        max_s=server.retry.max.total_seconds(),
        multiplier=server.retry.multiplier,
        jitter=server.retry.jitter,
    )


@dataclass(frozen=True, slots=True)
class Stopped:
    """How a server stopped: deliveries left hanging, and the error that stopped it, if any."""

    hanging: int = 0
    failure: BaseException | None = None

    @property
    def clean(self) -> bool:
        return self.hanging == 0 and self.failure is None


class Server:
    """A dispatcher process: ingest thread + dispatcher; see the module docstring."""

    def __init__(self, config: Config, *, dev: bool = False, dev_port: int | None = None) -> None:
        self.config, self.dev = config, dev
        self.dev_port = dev_port if dev_port is not None else DEV_SMTP_PORT
        self.owner = dispatcher_id(config)
        self.capture: CaptureServer | None = None
        self._closers: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._failure: BaseException | None = None

    # -- open ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Start what the server needs (see *open* in the module docstring)."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        server = self.config.email.server
        if self.dev:
            self._start_capture()
        self.store: Store = open_store(server.database.sqlalchemy_url())
        self._closers.append(self.store.close)
        self.store.migrate()
        self.queue: QueueEngine = open_queue(self.config.email.queue["default"])
        self._closers.append(self.queue.close)
        self.transport: Transport = self._transport()
        self._closers.append(self.transport.close)
        parsed = ParsedEmails()  # what ingest parsed, for the dispatcher to render
        self.dispatcher = Dispatcher(
            self.store,
            self.transport,
            owner=self.owner,
            policy=retry_policy(self.config),
            batch=server.batch,
            lease_s=server.lease.total_seconds(),
            heartbeat_s=server.heartbeat.total_seconds(),
            parsed=parsed,
        )
        self.ingestor = Ingestor(
            self.queue,
            self.store,
            max_time=server.max_time,
            clock=utc_now,
            on_inserted=lambda n: self.dispatcher.wake(),
            parsed=parsed,
        )

    def _start_capture(self) -> None:
        capture = CaptureServer(DEV_MAILBOX, host="127.0.0.1", port=self.dev_port)
        try:
            capture.start()
        except OSError as exc:
            raise PostroomError(f"{exc} (set POSTROOM_DEV_SMTP_PORT to use another port)") from exc
        self.capture = capture
        self._closers.append(capture.stop)

    def _transport(self) -> Transport:
        if self.capture is not None:
            return SmtpTransport(
                SmtpSettings(
                    host="127.0.0.1",
                    port=self.capture.port,
                    tls=TlsMode.NONE,
                    connections=self.config.email.server.smtp.connections,
                )
            )
        return SmtpTransport.from_config(self.config.email.server.smtp)

    def describe(self) -> str:
        cfg = self.config.email
        queue = cfg.queue["default"]
        where = queue.path if queue.engine == "sqlite" else queue.name
        smtp = (
            f"capture server 127.0.0.1:{self.capture.port} -> {DEV_MAILBOX}/"
            if self.capture
            else f"{cfg.server.smtp.host}:{cfg.server.smtp.port}"
        )
        return (
            f"postroom serve [{self.owner}]: queue {queue.engine} ({where}), "
            f"database {cfg.server.database.engine}, smtp {smtp}"
        )

    # -- run and stop -------------------------------------------------------------------------

    def run(self) -> Stopped:
        """Open (unless open), run until :meth:`stop`, then stop and close everything."""
        if not self._closers:
            self.open()
        log.info("%s", self.describe())
        ingest = threading.Thread(target=self._ingest_loop, name="postroom-ingest", daemon=True)
        dispatch = threading.Thread(target=self._dispatch, name="postroom-dispatch", daemon=True)
        ingest.start()
        dispatch.start()
        try:
            self._stop.wait()
        finally:
            stopped = self._shut_down(dispatch, ingest)
        return stopped

    def _shut_down(self, dispatch: threading.Thread, ingest: threading.Thread) -> Stopped:
        self.stop()
        dispatch.join(GRACE_S)
        hanging = 0
        try:
            hanging = self.dispatcher.close()
        except StoreError as exc:
            log.error("%s: the rows this dispatcher holds will be taken over", exc)
            self._failure = self._failure or exc
        if hanging:
            log.warning(
                "%d delivery(ies) still hanging after %.0fs were left to the next dispatcher, "
                "which takes them over and records them as maybe delivered",
                hanging,
                GRACE_S,
            )
        ingest.join(timeout=10)
        self.close()
        return Stopped(hanging=hanging, failure=self._failure)

    def _dispatch(self) -> None:
        try:
            self.dispatcher.run()
        except BaseException as exc:
            log.exception("the dispatcher failed")
            self._failure = exc
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Begin a clean shutdown. Safe to call from a signal handler or another thread."""
        self._stop.set()
        if hasattr(self, "dispatcher"):
            self.dispatcher.stop()

    def close(self) -> None:
        """Close whatever :meth:`open` started, newest first."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # closing is best effort; report and go on
                log.exception("error while closing")

    def _ingest_loop(self) -> None:
        """Run ingest until stopped; if it cannot go on, stop the server with its failure."""
        try:
            self.ingestor.run(self._stop)
        except BaseException as exc:  # IngestFailed, or anything else: never live on half-alive
            log.error("stopping the server, its ingest failed: %s", exc)
            self._failure = self._failure or exc
            self.stop()


def _install_signals(server: Server) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping (finishing what is in flight)", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


def serve_one(config: Config, *, dev: bool = False) -> int:
    """Run one dispatcher in this process until SIGTERM or Ctrl-C; return the exit code."""
    setup_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    dev_port = int(os.environ.get("POSTROOM_DEV_SMTP_PORT", DEV_SMTP_PORT)) if dev else None
    server = Server(config, dev=dev, dev_port=dev_port)
    if threading.current_thread() is threading.main_thread():
        _install_signals(server)
    stopped = server.run()
    if stopped.failure is not None:
        log.error("stopped: %s", stopped.failure)
        return 1
    if stopped.clean:
        log.info("stopped cleanly")
    return 0
