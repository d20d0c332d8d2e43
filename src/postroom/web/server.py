"""Serving the dashboard with uvicorn: in the foreground (``postroom web``) or beside the
dispatcher in a thread (``postroom serve --dev``)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn

from postroom.config import Config, split_listen
from postroom.errors import ConfigError
from postroom.web.app import create_app
from postroom.web.security import is_loopback

__all__ = ["BackgroundWeb", "listen_address", "run_web", "start_in_background"]

log = logging.getLogger("postroom.web")
_START_WAIT_S = 10.0


def listen_address(config: Config, listen: str | None = None) -> tuple[str, int]:
    """Where to listen: ``listen`` or ``email.web.listen``. Off loopback a token is required
    (``ConfigError`` otherwise)."""
    text = listen if listen is not None else config.email.web.listen
    try:
        host, port = split_listen(text)
    except ValueError as exc:
        raise ConfigError("email.web.listen", str(exc)) from None
    if not is_loopback(host) and not config.email.web.token:
        raise ConfigError(
            "email.web.token",
            f"is required to listen on {host} (not a loopback address): every request will "
            "have to carry it",
        )
    return host, port


def _uvicorn(config: Config, host: str, port: int, mailbox_dir: Path | None) -> uvicorn.Server:
    app = create_app(config, mailbox_dir=mailbox_dir)
    settings = uvicorn.Config(
        app, host=host, port=port, log_level="info", server_header=False, lifespan="on"
    )
    return uvicorn.Server(settings)


def run_web(config: Config, listen: str | None = None, mailbox_dir: Path | None = None) -> int:
    """Serve the dashboard until SIGTERM or Ctrl-C; return the exit code."""
    host, port = listen_address(config, listen)
    server = _uvicorn(config, host, port, mailbox_dir)
    log.info("dashboard on %s", _url(host, port))
    server.run()
    return 0 if server.started else 1


class BackgroundWeb:
    """The dashboard running in a daemon thread; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def start_in_background(config: Config, mailbox_dir: Path | None) -> BackgroundWeb | None:
    """Start the dashboard beside the dispatcher; ``None`` (and a warning) when it cannot
    listen, so that the dispatcher runs anyway."""
    host, port = listen_address(config)
    if not _can_listen(host, port):
        log.warning("the dashboard cannot listen on %s: the address is in use", _url(host, port))
        return None
    server = _uvicorn(config, host, port, mailbox_dir)
    thread = threading.Thread(target=server.run, name="postroom-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_WAIT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        log.warning("the dashboard did not start on %s", _url(host, port))
        server.should_exit = True
        return None
    log.info("dashboard on %s", _url(host, port))
    return BackgroundWeb(server, thread, _url(host, port))


def _can_listen(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.bind((host, port))
    except OSError:
        return False
    return True


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
