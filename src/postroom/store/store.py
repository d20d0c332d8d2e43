"""The dispatcher's database: idempotent ingest, lease-based claims, fenced outcomes.

States of one ``messages`` row and the calls that move it::

    (new) ──insert_messages──▶ queued              (or failed, when it cannot be sent at all)
    queued ──claim_due──▶ sending                  (lease_owner and lease_until set)
    queued ──expire_overdue──▶ expired             (expires_at reached before a claim)
    queued ──cancel──▶ cancelled
    sending ──finish──▶ sent | failed | expired    (lease cleared)
    sending ──finish(status="queued")──▶ queued    (due again at next_attempt_at)
    sending ──release──▶ queued                    (graceful shutdown; no failure counted)
    sending ──its dispatcher died, take_over──▶ sending under a new owner, who records the
                                                   takeover as an attempt and finishes it
    failed | expired ──retry──▶ queued
    sent | failed | expired | cancelled ──purge (updated_at < cutoff)──▶ deleted

A claim sets ``lease_owner`` and ``lease_until``; the owner's heartbeat renews the lease while it
lives (:mod:`postroom.store.liveness`). Only the lease owner can finish or release the
row (the update is *fenced* on ``status='sending' AND lease_owner=owner``), so a dispatcher that
stalled past its lease and was replaced cannot overwrite the newer outcome. Attempt rows are
facts and are recorded even then, as long as the message still exists.

No method holds a transaction open after it returns; every method is safe to call from several
threads and several processes at once. On SQLite, write transactions queue on the sidecar lock
file ``<database>.lock`` (see :mod:`postroom.store.locking`). What differs between the engines
lives in one dialect object (:mod:`postroom.store.dialects`): ingest, claim, finish and release
run there as plain SQL on the driver (see :mod:`postroom.store.batch`); everything else goes
through SQLAlchemy Core. Methods take the time they act at (``now``) from the caller, so tests
drive them with a fake clock. Database failures raise :class:`~postroom.errors.StoreError`
naming the database (password hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, inspect, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.types import Text

from postroom.config import redact_url
from postroom.errors import NotFoundError, StoreError
from postroom.store import batch, liveness
from postroom.store import stats as stats_queries
from postroom.store.convert import load_replies
from postroom.store.dialects import dialect_for
from postroom.store.engine import lock_path, make_engine
from postroom.store.migrations import current_version, upgrade
from postroom.store.records import (
    Abandoned,
    AttemptInfo,
    Claimed,
    DispatcherBeat,
    DispatcherInfo,
    Finish,
    MessageInfo,
    NewMessage,
    Stats,
)
from postroom.store.schema import UTCDateTime, attempts, messages, status_finished, status_is

if TYPE_CHECKING:
    pass

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
        #: everything that differs between the engines (see :mod:`postroom.store.dialects`)
        self._dialect = dialect_for(self.dialect, self._connect, lock_path(engine))

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

    def _write(self) -> AbstractContextManager[Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` on SQLite, under the store's write lock;
        commits unless the block raises.
        """
        return self._dialect.write()

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, and safe when several processes race.

        Runs in one transaction under a lock: ``pg_advisory_xact_lock`` on PostgreSQL,
        ``BEGIN IMMEDIATE`` on SQLite (after switching the file to WAL mode under the store's
        write lock). See :mod:`postroom.store.migrations`.
        """
        with self._errors():
            self._dialect.prepare()
        with self._write() as conn:
            self._dialect.lock_migrations(conn)
            upgrade(conn)

    def schema_version(self) -> int:
        """The schema version of the database; 0 before the first :meth:`migrate`."""
        with self._connect() as conn:
            return current_version(conn)

    # -- ingest ---------------------------------------------------------------------------------

    def insert_messages(self, rows: Sequence[NewMessage], now: datetime | None = None) -> int:
        """Insert rows in one transaction, skipping ids already stored; return rows inserted.

        Idempotent on ``id`` (``INSERT OR IGNORE`` / ``ON CONFLICT DO NOTHING``), so a batch the
        queue delivered twice is stored once.
        """
        if not rows:
            return 0
        to_db, limit = self._dialect.to_db, self._dialect.priority_limit
        stamp = to_db(datetime.now(UTC) if now is None else now)
        params = [batch.new_row(row, stamp, to_db, limit) for row in rows]
        with self._errors():
            return self._dialect.insert(params)

    # -- dispatch -------------------------------------------------------------------------------

    def claim_due(self, owner: str, limit: int, lease_s: float, now: datetime) -> list[Claimed]:
        """Lease up to ``limit`` due rows to ``owner`` until ``now + lease_s``.

        Due: ``queued`` with ``due_at <= now < expires_at`` (rows of a dead dispatcher go through
        :meth:`take_over` first). Highest priority first, then oldest. One
        statement (PostgreSQL, with ``FOR UPDATE SKIP LOCKED``) or one ``BEGIN IMMEDIATE``
        transaction (SQLite): two dispatchers never get the same row.
        """
        _aware(now, "now")
        if lease_s <= 0:
            raise StoreError(f"lease_s must be positive, got {lease_s!r}")
        if limit <= 0:
            return []
        lease_until = now + timedelta(seconds=lease_s)
        with self._errors():
            return self._dialect.claim(owner, limit, now, lease_until)

    def finish(
        self,
        owner: str,
        results: Sequence[Finish],
        now: datetime | None = None,
        *,
        started: Sequence[str] = (),
    ) -> int:
        """Record outcomes in one transaction; return how many message rows were updated.

        Each result updates its row only while ``owner`` still holds the lease (fenced) and
        clears the lease. Each attempt is inserted whether or not the fence held (it happened),
        unless the message is gone. The rows ``started`` are marked in the same transaction
        (see :meth:`mark_started`).
        """
        if not results and not started:
            return 0
        now = datetime.now(UTC) if now is None else now
        _aware(now, "now")
        updates, tried = batch.outcome_rows(results, now, self._dialect.to_db)
        with self._errors():
            return self._dialect.finish(owner, updates, tried, now, started)

    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        """Give leased rows back (``sending`` -> ``queued``) without counting a failure.

        Only rows ``owner`` still holds are released; returns how many.
        """
        _aware(now, "now")
        if not ids:
            return 0
        with self._errors():
            return self._dialect.release(owner, ids, now)

    # -- liveness (see :mod:`postroom.store.liveness`) -----------------------------------------

    def heartbeat(self, me: DispatcherBeat, now: datetime, lease_s: float) -> set[str]:
        """Register or refresh dispatcher ``me`` and renew the lease of every row it holds until
        ``now + lease_s``; return the ids of the rows it holds."""
        _aware(now, "now")
        with self._write() as conn:
            return liveness.beat(conn, me, now, now + timedelta(seconds=lease_s))

    def forget_dispatchers(self, ids: Sequence[str]) -> int:
        """Remove dispatchers (stopped, or whose process is gone): their rows are abandoned."""
        with self._write() as conn:
            return liveness.remove_dispatchers(conn, ids)

    def dispatchers(self) -> list[DispatcherInfo]:
        """Every registered dispatcher, the most recent heartbeat first."""
        with self._connect() as conn:
            return liveness.all_dispatchers(conn)

    def mark_started(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        """Record that ``owner`` began delivering the rows ``ids`` (see :class:`Abandoned`)."""
        _aware(now, "now")
        if not ids:
            return 0
        with self._errors():
            return self._dialect.mark_started(owner, ids, now)

    def take_over(
        self,
        owner: str,
        now: datetime,
        *,
        dead_after_s: float,
        lease_s: float,
        limit: int,
        own_leftovers: bool = False,
    ) -> list[Abandoned]:
        """Lease to ``owner`` up to ``limit`` rows whose dispatcher is dead: its lease ran out,
        it is no longer registered, or its heartbeat is older than ``dead_after_s``. With
        ``own_leftovers``, instead the rows ``owner``'s previous run left. The caller records
        each as an attempt and finishes it (:meth:`finish`)."""
        _aware(now, "now")
        if limit <= 0:
            return []
        with self._write() as conn:
            return liveness.take_over(
                conn,
                owner,
                now,
                dead_after=timedelta(seconds=dead_after_s),
                lease_until=now + timedelta(seconds=lease_s),
                limit=limit,
                own_leftovers=own_leftovers,
            )

    def next_due_at(self) -> datetime | None:
        """The earliest moment a queued row becomes due or reaches ``expires_at``; ``None`` when
        nothing is queued. The moment may be in the past (work is waiting now). (Rows of dead
        dispatchers are looked for once a second anyway.)
        """
        candidates = (
            select(m.c.due_at).where(status_is("queued")).order_by(m.c.due_at).limit(1),
            select(m.c.expires_at).where(status_is("queued")).order_by(m.c.expires_at).limit(1),
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
            return [
                AttemptInfo(**(row._asdict() | {"replies": load_replies(row.replies)}))
                for row in conn.execute(query)
            ]

    def stats(self, since: datetime | None, now: datetime) -> Stats:
        """Counts, latency percentiles and top failures; see :class:`Stats` for each figure."""
        if since is not None:
            _aware(since, "since")
        _aware(now, "now")
        with self._connect() as conn:
            found = stats_queries.collect(conn, self._dialect.latency_s(), since, now)
            if not inspect(conn).has_table("dispatchers"):  # not migrated yet: read only
                return found
            return replace(found, dispatchers=liveness.all_dispatchers(conn))

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
        self._dialect.close()


# -- statements and row mapping -----------------------------------------------------------------


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
