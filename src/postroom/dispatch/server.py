"""``postroom serve``: one ingest thread and one dispatcher, wired from the configuration.

Lifecycle of a server process::

    starting ──▶ running ──SIGTERM / SIGINT / stop()──▶ stopping ──▶ stopped (exit 0)

*starting*: open the database (create or migrate the schema), the queue and the SMTP pool; with
``--dev`` also start the capture SMTP server and send everything there.
*running*: the ingest thread moves payloads from the queue into the database and wakes the
dispatcher, which runs in a thread of its own; the main thread waits for a signal.
*stopping*: ingest stops taking (what it took and stored is acknowledged; what it took and did not
store is left unacknowledged and comes back from the queue); the dispatcher finishes the
deliveries under way and writes its results (see :mod:`postroom.dispatch.dispatcher`), for at
most ``GRACE_S``: a delivery still hanging then is left to its lease; connections close.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import uuid
from pathlib import Path
from types import FrameType

from postroom.config import Config
from postroom.dispatch.dispatcher import Dispatcher, utc_now
from postroom.dispatch.ingest import Ingestor
from postroom.dispatch.parsed import ParsedEmails
from postroom.dispatch.policy import RetryPolicy
from postroom.errors import PostroomError
from postroom.queue import open_queue
from postroom.queue.base import QueueEngine
from postroom.store import Store, open_store
from postroom.transport.base import Transport
from postroom.transport.capture import CaptureServer
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode

__all__ = ["Server", "serve"]

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


class _Outage:
    """Logs a failing loop once per outage, not once per try; backs off up to ``max_s``."""

    def __init__(self, what: str, max_s: float = 5.0) -> None:
        self.what, self.max_s = what, max_s
        self.delay_s = 0.0

    def failed(self, exc: Exception) -> float:
        if self.delay_s == 0.0:
            log.error("%s failed, retrying until it works: %s", self.what, exc)
        self.delay_s = min(max(self.delay_s * 2, 0.1), self.max_s)
        return self.delay_s

    def ok(self) -> None:
        if self.delay_s:
            log.info("%s works again", self.what)
        self.delay_s = 0.0


class Server:
    """A running dispatcher process: ingest thread + dispatcher; see the module docstring."""

    def __init__(self, config: Config, *, dev: bool = False, dev_port: int | None = None) -> None:
        self.config = config
        server = config.email.server
        self.owner = dispatcher_id(config)
        self.capture: CaptureServer | None = None
        if dev:
            port = dev_port if dev_port is not None else DEV_SMTP_PORT
            self.capture = CaptureServer(DEV_MAILBOX, host="127.0.0.1", port=port)
            try:
                self.capture.start()
            except OSError as exc:
                raise PostroomError(
                    f"{exc} (set POSTROOM_DEV_SMTP_PORT to use another port)"
                ) from exc
        self.store: Store = open_store(server.database.sqlalchemy_url())
        self.store.migrate()
        self.queue: QueueEngine = open_queue(config.email.queue["default"])
        self.transport: Transport = self._transport()
        parsed = ParsedEmails()  # what ingest parsed, for the dispatcher to render
        self.dispatcher = Dispatcher(
            self.store,
            self.transport,
            owner=self.owner,
            policy=retry_policy(config),
            batch=server.batch,
            lease_s=server.lease.total_seconds(),
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
        self._stop = threading.Event()
        self._ingest_thread = threading.Thread(
            target=self._ingest_loop, name="postroom-ingest", daemon=True
        )
        self._failure: BaseException | None = None
        self._dispatch_thread = threading.Thread(
            target=self._dispatch, name="postroom-dispatch", daemon=True
        )

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

    def run(self) -> None:
        """Run until :meth:`stop`; then drain and close everything."""
        log.info("%s", self.describe())
        self._ingest_thread.start()
        self._dispatch_thread.start()
        try:
            self._stop.wait()
        finally:
            self.stop()
            self._dispatch_thread.join(GRACE_S)
            if self._dispatch_thread.is_alive():
                log.warning(
                    "a delivery was still running after %.0fs; its lease will expire and the "
                    "message will be retried",
                    GRACE_S,
                )
            self._ingest_thread.join(timeout=10)
            self.close()
        if self._failure is not None:
            raise self._failure

    def _dispatch(self) -> None:
        try:
            self.dispatcher.run()
        except BaseException as exc:
            self._failure = exc
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Begin a clean shutdown. Safe to call from a signal handler or another thread."""
        self._stop.set()
        self.dispatcher.stop()

    def close(self) -> None:
        for closer in (self.transport.close, self.queue.close, self.store.close):
            try:
                closer()
            except Exception:  # closing is best effort; report and go on
                log.exception("error while closing")
        if self.capture is not None:
            self.capture.stop()

    def _ingest_loop(self) -> None:
        outage = _Outage("taking from the queue / storing in the database")
        while not self._stop.is_set():
            try:
                self.ingestor.run_once(timeout_s=1.0)
                outage.ok()
            except PostroomError as exc:
                self._stop.wait(outage.failed(exc))


def _install_signals(server: Server) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping (finishing what is in flight)", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


def serve_one(config: Config, *, dev: bool = False) -> int:
    """Run one dispatcher in this process until SIGTERM or Ctrl-C; return the exit code."""
    _setup_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    dev_port = int(os.environ.get("POSTROOM_DEV_SMTP_PORT", DEV_SMTP_PORT)) if dev else None
    server = Server(config, dev=dev, dev_port=dev_port)
    if threading.current_thread() is threading.main_thread():
        _install_signals(server)
    server.run()
    log.info("stopped cleanly")
    return 0


def serve(config: Config, *, dev: bool = False) -> int:
    """Run ``email.server.processes`` dispatchers until SIGTERM or Ctrl-C; return the exit code."""
    processes = config.email.server.processes
    if processes == 1 or dev:
        if processes > 1:
            _setup_logging()
            log.info("--dev runs one dispatcher process (email.server.processes is ignored)")
        return serve_one(config, dev=dev)
    from postroom.dispatch.supervisor import Supervisor, install_signals

    _setup_logging()
    supervisor = Supervisor(config)
    if threading.current_thread() is threading.main_thread():
        install_signals(supervisor)
    code = supervisor.run()
    log.info("stopped cleanly" if code == 0 else "stopped; a dispatcher process failed")
    return code
