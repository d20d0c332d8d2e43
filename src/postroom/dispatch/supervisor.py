"""Several dispatcher processes under one ``postroom serve`` (``email.server.processes``).

One Python process delivers on one core at most (the GIL); more processes use more cores.
Each child is a complete dispatcher (ingest + dispatch) sharing the queue and the database with
its siblings, exactly as dispatchers on several machines do: leases keep them from sending a
message twice.

Lifecycle of the supervisor::

    starting ──▶ running ──SIGTERM / SIGINT──▶ stopping ──every child exited──▶ stopped (exit 0)
                   │  ▲
                   └──┘ a child died unexpectedly: log it, start a new one after a pause

*stopping*: each child gets SIGTERM and drains as a single server would; a child still running
after ``grace_s`` gets SIGKILL (its rows are taken over, as those of any dead dispatcher).
A child that dies is noticed by its siblings and its replacement at once: they see that its
process is gone and take its rows over (:mod:`postroom.dispatch.dispatcher`). A supervisor
that dies without stopping (SIGKILL) takes its children along: each stops as on SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from postroom.config import Config
from postroom.dispatch.server import serve_one

__all__ = ["Supervisor"]

log = logging.getLogger("postroom.serve")

RESTART_PAUSE_S = 1.0


def _child_config(config: Config, index: int) -> Config:
    """A configured dispatcher id gets a suffix per child, so attempts say which one sent."""
    server = config.email.server
    if not server.dispatcher_id:
        return config
    server = dataclasses.replace(server, dispatcher_id=f"{server.dispatcher_id}-{index}")
    return dataclasses.replace(config, email=dataclasses.replace(config.email, server=server))


def _child_main(config: Config) -> None:
    _stop_with_the_supervisor()
    raise SystemExit(serve_one(config))


def _stop_with_the_supervisor() -> None:
    """A child whose supervisor is gone, even by SIGKILL, stops as on SIGTERM (finishing what
    is in flight) instead of dispatching on alone. A thread waits on the parent's sentinel."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        log.warning("the supervisor is gone: this dispatcher stops too")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="postroom-supervisor-watch", daemon=True).start()


class Supervisor:
    """Starts ``processes`` dispatcher children and keeps them running until stopped."""

    def __init__(self, config: Config, *, grace_s: float = 60.0) -> None:
        self.config = config
        self.count = config.email.server.processes
        self.grace_s = grace_s
        self._context = multiprocessing.get_context("spawn")
        self._children: dict[int, BaseProcess] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        log.info("starting %d dispatcher processes", self.count)
        for index in range(self.count):
            self._start(index)
        while not self._stop.wait(0.5):
            self._restart_dead()
        return self._shutdown()

    def _start(self, index: int) -> None:
        child = self._context.Process(
            target=_child_main,
            args=(_child_config(self.config, index),),
            name=f"postroom-dispatcher-{index}",
        )
        child.start()
        self._children[index] = child

    def _restart_dead(self) -> None:
        for index, child in list(self._children.items()):
            if child.is_alive() or self._stop.is_set() or child.exitcode == 0:
                continue  # exit code 0: it was stopped on purpose (e.g. Ctrl-C reached it too)
            log.error(
                "dispatcher process %d (pid %s) exited with %s; starting a new one",
                index,
                child.pid,
                child.exitcode,
            )
            time.sleep(RESTART_PAUSE_S)
            self._start(index)

    def _shutdown(self) -> int:
        for child in self._children.values():
            if child.is_alive() and child.pid is not None:
                child.terminate()  # SIGTERM: the child drains like a single server
        deadline = time.monotonic() + self.grace_s
        for child in self._children.values():
            child.join(max(deadline - time.monotonic(), 0.1))
            if child.is_alive():
                log.warning("dispatcher pid %s did not stop in time; killing it", child.pid)
                child.kill()
                child.join()
        # -SIGTERM: a child still starting up when the stop came, before its handlers existed
        clean = (0, -signal.SIGTERM)
        failed = [c.exitcode for c in self._children.values() if c.exitcode not in clean]
        return 1 if failed else 0


def install_signals(supervisor: Supervisor) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping every dispatcher process", signal.Signals(signum).name)
        supervisor.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
