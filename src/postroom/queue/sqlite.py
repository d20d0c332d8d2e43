"""The embedded queue engine: one SQLite file on local disk, shared by the processes of one host.

A queue named ``mail`` is two tables: ``queue_mail`` holds the payloads (``id``, ``payload``), and
``queue_mail:taken`` holds one small row per item handed out (``id``, ``token``, ``taken_at``,
``deliveries``). Keeping the claim state apart means a take writes a few small pages instead of
rewriting every 2 KB payload row (several times faster in measurements). One item::

    no taken row                  waiting  ──take──▶  taken row: token, taken_at = now, deliveries
    taken row, taken_at recent    taken    ──ack───▶  both rows deleted
    taken row, taken_at old       taken longer than redeliver_after_s ago: visible again;
                                  the next take replaces the token and counts deliveries + 1

The tag handed out is ``"<id>.<token>"`` with a fresh random token per take, so a late ack from a
consumer whose item was already redelivered to another one does nothing.

Writes (push, take, ack) run inside ``BEGIN IMMEDIATE`` so that two processes never claim the same
row and a read-then-write transaction never fails with ``SQLITE_BUSY`` half way. The file runs in
WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the process; the last commits
may be lost if the whole machine loses power. ``secure_delete=FAST`` (instead of the ``ON`` some
distributions compile in) zeroes deleted payloads only where that costs no extra writes.

``take`` waits without burning CPU: it polls with short sleeps (2 ms growing to 25 ms) and
re-runs the claim only when another connection committed (``PRAGMA data_version``) or an
unacknowledged item becomes due for redelivery. A ``push`` from the same process wakes waiting
takers at once. Redelivery compares wall-clock times stored in the file, so all processes sharing
it must agree on the time (they do: one host).

Example::

    queue = SqliteQueue(".postroom/queue.db")
    queue.push([b"hello"])
    [item] = queue.take(max_items=100, timeout_s=1.0)
    queue.ack([item.tag])
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from postroom._files import private_dir, private_file
from postroom.errors import ConfigError, QueueError
from postroom.queue.base import QueueEngine, Taken

__all__ = ["SqliteQueue"]

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")
_BUSY_TIMEOUT_MS = 10_000
_FIRST_SLEEP_S = 0.002
_MAX_SLEEP_S = 0.025


def validate_name(name: str) -> str:
    """Return ``name`` if it is a usable queue name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            "name",
            f"queue name {name!r} must be 1 to 100 characters of A-Z, a-z, 0-9, '_' or '-'",
        )
    return name


class _Doorbell:
    """Wakes takers of one file when a push in the same process committed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rings = 0

    def rings(self) -> int:
        with self._cond:
            return self._rings

    def ring(self) -> None:
        with self._cond:
            self._rings += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout_s: float) -> None:
        """Return when a ring after ``seen`` happened or ``timeout_s`` passed."""
        with self._cond:
            self._cond.wait_for(lambda: self._rings != seen, timeout_s)


_doorbells: dict[tuple[str, str], _Doorbell] = {}
_doorbells_lock = threading.Lock()


def _doorbell_for(path: str, name: str) -> _Doorbell:
    with _doorbells_lock:
        return _doorbells.setdefault((path, name), _Doorbell())


def _reset_doorbells_in_child() -> None:
    global _doorbells_lock
    _doorbells_lock = threading.Lock()
    _doorbells.clear()


os.register_at_fork(after_in_child=_reset_doorbells_in_child)

# Every statement of every SqliteQueue in this process runs under this lock, and fork() takes it
# first: a child never inherits SQLite's in-process lock bookkeeping in the middle of another
# thread's transaction (which would make its own new connections see "database is locked").
_FORK_GATE = threading.Lock()
os.register_at_fork(
    before=_FORK_GATE.acquire,
    after_in_parent=_FORK_GATE.release,
    after_in_child=_FORK_GATE.release,
)


class _Local(threading.local):
    """One connection per thread, remembered with the process that opened it."""

    def __init__(self) -> None:
        self.pid = -1
        self.conn: sqlite3.Connection | None = None
        self.data_version = -1
        self.next_redelivery = 0.0


class SqliteQueue(QueueEngine):
    """A queue in a SQLite file; see the module docstring for states and guarantees.

    ``path`` is the database file (its directory is created on first use); ``name`` selects the
    table, so several queues can share one file. Safe to share between threads; after ``fork()``
    the child opens its own connections.
    """

    engine = "sqlite"

    def __init__(
        self, path: str, *, name: str = "postroom", redeliver_after_s: float = 300.0
    ) -> None:
        super().__init__(redeliver_after_s=redeliver_after_s)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigError("path", f"sqlite queue path {path!r} must name a file on disk")
        self.path = os.path.abspath(path)
        self.name = validate_name(name)
        self._items = f'"queue_{name}"'
        self._taken = f'"queue_{name}:taken"'
        self._local = _Local()
        self._conns: list[tuple[int, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteQueue(path={self.path!r}, name={self.name!r})"

    # -- public contract -------------------------------------------------------------------------

    def push(self, payloads: Sequence[bytes]) -> None:
        """Insert every payload in one transaction, then wake takers in this process."""
        rows = [(bytes(p),) for p in payloads]
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(f"INSERT INTO {self._items} (payload) VALUES (?)", rows)
        _doorbell_for(self.path, self.name).ring()

    def take(self, max_items: int, timeout_s: float) -> list[Taken]:
        """Claim up to ``max_items`` visible rows, waiting up to ``timeout_s`` for the first."""
        if max_items < 1:
            return []
        deadline = time.monotonic() + max(timeout_s, 0.0)
        bell = _doorbell_for(self.path, self.name)
        sleep_s = _FIRST_SLEEP_S
        first = True
        while True:
            seen = bell.rings()
            if self._worth_claiming() or first:
                items = self._claim(max_items)
                if items:
                    return items
                self._note_next_redelivery()
                sleep_s, first = _FIRST_SLEEP_S, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            bell.wait(seen, min(sleep_s, remaining))
            sleep_s = min(sleep_s * 2, _MAX_SLEEP_S)

    def ack(self, tags: Sequence[str]) -> None:
        """Delete the rows these tags were handed out for; unknown or stale tags do nothing.

        Two statements whatever the number of tags (the keys travel as one JSON array): each
        statement row by row would take the GIL back once per row while the file is locked.
        """
        keys = [key for key in map(_parse_tag, tags) if key is not None]
        if not keys:
            return
        matching = (
            f"SELECT t.id FROM json_each(?1) AS k, {self._taken} AS t "
            "WHERE t.id = json_extract(k.value, '$[0]') AND t.token = json_extract(k.value, '$[1]')"
        )
        param = (json.dumps(keys),)
        with self._write() as conn:
            conn.execute(f"DELETE FROM {self._items} WHERE id IN ({matching})", param)
            conn.execute(f"DELETE FROM {self._taken} WHERE id IN ({matching})", param)

    def size(self) -> int:
        """Rows not yet acknowledged: waiting plus taken."""
        with self._errors():
            row = self._conn().execute(f"SELECT count(*) FROM {self._items}").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every connection this process opened for the engine."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for pid, conn in conns:
            if pid == os.getpid():
                conn.close()

    # -- claiming --------------------------------------------------------------------------------

    def _claim(self, max_items: int) -> list[Taken]:
        """Mark up to ``max_items`` visible items taken under one new token and return them.

        The items are read after the commit: nobody else touches them before their token is
        acknowledged or ``redeliver-after`` has passed, and the file stays locked for one
        statement only.
        """
        token = secrets.token_hex(8)
        now = time.time()
        with self._write() as conn:
            claimed = conn.execute(
                f"INSERT INTO {self._taken} (id, token, taken_at, deliveries) "
                f"SELECT i.id, ?1, ?2, 1 FROM {self._items} AS i "
                f"LEFT JOIN {self._taken} AS t ON t.id = i.id "
                "WHERE t.id IS NULL OR t.taken_at <= ?3 ORDER BY i.id LIMIT ?4 "
                "ON CONFLICT (id) DO UPDATE SET token = excluded.token, "
                "taken_at = excluded.taken_at, deliveries = deliveries + 1",
                (token, now, now - self.redeliver_after_s, max_items),
            ).rowcount
        if claimed <= 0:
            return []
        with self._errors():
            rows = conn.execute(
                f"SELECT t.id, i.payload, t.deliveries FROM {self._taken} AS t "
                f"JOIN {self._items} AS i ON i.id = t.id WHERE t.token = ? ORDER BY t.id",
                (token,),
            ).fetchall()
        return [
            Taken(tag=f"{row_id}.{token}", payload=bytes(payload), deliveries=int(deliveries))
            for row_id, payload, deliveries in rows
        ]

    def _worth_claiming(self) -> bool:
        """True when another connection committed, or a taken row may be due for redelivery."""
        local = self._local
        with self._errors():
            version = int(self._conn().execute("PRAGMA data_version").fetchone()[0])
        changed = version != local.data_version
        local.data_version = version
        return changed or time.time() >= local.next_redelivery

    def _note_next_redelivery(self) -> None:
        with self._errors():
            row = self._conn().execute(f"SELECT min(taken_at) FROM {self._taken}").fetchone()
        oldest = row[0]
        due = float("inf") if oldest is None else float(oldest) + self.redeliver_after_s
        self._local.next_redelivery = due

    # -- connections -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with _FORK_GATE:
                yield
        except sqlite3.Error as exc:
            raise QueueError(f"sqlite queue {self.path} ({self.name}): {exc}") from exc
        except OSError as exc:
            raise QueueError(f"sqlite queue {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise QueueError(f"sqlite queue {self.path} ({self.name}) is closed")
        local = self._local
        if local.conn is not None and local.pid == os.getpid():
            return local.conn
        conn = self._open()
        local.pid, local.conn, local.data_version = os.getpid(), conn, -1
        local.next_redelivery = 0.0
        with self._conns_lock:
            self._conns.append((local.pid, conn))
        return conn

    def _open(self) -> sqlite3.Connection:
        private_dir(Path(self.path).parent)
        private_file(self.path)  # before SQLite: its -wal and -shm files copy this mode
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA secure_delete = FAST")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._items} "
                "(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._taken} (id INTEGER PRIMARY KEY, "
                "token TEXT NOT NULL, taken_at REAL NOT NULL, deliveries INTEGER NOT NULL)"
            )
        except BaseException:
            conn.close()
            raise
        return conn


def _parse_tag(tag: str) -> tuple[int, str] | None:
    row_id, _, token = str(tag).partition(".")
    if not row_id.isdigit() or not token:
        return None
    return int(row_id), token
