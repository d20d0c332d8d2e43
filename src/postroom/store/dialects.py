"""One object per database engine: everything the store does differently on each.

A :class:`Dialect` knows how its engine stores a time, the range of ``messages.priority``, how a
write transaction begins (``BEGIN IMMEDIATE`` under the write lock on SQLite; a plain transaction
on PostgreSQL), how ``migrate`` keeps two processes apart, and how the hot statements of
:mod:`postroom.store.batch` travel (a JSON array in the caller's transaction on SQLite; arrays in
one pipelined, self-committing statement on PostgreSQL). :class:`~postroom.store.Store` holds
one and never asks which engine it is talking to.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Float, func, select
from sqlalchemy.sql.elements import ColumnElement

from postroom.store import batch
from postroom.store.batch import TimeValue
from postroom.store.convert import sqlite_time, utc_time
from postroom.store.engine import WRITE_OPTION, use_wal
from postroom.store.locking import WriteLock
from postroom.store.migrations import LOCK_KEY
from postroom.store.records import Claimed
from postroom.store.schema import messages

if TYPE_CHECKING:
    import psycopg

__all__ = ["Dialect", "PostgresDialect", "SqliteDialect", "dialect_for"]

Connect = Callable[[], AbstractContextManager[Connection]]


class Dialect(ABC):
    """What differs between the engines; see the module docstring."""

    #: the engine's name in SQLAlchemy: ``"sqlite"`` or ``"postgresql"``
    name: str
    #: the largest ``messages.priority`` stored; the smallest is ``-priority_limit - 1``
    priority_limit: int

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    @abstractmethod
    def to_db(self, value: datetime) -> TimeValue:
        """An aware datetime as the engine's statements take it (``ValueError`` if naive)."""

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction through SQLAlchemy; commits unless the block raises."""
        with self._connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with self._write_lock(), conn.begin():
                yield conn

    def _write_lock(self) -> AbstractContextManager[object]:
        return nullcontext()

    def prepare(self) -> None:  # noqa: B027 - most engines need nothing
        """Before the first migration: whatever the file or server needs (nothing here)."""

    def lock_migrations(self, conn: Connection) -> None:  # noqa: B027
        """Keep two processes' migrations apart, inside ``conn``'s write transaction."""

    @abstractmethod
    def latency_s(self) -> ColumnElement[float]:
        """Seconds from ``created_at`` to ``sent_at`` as a SQL expression."""

    @abstractmethod
    def insert(self, rows: list[tuple[object, ...]]) -> int: ...

    @abstractmethod
    def claim(
        self, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[Claimed]: ...

    @abstractmethod
    def finish(
        self,
        owner: str,
        updates: list[tuple[object, ...]],
        tried: list[tuple[object, ...]],
        now: datetime,
        started: Sequence[str] = (),
    ) -> int: ...

    @abstractmethod
    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int: ...

    @abstractmethod
    def mark_started(self, owner: str, ids: Sequence[str], now: datetime) -> int: ...

    def close(self) -> None:  # noqa: B027
        """Release what the dialect holds besides the engine (nothing here)."""


class SqliteDialect(Dialect):
    """SQLite: one writer at a time across threads and processes, through a lock file."""

    name = "sqlite"
    priority_limit = 2**63 - 1  # INTEGER: 64 bits

    def __init__(self, connect: Connect, lock_file: str | None) -> None:
        super().__init__(connect)
        self._writer = WriteLock(lock_file)

    def to_db(self, value: datetime) -> TimeValue:
        return sqlite_time(value)

    def _write_lock(self) -> AbstractContextManager[object]:
        return self._writer.held()

    def prepare(self) -> None:
        with self._connect() as conn, self._writer.held():
            use_wal(_sqlite(conn))

    def latency_s(self) -> ColumnElement[float]:
        days = func.julianday(messages.c.sent_at) - func.julianday(messages.c.created_at)
        return func.cast(days * 86400.0, Float)

    @contextmanager
    def _driver_write(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` straight on the driver, under the write lock:
        nothing of SQLAlchemy runs while the lock is held."""
        with self._connect() as conn:
            dbapi = _sqlite(conn)
            with self._transaction(dbapi):
                yield dbapi

    @contextmanager
    def _transaction(self, dbapi: sqlite3.Connection) -> Iterator[None]:
        with self._writer.held():
            dbapi.execute("BEGIN IMMEDIATE")
            try:
                yield
                dbapi.commit()
            except BaseException:
                if dbapi.in_transaction:
                    dbapi.rollback()
                raise

    def insert(self, rows: list[tuple[object, ...]]) -> int:
        with self._driver_write() as dbapi:
            return batch.insert_sqlite(dbapi, rows)

    def claim(self, owner: str, limit: int, now: datetime, lease_until: datetime) -> list[Claimed]:
        with self._connect() as conn:
            dbapi = _sqlite(conn)
            with self._transaction(dbapi):
                keys = batch.lease_sqlite(
                    dbapi, owner, limit, sqlite_time(now), sqlite_time(lease_until)
                )
            return batch.read_claimed_sqlite(dbapi, owner, keys)

    def finish(
        self,
        owner: str,
        updates: list[tuple[object, ...]],
        tried: list[tuple[object, ...]],
        now: datetime,
        started: Sequence[str] = (),
    ) -> int:
        with self._driver_write() as dbapi:
            return batch.finish_sqlite(dbapi, owner, updates, tried, sqlite_time(now), started)

    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        with self._driver_write() as dbapi:
            return batch.release_sqlite(dbapi, owner, ids, sqlite_time(now))

    def mark_started(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        with self._driver_write() as dbapi:
            return batch.started_sqlite(dbapi, owner, ids, sqlite_time(now))

    def close(self) -> None:
        self._writer.close()


class PostgresDialect(Dialect):
    """PostgreSQL: row locks (``FOR UPDATE SKIP LOCKED``) keep writers apart."""

    name = "postgresql"
    priority_limit = 2**31 - 1  # INTEGER: 32 bits

    def to_db(self, value: datetime) -> TimeValue:
        return utc_time(value)

    def lock_migrations(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))

    def latency_s(self) -> ColumnElement[float]:
        seconds = func.extract("epoch", messages.c.sent_at) - func.extract(
            "epoch", messages.c.created_at
        )
        return func.cast(seconds, Float)

    @contextmanager
    def _driver(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled driver connection for one statement that commits itself; rolled back (or
        discarded, when the server dropped it) if the block raises."""
        with self._connect() as conn:
            dbapi = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
            try:
                yield dbapi
            except BaseException:
                if not _rolled_back(dbapi):
                    conn.invalidate()  # broken: never hand it out again
                raise

    def insert(self, rows: list[tuple[object, ...]]) -> int:
        with self._driver() as dbapi:
            return batch.insert_postgres(dbapi, rows)

    def claim(self, owner: str, limit: int, now: datetime, lease_until: datetime) -> list[Claimed]:
        with self._driver() as dbapi:
            return batch.claim_postgres(dbapi, owner, limit, now.astimezone(UTC), lease_until)

    def finish(
        self,
        owner: str,
        updates: list[tuple[object, ...]],
        tried: list[tuple[object, ...]],
        now: datetime,
        started: Sequence[str] = (),
    ) -> int:
        with self._driver() as dbapi:
            return batch.finish_postgres(dbapi, owner, updates, tried, utc_time(now), started)

    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        with self._driver() as dbapi:
            return batch.release_postgres(dbapi, owner, ids, utc_time(now))

    def mark_started(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        with self._driver() as dbapi:
            marked = batch.started_postgres(dbapi, owner, ids, utc_time(now))
            dbapi.commit()
            return marked


def dialect_for(name: str, connect: Connect, lock_file: str | None) -> Dialect:
    """The dialect object of the engine SQLAlchemy calls ``name``."""
    if name == "sqlite":
        return SqliteDialect(connect, lock_file)
    return PostgresDialect(connect)


def _sqlite(conn: Connection) -> sqlite3.Connection:
    return cast("sqlite3.Connection", conn.connection.driver_connection)


def _rolled_back(dbapi: psycopg.Connection[Any]) -> bool:
    """Roll back a failed statement's transaction; ``False`` if the connection is gone."""
    if dbapi.closed:
        return False
    try:
        dbapi.rollback()
    except Exception:
        return False
    return True
