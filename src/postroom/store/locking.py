"""One writer at a time on a SQLite file, queued by the kernel instead of SQLite's busy handler.

SQLite admits one write transaction at a time. A connection that finds the write lock taken
sleeps in its busy handler in steps of 1 to 100 ms and tries again, so two postroom processes
writing one file see latency spikes of that size. :class:`WriteLock` puts the writers in a queue
first: a :class:`threading.Lock` for the threads of this process, then an exclusive ``flock`` on
the sidecar file ``<database>.lock`` for the processes. A writer blocked there wakes the moment
the previous one released the lock, after its ``COMMIT``. SQLite's ``busy_timeout`` stays as the
safety net for writers that do not take the lock (the ``sqlite3`` shell, other programs).

States of one lock::

    unused ──first write──▶ open (sidecar file open; free, or held by one thread)
    open ──close()──▶ closed (file descriptor closed; the next write opens it again)
    open ──fork()──▶ in the child: unused (fresh thread lock and descriptor on first write)

An in-memory database has no file and gets the thread lock only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from postroom._files import private_file
from postroom.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: the thread lock and busy_timeout remain
    fcntl = None  # type: ignore[assignment]

__all__ = ["WriteLock"]


class WriteLock:
    """Serialises the write transactions on one SQLite file across threads and processes.

    ``path`` is the sidecar lock file (``None`` for an in-memory database). Use as::

        with lock.held():
            ...  # BEGIN IMMEDIATE ... COMMIT
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"WriteLock({self.path!r})"

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the duration of the block (blocking until it is free)."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._thread_lock:
            fd = self._open()
            if fd is None:
                yield
                return
            self._flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                self._flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the sidecar file; a later write opens it again."""
        with self._thread_lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def _after_fork(self) -> None:
        # the parent's descriptor shares the parent's lock: a child must open its own
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._fd = None

    def _open(self) -> int | None:
        if self.path is None or fcntl is None:
            return None
        if self._fd is None:
            try:
                private_file(self.path)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise StoreError(f"cannot open the write lock file {self.path}: {exc}") from exc
        return self._fd

    def _flock(self, fd: int, operation: int) -> None:
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.path}: {exc}") from exc
