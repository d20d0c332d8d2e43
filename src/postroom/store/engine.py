"""Turning a database URL into a configured SQLAlchemy engine, and the transaction helpers.

SQLite connections get ``journal_mode=WAL``, ``synchronous=NORMAL``, ``busy_timeout=30000`` and
``foreign_keys=ON``. pysqlite's own transaction handling is switched off (``isolation_level =
None``) and the store emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for write transactions (so a
transaction that reads and then writes never fails with SQLITE_BUSY half way), plain ``BEGIN``
for reads. PostgreSQL uses psycopg 3 with a pre-ping on checkout, so connections broken while
idle are replaced instead of failing the next call.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from postroom.errors import StoreError

__all__ = ["BUSY_TIMEOUT_MS", "WRITE_OPTION", "make_engine", "normalise_url"]

BUSY_TIMEOUT_MS = 30_000
#: execution option that makes the SQLite ``begin`` hook emit ``BEGIN IMMEDIATE``
WRITE_OPTION = "postroom_write"

_POSTGRES_NAMES = {"postgres", "postgresql", "postgresql+psycopg"}
_SQLITE_NAMES = {"sqlite", "sqlite+pysqlite"}


def normalise_url(url: str) -> URL:
    """Parse ``url`` and pick the driver postroom uses; refuse anything else by name."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"{url!r} is not a database URL (expected sqlite:///path or postgresql://user@host/db)"
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
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10},
        )
    return _sqlite_engine(parsed, pool_size)


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    database = url.database or ""
    connect_args: dict[str, object] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1e3}
    if database in ("", ":memory:"):
        engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
    else:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = bool(conn.get_execution_options().get(WRITE_OPTION))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
