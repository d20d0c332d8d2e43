"""The dispatch side: ingest from the queue, claim, deliver, record (``postroom serve``).

``serve`` picks the shape: one dispatcher in this process (:mod:`~postroom.dispatch.server`), or
``email.server.processes`` of them under a supervisor (:mod:`~postroom.dispatch.supervisor`).
Nothing is imported from either until ``serve`` runs.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postroom.config import Config

__all__ = ["serve"]

log = logging.getLogger("postroom.serve")


def serve(config: Config, *, dev: bool = False) -> int:
    """Run ``email.server.processes`` dispatchers until SIGTERM or Ctrl-C; return the exit code."""
    from postroom.dispatch.server import serve_one, setup_logging
    from postroom.dispatch.supervisor import Supervisor, install_signals

    processes = config.email.server.processes
    if processes == 1 or dev:
        if processes > 1:
            setup_logging()
            log.info("--dev runs one dispatcher process (email.server.processes is ignored)")
        return serve_one(config, dev=dev)
    setup_logging()
    supervisor = Supervisor(config)
    if threading.current_thread() is threading.main_thread():
        install_signals(supervisor)
    code = supervisor.run()
    log.info("stopped cleanly" if code == 0 else "stopped; a dispatcher process failed")
    return code
