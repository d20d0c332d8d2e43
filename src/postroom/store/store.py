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
threads and several processes at once. Database failures raise
:class:`~postroom.errors.StoreError` naming the database (password hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.types import Integer, Text

from postroom.errors import NotFoundError, StoreError
from postroom.store import stats as stats_queries
from postroom.store.engine import WRITE_OPTION, make_engine
from postroom.store.migrations import LOCK_KEY, current_version, upgrade
from postroom.store.records import (
    FINAL_STATUSES,
    FINISH_STATUSES,
    AttemptInfo,
    AttemptRecord,
    Claimed,
    Finish,
    MessageInfo,
    NewMessage,
    Stats,
)
from postroom.store.schema import JSONList, UTCDateTime, attempts, messages, status_is

__all__ = ["Store", "open_store"]

m = messages
_INSERT_STATUSES = ("queued", "failed")
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
        self.url: str = engine.url.render_as_string(hide_password=True)

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
        """One write transaction: ``BEGIN IMMEDIATE`` on SQLite; commits unless the block raises."""
        with self._connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, and safe when several processes race.

        Runs in one transaction under a lock: ``pg_advisory_xact_lock`` on PostgreSQL,
        ``BEGIN IMMEDIATE`` on SQLite. See :mod:`postroom.store.migrations`.
        """
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
        now = datetime.now(UTC)
        params = [_new_row(row, now) for row in rows]
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = (
            dialect_insert(m)
            .on_conflict_do_nothing(index_elements=[m.c.id])
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            # executemany, not one multi-row VALUES: the driver caches the small statement
            return int(conn.execute(stmt, params).rowcount)

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
        params = {
            "b_owner": owner,
            "b_now": now,
            "b_lease_until": now + timedelta(seconds=lease_s),
            "b_limit": limit,
        }
        if self.dialect == "postgresql":
            with self._connect() as conn:
                autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
                rows = list(autocommit.execute(_CLAIM, params))
        else:
            with self._write() as conn:
                rows = list(conn.execute(_CLAIM, params))
        rows.sort(key=lambda r: (-r.priority, r.created_at))
        return [_claimed(row) for row in rows]

    def finish(self, owner: str, results: Sequence[Finish]) -> int:
        """Record outcomes in one transaction; return how many message rows were updated.

        Each result updates its row only while ``owner`` still holds the lease (fenced) and
        clears the lease. Each attempt is inserted whether or not the fence held (it happened),
        unless the message is gone.
        """
        if not results:
            return 0
        now = datetime.now(UTC)
        updates = [_finish_params(owner, result, now) for result in results]
        attempt_rows = [_attempt_params(r.id, r.attempt) for r in results if r.attempt]
        with self._write() as conn:
            updated = int(conn.execute(_FINISH_UPDATE, updates).rowcount)
            if attempt_rows:
                if updated < len(updates):  # some leases were lost: was a message purged?
                    attempt_rows = _existing_only(conn, attempt_rows)
                if attempt_rows:
                    conn.execute(insert(attempts), attempt_rows)
            return updated

    def release(self, owner: str, ids: Sequence[str], now: datetime) -> int:
        """Give leased rows back (``sending`` -> ``queued``) without counting a failure.

        Only rows ``owner`` still holds are released; returns how many.
        """
        _aware(now, "now")
        if not ids:
            return 0
        stmt = (
            update(m)
            .where(m.c.id.in_(list(ids)), status_is("sending"), m.c.lease_owner == owner)
            .values(status="queued", lease_owner=None, lease_until=None, updated_at=now)
        )
        with self._write() as conn:
            return int(conn.execute(stmt).rowcount)

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
        old = (status_is(*FINAL_STATUSES), m.c.updated_at < older_than)
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


# -- statements and row mapping -----------------------------------------------------------------


def _aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise StoreError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _new_row(row: NewMessage, now: datetime) -> dict[str, object]:
    if row.status not in _INSERT_STATUSES:
        raise StoreError(
            f"message {row.id!r}: status {row.status!r} cannot be inserted "
            f"(expected one of {', '.join(_INSERT_STATUSES)})"
        )
    for name in ("created_at", "send_after", "expires_at"):
        _aware(getattr(row, name), f"message {row.id!r}: {name}")
    return {
        "id": row.id,
        "status": row.status,
        "priority": row.priority,
        "created_at": row.created_at,
        "send_after": row.send_after,
        "next_attempt_at": None,
        "due_at": row.send_after,
        "expires_at": row.expires_at,
        "num_fails": 0,
        "failure": row.failure,
        "updated_at": now,
        "mail_from": row.mail_from,
        "recipients": list(row.recipients),
        "pending_recipients": None,
        "subject": row.subject,
        "message_id": row.message_id,
        "data": row.data,
    }


def _build_claim() -> Any:
    """``UPDATE ... WHERE id IN (top rows of dead leases ∪ due queued rows) RETURNING ...``.

    Each candidate set is taken in claim order, at most ``b_limit`` rows, locked with ``FOR
    UPDATE SKIP LOCKED`` on PostgreSQL (nothing on SQLite, where the transaction is exclusive).
    Parameters: ``b_owner``, ``b_now``, ``b_lease_until``, ``b_limit`` (rendered inline, so
    both planners see the real limit).
    """
    now = bindparam("b_now", type_=UTCDateTime())
    limit = bindparam("b_limit", type_=Integer(), literal_execute=True)
    order = (m.c.priority.desc(), m.c.created_at)
    picked = (m.c.id, m.c.priority, m.c.created_at)
    stale = (
        select(*picked)
        .where(status_is("sending"), m.c.lease_until < now)
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("stale")
    )
    fresh = (
        select(*picked)
        .where(status_is("queued"), m.c.due_at <= now, m.c.expires_at > now)
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("fresh")
    )
    candidates = union_all(select(stale), select(fresh)).subquery("candidates")
    chosen = (
        select(candidates.c.id)
        .order_by(candidates.c.priority.desc(), candidates.c.created_at)
        .limit(limit)
    )
    return (
        update(m)
        .where(m.c.id.in_(chosen))
        .values(
            status="sending",
            lease_owner=bindparam("b_owner", type_=Text()),
            lease_until=bindparam("b_lease_until", type_=UTCDateTime()),
            updated_at=now,
        )
        .returning(
            m.c.id,
            m.c.data,
            m.c.mail_from,
            m.c.recipients,
            m.c.pending_recipients,
            m.c.num_fails,
            m.c.created_at,
            m.c.send_after,
            m.c.expires_at,
            m.c.message_id,
            m.c.priority,
        )
    )


_CLAIM = _build_claim()


def _claimed(row: Row[Any]) -> Claimed:
    pending = row.pending_recipients
    return Claimed(
        id=row.id,
        data=bytes(row.data),
        mail_from=row.mail_from,
        recipients=list(pending if pending is not None else row.recipients),
        num_fails=int(row.num_fails),
        created_at=row.created_at,
        send_after=row.send_after,
        expires_at=row.expires_at,
        message_id=row.message_id,
    )


_next = bindparam("b_next", type_=UTCDateTime())
_FINISH_UPDATE = (
    update(m)
    .where(
        m.c.id == bindparam("b_id", type_=Text()),
        status_is("sending"),
        m.c.lease_owner == bindparam("b_owner", type_=Text()),
    )
    .values(
        status=bindparam("b_status", type_=Text()),
        failure=bindparam("b_failure", type_=Text()),
        next_attempt_at=_next,
        due_at=case((_next > m.c.send_after, _next), else_=m.c.send_after),
        pending_recipients=bindparam("b_pending", type_=JSONList()),
        sent_at=bindparam("b_sent", type_=UTCDateTime()),
        num_fails=m.c.num_fails + bindparam("b_inc", type_=Integer()),
        last_failed_at=func.coalesce(
            bindparam("b_failed_at", type_=UTCDateTime()), m.c.last_failed_at
        ),
        lease_owner=None,
        lease_until=None,
        updated_at=bindparam("b_now", type_=UTCDateTime()),
    )
)


def _finish_params(owner: str, result: Finish, now: datetime) -> dict[str, object]:
    if result.status not in FINISH_STATUSES:
        raise StoreError(
            f"message {result.id!r}: finish status {result.status!r} is not one "
            f"of {', '.join(FINISH_STATUSES)}"
        )
    for name in ("next_attempt_at", "sent_at"):
        value = getattr(result, name)
        if value is not None:
            _aware(value, f"message {result.id!r}: {name}")
    failed_at = None
    if result.count_fail:
        failed_at = result.attempt.ended_at if result.attempt else now
    return {
        "b_id": result.id,
        "b_owner": owner,
        "b_status": result.status,
        "b_failure": result.failure,
        "b_next": result.next_attempt_at,
        "b_pending": result.pending_recipients,
        "b_sent": result.sent_at,
        "b_inc": 1 if result.count_fail else 0,
        "b_failed_at": failed_at,
        "b_now": now,
    }


def _existing_only(conn: Connection, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The attempt rows whose message still exists (it may have been finished and purged)."""
    ids = list({str(row["message_id"]) for row in rows})
    existing = set(conn.execute(select(m.c.id).where(m.c.id.in_(ids))).scalars())
    return [row for row in rows if row["message_id"] in existing]


def _attempt_params(message_id: str, attempt: AttemptRecord) -> dict[str, object]:
    _aware(attempt.started_at, f"message {message_id!r}: attempt started_at")
    _aware(attempt.ended_at, f"message {message_id!r}: attempt ended_at")
    return {
        "message_id": message_id,
        "started_at": attempt.started_at,
        "ended_at": attempt.ended_at,
        "outcome": attempt.outcome,
        "code": attempt.code,
        "enhanced_code": attempt.enhanced_code,
        "reply": attempt.reply,
        "dispatcher": attempt.dispatcher,
        "recipients": list(attempt.recipients),
    }


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
