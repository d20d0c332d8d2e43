"""The dispatcher's database: idempotent ingest, lease-based claims, fenced outcomes.

States of one ``messages`` row and the calls that move it::

    (new) ──insert_messages──▶ queued              (or failed, when it cannot be sent at all)
    queued ──claim_due──▶ sending                  (lease_owner and lease_until set)
    queued ──expire_overdue──▶ expired             (expires_at reached before a claim)
    queued ──cancel──▶ cancelled
    sending ──finish──▶ sent | failed | expired    (lease cleared)
    sending ──finish(status="queued")──▶ queued    (due again at next_attempt_at)
    sending ──release──▶ queued                    (graceful shutdown; no failure counted)
    sending ──lease_until passed, claim_due──▶ sending under a new owner
    failed | expired ──retry──▶ queued
    sent | failed | expired | cancelled ──purge (updated_at < cutoff)──▶ deleted

A claim sets ``lease_owner`` and ``lease_until``. Only the lease owner can finish or release the
row (the update is *fenced* on ``status='sending' AND lease_owner=owner``), so a dispatcher that
stalled past its lease and was replaced cannot overwrite the newer outcome. Attempt rows are
facts and are recorded even then, as long as the message still exists.

No method holds a transaction open after it returns; every method is safe to call from several
threads and several processes at once. On SQLite, write transactions queue on the sidecar lock
file ``<database>.lock`` (see :mod:`postroom.store.locking`). Ingest, claim, finish and release
run as plain SQL on the driver (see :mod:`postroom.store.batch`); everything else goes through
SQLAlchemy Core. Database failures raise :class:`~postroom.errors.StoreError` naming the database
(password hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.types import Text

from postroom.config import redact_url
from postroom.errors import NotFoundError, StoreError
from postroom.store import batch
from postroom.store import stats as stats_queries
from postroom.store.convert import sqlite_time
from postroom.store.engine import WRITE_OPTION, lock_path, make_engine, use_wal
from postroom.store.locking import WriteLock
from postroom.store.migrations import LOCK_KEY, current_version, upgrade
from postroom.store.records import (
    AttemptInfo,
    Claimed,
    Finish,
    MessageInfo,
    NewMessage,
    Stats,
)
from postroom.store.schema import UTCDateTime, attempts, messages, status_finished, status_is

if TYPE_CHECKING:
    import sqlite3

    import psycopg

__all__ = ["Store", "open_store"]

m = messages
_RETRYABLE = ("failed", "expired")


def open_store(url: str, *, pool_size: int = 8) -> Store:
    """Open the database at ``url`` (nothing is created until :meth:`Store.migrate`).

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the folder is created),
    ``postgresql://user:password@host:5432/db`` or ``postgresql+psycopg://...``.
    """
    return Store(make_engine(url, pool_size=pool_size))


class Store:
    """All database access of postroom; see the module docstring for the row lifecycle."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: ``"sqlite"`` or ``"postgresql"``
        self.dialect: str = engine.dialect.name
        #: the database URL with the password hidden, for messages and logs
        self.url: str = redact_url(engine.url.render_as_string(hide_password=False))
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._to_db = batch.time_converter(self.dialect)
        #: SQLite: one writer at a time across threads and processes (see ``locking``)
        self._writer = WriteLock(lock_path(engine)) if self.dialect == "sqlite" else None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate SQLAlchemy / driver exceptions into StoreError, once, here."""
        try:
            yield
        except (DBAPIError, StatementError) as exc:
            raise StoreError(f"database {self.url}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.url}: {exc}") from exc
        except self._driver_error as exc:  # raised by the batch statements on the driver
            raise StoreError(f"database {self.url}: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._errors():
            try:
                conn = self._engine.connect()
            except DBAPIError as exc:
                raise StoreError(f"cannot connect to database {self.url}: {exc.orig}") from exc
            with conn:
                yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` on SQLite, under the store's write lock;
        commits unless the block raises.
        """
        with self._connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with self._writer.held() if self._writer else nullcontext(), conn.begin():
                yield conn

    @contextmanager
    def _sqlite_write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on a driver connection, for the statements of :mod:`batch`."""
        with self._connect() as conn:
            dbapi = cast("sqlite3.Connection", conn.connection.driver_connection)
            with self._sqlite_transaction(dbapi):
                yield dbapi

    @contextmanager
    def _sqlite_transaction(self, dbapi: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the write lock, straight on the driver.

        Nothing of SQLAlchemy runs while the lock is held: in a busy dispatcher each step of
        Python code there may wait for the GIL behind the SMTP threads, and every other writer
        waits for the lock meanwhile (see :mod:`postroom.store.batch`).
        """
        assert self._writer is not None
        with self._writer.held():
            dbapi.execute("BEGIN IMMEDIATE")
            try:
                yield
                dbapi.commit()
            except BaseException:
                if dbapi.in_transaction:
                    dbapi.rollback()
                raise

    @contextmanager
    def _postgres(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled driver connection for one batch statement that commits itself; rolled back
        (or discarded, when the server dropped it) if the block raises.
        """
        with self._connect() as conn:
            dbapi = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
            try:
                yield dbapi
            except BaseException:
                if not _rolled_back(dbapi):
                    conn.invalidate()  # broken: never hand it out again
                raise

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, and safe when several processes race.

        Runs in one transaction under a lock: ``pg_advisory_xact_lock`` on PostgreSQL,
        ``BEGIN IMMEDIATE`` on SQLite (after switching the file to WAL mode under the store's
        write lock). See :mod:`postroom.store.migrations`.
        """
        if self._writer is not None:
            with self._connect() as conn, self._writer.held():
                use_wal(cast("sqlite3.Connection", conn.connection.driver_connection))
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
            upgrade(conn)

    def schema_version(self) -> int:
        """The schema version of the database; 0 before the first :meth:`migrate`."""
        with self._connect() as conn:
            return current_version(conn)

    # -- ingest ---------------------------------------------------------------------------------

    def insert_messages(self, rows: Sequence[NewMessage]) -> int:
        """Insert rows in one transaction, skipping ids already stored; return rows inserted.

        Idempotent on ``id`` (``INSERT OR IGNORE`` / ``ON CONFLICT DO NOTHING``), so a batch the
        queue delivered twice is stored once.
        """
        if not rows:
            return 0
        to_db = self._to_db
        now = to_db(datetime.now(UTC))
        limit = batch.PRIORITY_LIMITS[self.dialect]
        params = [batch.new_row(row, now, to_db, limit) for row in rows]
        if self.dialect == "postgresql":
            with self._postgres() as dbapi:
                return batch.insert(dbapi, params)
        with self._sqlite_write() as sqlite_dbapi:
            return batch.insert(sqlite_dbapi, params)

    # -- dispatch -------------------------------------------------------------------------------

    def claim_due(self, owner: str, limit: int, lease_s: float, now: datetime) -> list[Claimed]:
        """Lease up to ``limit`` due rows to ``owner`` until ``now + lease_s``.

        Due: ``queued`` with ``due_at <= now < expires_at``, or ``sending`` with a lease that ran
        out before ``now`` (its dispatcher died). Highest priority first, then oldest. One
        statement (PostgreSQL, with ``FOR UPDATE SKIP LOCKED``) or one ``BEGIN IMMEDIATE``
        transaction (SQLite): two dispatchers never get the same row.
        """
        _aware(now, "now")
        if lease_s <= 0:
            raise StoreError(f"lease_s must be positive, got {lease_s!r}")
        if limit <= 0:
            return []
        lease_until = now + timedelta(seconds=lease_s)
        if self.dialect == "postgresql":
            with self._postgres() as dbapi:
                return batch.claim_postgres(dbapi, owner, limit, now.astimezone(UTC), lease_until)
        with self._connect() as conn:
            sqlite_dbapi = cast("sqlite3.Connection", conn.connection.driver_connection)
            with self._sqlite_transaction(sqlite_dbapi):
                keys = batch.lease_sqlite(
                    sqlite_dbapi, owner, limit, sqlite_time(now), sqlite_time(lease_until)
                )
            return batch.read_claimed_sqlite(sqlite_dbapi, owner, keys)

    def finish(self, owner: str, results: Sequence[Finish]) -> int:
        """Record outcomes in one transaction; return how many message rows were updated.

        Each result updates its row only while ``owner`` still holds the lease (fenced) and
        clears the lease. Each attempt is inserted whether or not the fence held (it happened),
        unless the message is gone.
        """
        if not results:
            return 0
        now = datetime.now(UTC)
        updates, tried = batch.outcome_rows(results, now, self._to_db)
        stamp = self._to_db(now)
        if self.dialect == "postgresql":
            with self._postgres() as dbapi:
                return batch.finish(dbapi, owner, updates, tried, stamp)
        with self._sqlite_write() as sqlite_dbapi:
            return batch.finish(sqlite_dbapi, owner, updates, tried, stamp)

    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        """Give leased rows back (``sending`` -> ``queued``) without counting a failure.

        Only rows ``owner`` still holds are released; returns how many.
        """
        _aware(now, "now")
        if not ids:
            return 0
        stamp = self._to_db(now)
        if self.dialect == "postgresql":
            with self._postgres() as dbapi:
                return batch.release(dbapi, owner, ids, stamp)
        with self._sqlite_write() as sqlite_dbapi:
            return batch.release(sqlite_dbapi, owner, ids, stamp)

    def next_due_at(self) -> datetime | None:
        """The earliest moment the dispatcher has work: a queued row becomes due or reaches
        ``expires_at``, or a lease runs out. ``None`` when nothing is queued or sending.
        The moment may be in the past (work is waiting now).
        """
        candidates = (
            select(m.c.due_at).where(status_is("queued")).order_by(m.c.due_at).limit(1),
            select(m.c.expires_at).where(status_is("queued")).order_by(m.c.expires_at).limit(1),
            select(m.c.lease_until).where(status_is("sending")).order_by(m.c.lease_until).limit(1),
        )
        with self._connect() as conn:
            found = [conn.execute(query).scalar_one_or_none() for query in candidates]
        times = [t for t in found if t is not None]
        return min(times) if times else None

    def expire_overdue(self, now: datetime) -> int:
        """Mark ``queued`` rows whose ``expires_at <= now`` as ``expired``; return how many.

        ``failure`` becomes ``not sent within max-time (expired at <expires_at> UTC)``.
        """
        _aware(now, "now")
        overdue = select(m.c.id, m.c.expires_at).where(status_is("queued"), m.c.expires_at <= now)
        with self._write() as conn:
            params = [
                {"b_id": row_id, "b_failure": _expiry_text(expires_at), "b_now": now}
                for row_id, expires_at in conn.execute(overdue)
            ]
            if not params:
                return 0
            return int(conn.execute(_EXPIRE_UPDATE, params).rowcount)

    # -- inspection -----------------------------------------------------------------------------

    def get(self, id: str) -> MessageInfo:
        """The message row ``id`` without its payload; :class:`NotFoundError` if there is none."""
        columns = [c for c in m.c if c.name != "data"]
        query = select(*columns, func.length(m.c.data).label("data_size")).where(m.c.id == id)
        with self._connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFoundError(f"no message with id {id!r}")
        return MessageInfo(**row._asdict())

    def attempts(self, id: str) -> list[AttemptInfo]:
        """The attempts of message ``id``, oldest first (empty when none or no such message)."""
        query = select(attempts).where(attempts.c.message_id == id).order_by(attempts.c.id)
        with self._connect() as conn:
            return [AttemptInfo(**row._asdict()) for row in conn.execute(query)]

    def stats(self, since: datetime | None, now: datetime) -> Stats:
        """Counts, latency percentiles and top failures; see :class:`Stats` for each figure."""
        if since is not None:
            _aware(since, "since")
        _aware(now, "now")
        with self._connect() as conn:
            return stats_queries.collect(conn, self.dialect, since, now)

    # -- operator actions -----------------------------------------------------------------------

    def cancel(self, id: str, now: datetime) -> None:
        """``queued`` (also scheduled for later) -> ``cancelled``.

        Raises :class:`NotFoundError`, or :class:`StoreError` naming the current status when the
        message is not queued (being sent, already sent, ...).
        """
        _aware(now, "now")
        stmt = (
            update(m)
            .where(m.c.id == id, status_is("queued"))
            .values(status="cancelled", updated_at=now)
        )
        self._transition(id, stmt, "cancelled", "queued")

    def retry(self, id: str, now: datetime, expires_at: datetime) -> None:
        """``failed`` / ``expired`` -> ``queued``, due at ``now``, with ``num_fails`` reset.

        Only the recipients still pending are tried again. Raises :class:`NotFoundError`, or
        :class:`StoreError` naming the current status for any other status.
        """
        _aware(now, "now")
        _aware(expires_at, "expires_at")
        stmt = (
            update(m)
            .where(m.c.id == id, status_is(*_RETRYABLE))
            .values(
                status="queued",
                num_fails=0,
                next_attempt_at=now,
                due_at=now,
                expires_at=expires_at,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        self._transition(id, stmt, "retried", "failed or expired")

    def _transition(self, id: str, stmt: Any, verb: str, allowed: str) -> None:
        with self._write() as conn:
            if conn.execute(stmt).rowcount:
                return
            status = conn.execute(select(m.c.status).where(m.c.id == id)).scalar_one_or_none()
        if status is None:
            raise NotFoundError(f"no message with id {id!r}")
        raise StoreError(f"message {id!r} is {status}: only {allowed} messages can be {verb}")

    def purge(
        self,
        older_than: datetime,
        *,
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete ``sent``/``failed``/``expired``/``cancelled`` rows last updated before
        ``older_than``, with their attempts, ``batch`` rows per transaction; return how many.

        ``progress`` is called after every batch with the number deleted so far.
        """
        _aware(older_than, "older_than")
        if batch < 1:
            raise StoreError(f"batch must be at least 1, got {batch!r}")
        old = (status_finished(), m.c.updated_at < older_than)
        finished = select(m.c.id).where(*old).limit(batch)
        total = 0
        while True:
            with self._write() as conn:
                ids = list(conn.execute(finished).scalars())
                deleted = 0
                if ids:
                    # the condition again: a row retried meanwhile stays; attempts go by cascade
                    gone = delete(m).where(m.c.id.in_(ids), *old)
                    deleted = int(conn.execute(gone).rowcount)
            total += deleted
            if deleted and progress is not None:
                progress(total)
            if len(ids) < batch:
                return total

    def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        self._engine.dispose()
        if self._writer is not None:
            self._writer.close()


# -- statements and row mapping -----------------------------------------------------------------


def _rolled_back(dbapi: psycopg.Connection[Any]) -> bool:
    """Roll back a failed batch statement's transaction; ``False`` if the connection is gone."""
    if dbapi.closed:
        return False
    try:
        dbapi.rollback()
    except Exception:
        return False
    return True


def _aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise StoreError(f"{name} must be a timezone-aware datetime, got {value!r}")


_EXPIRE_UPDATE = (
    update(m)
    .where(m.c.id == bindparam("b_id", type_=Text()), status_is("queued"))
    .values(
        status="expired",
        failure=bindparam("b_failure", type_=Text()),
        updated_at=bindparam("b_now", type_=UTCDateTime()),
    )
)


def _expiry_text(expires_at: datetime) -> str:
    return f"not sent within max-time (expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC)"
