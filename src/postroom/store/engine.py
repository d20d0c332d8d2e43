"""Turning a database URL into a configured SQLAlchemy engine, and the transaction helpers.

SQLite connections get ``synchronous=NORMAL``, ``busy_timeout=30000``, ``foreign_keys=ON``,
``secure_delete=FAST`` (deleted content is zeroed where that costs no extra page writes; some
builds default to the full, slower ``ON``) and ``temp_store=MEMORY``. The file itself is switched
to ``journal_mode=WAL`` by :meth:`Store.migrate`, under the store's write lock (two processes
creating one file at once would otherwise race for it), and a new file gets 16 KiB pages there:
a message row with a few KB of payload then shares its page with others, so a batch of claims
writes a few large pages instead of one 4 KiB page per row (each page written costs a WAL frame,
and the frames are copied again at checkpoint). Existing files keep their page size. pysqlite's
own transaction handling is switched off (``isolation_level = None``) and the store emits
``BEGIN`` itself: ``BEGIN IMMEDIATE`` for write transactions (so a transaction that reads and
then writes never fails with SQLITE_BUSY half way), plain ``BEGIN`` for reads.

PostgreSQL uses psycopg 3, with the session time zone set to UTC. A connection that sat idle in
the pool for more than :data:`IDLE_PING_S` is pinged on checkout and replaced if the server
dropped it, so connections broken while idle do not fail the next call, and busy connections skip
the extra round trip.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

from postroom._files import private_dir, private_file
from postroom.config import redact_url
from postroom.config._model import ambiguous_userinfo
from postroom.errors import StoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "IDLE_PING_S",
    "SQLITE_PAGE_SIZE",
    "WRITE_OPTION",
    "lock_path",
    "make_engine",
    "normalise_url",
    "use_wal",
]

BUSY_TIMEOUT_MS = 30_000
#: page size of new SQLite database files
SQLITE_PAGE_SIZE = 16_384
#: a PostgreSQL connection idle in the pool longer than this is pinged before use
IDLE_PING_S = 1.0
#: execution option that makes the SQLite ``begin`` hook emit ``BEGIN IMMEDIATE``
WRITE_OPTION = "postroom_write"

_POSTGRES_NAMES = {"postgres", "postgresql", "postgresql+psycopg"}
_SQLITE_NAMES = {"sqlite", "sqlite+pysqlite"}


def normalise_url(url: str) -> URL:
    """Parse ``url`` and pick the driver postroom uses; refuse anything else by name."""
    if ambiguous_userinfo(url):  # a resolver would be handed part of the password as the host
        shown = redact_url(url)
        raise StoreError(f"{shown!r} is ambiguous: percent-encode '@ / ? #' in the password")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"{redact_url(url)!r} is not a database URL (expected sqlite:///path or postgresql://user@host/db)"
        ) from exc
    if parsed.drivername in _POSTGRES_NAMES:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in _SQLITE_NAMES:
        return parsed.set(drivername="sqlite+pysqlite")
    raise StoreError(
        f"database URL scheme {parsed.drivername!r} is not supported "
        "(use sqlite:///path or postgresql://user@host/db)"
    )


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """A configured engine for ``url``; creates the parent folder of a SQLite file."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": 10},
        )
        event.listen(engine, "connect", _postgres_on_connect)
        event.listen(engine, "checkin", _remember_checkin)
        event.listen(engine, "checkout", _ping_if_idle(engine))
        return engine
    return _sqlite_engine(parsed, pool_size)


def lock_path(engine: Engine) -> str | None:
    """The sidecar write-lock file of a SQLite file database (``None`` otherwise)."""
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:"):
        return None
    return f"{Path(database).expanduser()}.lock"


def _postgres_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # times then arrive as datetime.timezone.utc values: no conversion per value
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _remember_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    """A checkout hook that pings connections idle longer than :data:`IDLE_PING_S`; raising
    :class:`DisconnectionError` makes the pool discard the connection and open another.
    """
    errors = engine.dialect.loaded_dbapi.Error

    def ping(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except errors as exc:
            raise DisconnectionError(f"connection dropped while idle: {exc}") from exc

    return ping


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    database = url.database or ""
    connect_args: dict[str, object] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1e3}
    if database in ("", ":memory:"):
        engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
    else:
        try:
            private_dir(Path(database).expanduser().parent)
            private_file(database)  # before SQLite: its -wal and -shm files copy this mode
        except OSError as exc:
            raise StoreError(f"cannot create the folder for {database}: {exc}") from exc
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
        )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = FAST")
        cursor.execute("PRAGMA temp_store = MEMORY")
    finally:
        cursor.close()


def use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Switch the SQLite file to WAL mode (a new, empty file first gets 16 KiB pages); a no-op
    for a file already in WAL mode. Must run outside a transaction, under the write lock.
    """
    dbapi_connection.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
    mode = dbapi_connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or str(mode[0]).lower() not in ("wal", "memory"):
        raise StoreError(f"SQLite refused WAL mode (journal mode is {mode and mode[0]!r})")


def _sqlite_on_begin(conn: Connection) -> None:
    write = bool(conn.get_execution_options().get(WRITE_OPTION))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
