"""The dispatcher's hot statements (ingest, claim, finish, release) as plain SQL on the driver.

These run for every message, so they skip SQLAlchemy's per-row machinery: the SQL text is fixed
per dialect (and number of rows), values are converted once into plain tuples
(:mod:`postroom.store.convert`), and the driver gets the whole batch at once. The one difference
between the engines is how a batch travels:

* SQLite gets the batch in one statement (up to 500 rows), in the caller's ``BEGIN IMMEDIATE``
  transaction: a multi-row ``VALUES`` list with every value bound as it is (an earlier version
  sent one JSON array, in which every quote of a payload or a reply had to be escaped, then
  parsed again: that cost more than the rest of the row). Lists of ids travel as JSON arrays
  unpacked by ``json_each``. One statement is one ``sqlite3_step``: Python's driver lets go of
  the GIL around every step, and in a busy dispatcher taking it back can wait behind the SMTP
  threads for milliseconds, while the write lock is held. Row by row (``executemany``) a batch
  of 20 finishes cost 5 times what it costs alone; as one statement the wait happens once per
  batch.
* PostgreSQL gets the batch as arrays, one per column, in one statement (``unnest``), sent in
  one round trip together with its ``COMMIT`` (pipeline mode), parameters in binary.

PostgreSQL's planner picks plans from table statistics, and without them (a young table, or
autovacuum off) it sorts every queued row for a claim, or reaches rows through the partial
index of leased rows, which keeps an entry for every past lease until vacuum. So claim and
finish run with sorts, bitmap scans, sequential scans, hash and merge joins and JIT switched off
for their own transaction only, which leaves the intended plans (walk ``ix_messages_claim`` in
order; reach each row by primary key) as the cheapest, and the fence of finish and release
compares the status with a value that arrives with each row, which no partial index can match.
(JIT goes too because the switched-off plan types count as very expensive, which would make the
planner compile the statement.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from postroom.errors import StoreError
from postroom.store.convert import (
    dump_list,
    dump_replies,
    load_list,
    time_from_postgres,
    time_from_sqlite,
)
from postroom.store.records import FINISH_STATUSES, Claimed, Finish, NewMessage

if TYPE_CHECKING:
    import psycopg

    PgConnection = psycopg.Connection[Any]

__all__ = [
    "TimeValue",
    "ToDb",
    "claim_keys_sql",
    "claim_postgres",
    "claim_sql",
    "db_time",
    "finish_postgres",
    "finish_sqlite",
    "insert_postgres",
    "insert_sqlite",
    "lease_sqlite",
    "new_row",
    "outcome_rows",
    "read_claimed_sqlite",
    "release_postgres",
    "release_sqlite",
]

_INSERT_STATUSES = ("queued", "failed")
#: a stored time parameter: SQLite text or an aware UTC datetime
TimeValue = str | datetime
ToDb = Callable[[datetime], TimeValue]


def db_time(value: datetime, row_id: str, field: str, to_db: ToDb) -> TimeValue:
    """``to_db(value)``, or :class:`StoreError` naming the message and the field for a naive
    time (the words are put together only then: this runs several times per row)."""
    try:
        return to_db(value)
    except ValueError:
        raise StoreError(
            f"message {row_id!r}: {field} must be a timezone-aware datetime, got {value!r}"
        ) from None


def _maybe_time(value: datetime | None, row_id: str, field: str, to_db: ToDb) -> TimeValue | None:
    return None if value is None else db_time(value, row_id, field, to_db)


# -- ingest ---------------------------------------------------------------------------------------

#: one row of the insert statements (:func:`new_row`), in this order
_NEW_COLUMNS = (
    *("id", "status", "priority", "created_at", "send_after", "expires_at", "failure"),
    *("updated_at", "mail_from", "recipients", "subject", "message_id", "data"),
)
_INSERTED = (
    "id, status, priority, created_at, send_after, next_attempt_at, due_at, expires_at, "
    "num_fails, failure, updated_at, mail_from, recipients, pending_recipients, subject, "
    "message_id, data"
)
#: one row of the SQLite insert: the columns of :data:`_NEW_COLUMNS`, ``send_after`` twice
#: (it is also the first ``due_at``)
_INSERT_SQLITE_ROW = "(?, ?, ?, ?, ?, NULL, ?, ?, 0, ?, ?, ?, ?, NULL, ?, ?, ?)"
_INSERT_SQLITE_WIDTH = _INSERT_SQLITE_ROW.count("?")
#: rows per multi-row statement at most (500 x 14 values stays under SQLite's default limit of
#: 32,766 values per statement; :func:`_statement_chunks` also respects a lower one)
_SQLITE_MAX_ROWS = 500


def _statement_chunks(
    dbapi: sqlite3.Connection, rows: list[tuple[object, ...]], width: int
) -> Iterator[list[tuple[object, ...]]]:
    """``rows`` of ``width`` values each, in runs that one statement can bind."""
    limit = dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    step = max(1, min(_SQLITE_MAX_ROWS, limit))
    for start in range(0, len(rows), step):
        yield rows[start : start + step]


@lru_cache(maxsize=16)
def _insert_sqlite_statement(count: int) -> str:
    """The insert of ``count`` rows (a new text per count: SQLite caches each one)."""
    values = ", ".join([_INSERT_SQLITE_ROW] * count)
    return f"INSERT INTO messages ({_INSERTED}) VALUES {values} ON CONFLICT (id) DO NOTHING"


_INSERT_POSTGRES = (
    f"INSERT INTO messages ({_INSERTED}) "
    "SELECT id, status, priority, created_at, send_after, NULL, send_after, expires_at, "
    "0, failure, updated_at, mail_from, recipients, NULL, subject, message_id, data "
    "FROM unnest(%b::text[], %b::text[], %b::int[], %b::timestamptz[], %b::timestamptz[], "
    "%b::timestamptz[], %b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::bytea[]) "
    f"AS r({', '.join(_NEW_COLUMNS)}) "
    "ON CONFLICT (id) DO NOTHING"
)


def new_row(
    row: NewMessage, now: TimeValue, to_db: ToDb, priority_limit: int
) -> tuple[object, ...]:
    """The insert parameters of ``row``; :class:`StoreError` for a bad status, time or
    priority (outside ``-priority_limit - 1 .. priority_limit``).
    """
    if row.status not in _INSERT_STATUSES:
        raise StoreError(
            f"message {row.id!r}: status {row.status!r} cannot be inserted "
            f"(expected one of {', '.join(_INSERT_STATUSES)})"
        )
    priority = row.priority
    if type(priority) is not int or not -priority_limit - 1 <= priority <= priority_limit:
        raise StoreError(
            f"message {row.id!r}: priority must be an integer between {-priority_limit - 1} and "
            f"{priority_limit}, got {priority!r}"
        )
    return (
        row.id,
        row.status,
        priority,
        db_time(row.created_at, row.id, "created_at", to_db),
        db_time(row.send_after, row.id, "send_after", to_db),
        db_time(row.expires_at, row.id, "expires_at", to_db),
        row.failure,
        now,
        row.mail_from,
        dump_list(row.recipients),
        row.subject,
        row.message_id,
        row.data,
    )


def insert_postgres(dbapi: PgConnection, rows: list[tuple[object, ...]]) -> int:
    """Insert ``rows`` (from :func:`new_row`), skipping ids already stored; return how many
    were inserted. Committed here."""
    with dbapi.pipeline():
        cursor = dbapi.execute(_INSERT_POSTGRES, _columns(rows, len(_NEW_COLUMNS)))
        dbapi.commit()
    return cursor.rowcount


def insert_sqlite(dbapi: sqlite3.Connection, rows: list[tuple[object, ...]]) -> int:
    """:func:`insert_postgres` for SQLite, inside the caller's transaction."""
    inserted = 0
    for chunk in _statement_chunks(dbapi, rows, _INSERT_SQLITE_WIDTH):
        values: list[object] = []
        for row in chunk:
            values += row[:5]
            values += row[4:]  # send_after again, as due_at
        inserted += dbapi.execute(_insert_sqlite_statement(len(chunk)), values).rowcount
    return inserted


def _columns(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    """``rows`` turned into one list per column (an empty batch still has ``width`` columns)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


# -- claims ---------------------------------------------------------------------------------------

#: the columns a claim returns, in this order
_CLAIMED_COLUMNS = (
    *("id", "data", "mail_from", "recipients", "pending_recipients", "num_fails"),
    *("created_at", "send_after", "expires_at", "message_id", "priority", "refused"),
)
_CLAIMED = ", ".join(_CLAIMED_COLUMNS)
#: where each column of :data:`_CLAIMED_COLUMNS` is in a claimed row
_AT = {name: i for i, name in enumerate(_CLAIMED_COLUMNS)}
#: PostgreSQL planner settings for one claim or finish transaction; see the module docstring
_PLAN_SETTINGS = "SELECT " + ", ".join(
    f"set_config('{name}', 'off', true)"
    for name in (
        "enable_sort",
        "enable_bitmapscan",
        "enable_seqscan",
        "enable_hashjoin",
        "enable_mergejoin",
        "jit",
    )
)


def _candidates(dialect: str, limit: int) -> str:
    """The rows a claim may take, in claim order (highest priority, then oldest), at most
    ``limit``: due ``queued`` rows. (Rows whose dispatcher died are taken over first, as a
    recorded attempt, by :meth:`Store.take_over`.) Returns the SQL that selects their key ``k``."""
    if dialect == "sqlite":
        key, lock, now = "rowid", "", ":now"
        # for a small LIMIT the planner would rather range over due_at and sort every due row
        # (tens of ms with a backlog); the claim index is already in claim order
        fresh_from = "messages INDEXED BY ix_messages_claim"
    else:
        key, lock, now = "id", " FOR UPDATE SKIP LOCKED", "%(now)s"
        fresh_from = "messages"
    order = f"ORDER BY priority DESC, created_at LIMIT {int(limit)}"
    return (
        f"SELECT {key} AS k FROM {fresh_from} "
        f"WHERE status = 'queued' AND due_at <= {now} AND expires_at > {now} {order}{lock}"
    )


@lru_cache(maxsize=64)
def claim_sql(dialect: str, limit: int) -> str:
    """PostgreSQL: ``UPDATE ... WHERE id IN (candidates) RETURNING`` in one statement.

    Candidates are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent claims never take the
    same row. The limit is written into the text so that the planner sees it.
    """
    candidates = _candidates(dialect, limit)
    return (
        f"UPDATE messages SET status = 'sending', lease_owner = %(owner)s, "
        f"lease_until = %(lease_until)s, updated_at = %(now)s "
        f"WHERE id IN ({candidates}) RETURNING {_CLAIMED}"
    )


@lru_cache(maxsize=64)
def claim_keys_sql(limit: int) -> str:
    """SQLite: the ``rowid`` of every row to claim, as one JSON array (one step to run)."""
    candidates = _candidates("sqlite", limit)
    return f"SELECT json_group_array(k) FROM ({candidates})"


_LEASE_SQLITE = (
    "UPDATE messages SET status = 'sending', lease_owner = :owner, lease_until = :lease_until, "
    "updated_at = :now WHERE rowid IN (SELECT value FROM json_each(:keys))"
)
_READ_CLAIMED_SQLITE = (
    f"SELECT {_CLAIMED} FROM messages WHERE rowid IN (SELECT value FROM json_each(?1)) "
    "AND status = 'sending' AND lease_owner = ?2"
)


def lease_sqlite(
    dbapi: sqlite3.Connection, owner: str, limit: int, now: str, lease_until: str
) -> str:
    """Lease up to ``limit`` due rows inside the caller's ``BEGIN IMMEDIATE`` transaction;
    return their keys for :func:`read_claimed_sqlite`.

    Two steps, whatever the number of rows: reading the claimed rows here would be one more
    step per row while the write lock is held. They are read after the commit instead: a
    leased row is left alone by every other writer until its lease runs out.
    """
    (keys,) = dbapi.execute(claim_keys_sql(limit), {"now": now}).fetchone()
    if keys != "[]":
        lease = {"keys": keys, "owner": owner, "lease_until": lease_until, "now": now}
        dbapi.execute(_LEASE_SQLITE, lease)
    return str(keys)


def read_claimed_sqlite(dbapi: sqlite3.Connection, owner: str, keys: str) -> list[Claimed]:
    """The rows :func:`lease_sqlite` leased to ``owner``, highest priority first, then oldest."""
    if keys == "[]":
        return []
    rows = dbapi.execute(_READ_CLAIMED_SQLITE, (keys, owner)).fetchall()
    return claimed_rows(rows, time_from_sqlite)


def claim_postgres(
    dbapi: PgConnection, owner: str, limit: int, now: datetime, lease_until: datetime
) -> list[Claimed]:
    """PostgreSQL: lease up to ``limit`` due rows in one committed statement."""
    params = {"now": now, "owner": owner, "lease_until": lease_until}
    cursor = dbapi.cursor(binary=True)
    with dbapi.pipeline():
        dbapi.execute(_PLAN_SETTINGS)
        cursor.execute(claim_sql("postgresql", limit), params)
        dbapi.commit()
    return claimed_rows(cursor.fetchall(), time_from_postgres)


def claimed_rows(
    rows: Sequence[Sequence[Any]], from_db: Callable[[Any], datetime]
) -> list[Claimed]:
    """The rows a claim returned (columns :data:`_CLAIMED_COLUMNS`), highest priority first,
    then oldest."""
    priority, created_at = _AT["priority"], _AT["created_at"]
    ordered = sorted(rows, key=lambda r: (-r[priority], r[created_at]))
    return [_claimed(r, from_db) for r in ordered]


def _claimed(r: Sequence[Any], from_db: Callable[[Any], datetime]) -> Claimed:
    pending = r[_AT["pending_recipients"]]
    return Claimed(
        id=r[_AT["id"]],
        data=bytes(r[_AT["data"]]),
        mail_from=r[_AT["mail_from"]],
        recipients=load_list(pending if pending is not None else r[_AT["recipients"]]),
        num_fails=int(r[_AT["num_fails"]]),
        created_at=from_db(r[_AT["created_at"]]),
        send_after=from_db(r[_AT["send_after"]]),
        expires_at=from_db(r[_AT["expires_at"]]),
        message_id=r[_AT["message_id"]],
        refused=load_list(refused) if (refused := r[_AT["refused"]]) is not None else [],
    )


# -- outcomes -------------------------------------------------------------------------------------

#: one row of the finish update, in this order
_OUTCOME_COLUMNS = (
    *("status", "failure", "next_attempt_at", "pending_recipients", "sent_at", "inc"),
    *("failed_at", "id", "fence", "refused"),
)
#: one attempts row, in this order
_ATTEMPT_COLUMNS = (
    *("message_id", "started_at", "ended_at", "outcome", "code", "enhanced_code", "reply"),
    *("dispatcher", "recipients", "replies"),
)
_OUTCOME_WIDTH = len(_OUTCOME_COLUMNS)


@lru_cache(maxsize=16)
def _finish_sqlite_statement(count: int) -> str:
    """The finish of ``count`` rows: ``?1`` is now, ``?2`` the owner, then each row's values
    in the order of :data:`_OUTCOME_COLUMNS`."""
    width = _OUTCOME_WIDTH
    rows = ", ".join(
        "(" + ", ".join(f"?{3 + i * width + j}" for j in range(width)) + ")" for i in range(count)
    )
    named = ", ".join(f"column{j + 1} AS {name}" for j, name in enumerate(_OUTCOME_COLUMNS))
    return (
        "UPDATE messages SET status = r.status, failure = r.failure, "
        "next_attempt_at = r.next_attempt_at, "
        "due_at = CASE WHEN r.next_attempt_at > messages.send_after THEN r.next_attempt_at "
        "ELSE messages.send_after END, "
        "pending_recipients = r.pending_recipients, sent_at = r.sent_at, "
        "refused = coalesce(r.refused, messages.refused), "
        "num_fails = messages.num_fails + r.inc, "
        "last_failed_at = coalesce(r.failed_at, messages.last_failed_at), "
        "lease_owner = NULL, lease_until = NULL, attempt_started_at = NULL, updated_at = ?1 "
        f"FROM (SELECT {named} FROM (VALUES {rows})) AS r "
        "WHERE messages.id = r.id AND messages.status = r.fence AND messages.lease_owner = ?2"
    )


@lru_cache(maxsize=16)
def _attempts_sqlite_statement(count: int) -> str:
    """The attempts of ``count`` rows, each kept only while its message exists."""
    row = "(" + ", ".join(["?"] * len(_ATTEMPT_COLUMNS)) + ")"
    return (
        f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
        f"SELECT * FROM (VALUES {', '.join([row] * count)}) AS v "
        "WHERE EXISTS (SELECT 1 FROM messages WHERE id = v.column1)"
    )


_FINISH_POSTGRES = (
    "WITH r AS (SELECT * FROM unnest(%(status)b::text[], %(failure)b::text[], "
    "%(next_attempt_at)b::timestamptz[], %(pending_recipients)b::text[], "
    "%(sent_at)b::timestamptz[], %(inc)b::int[], %(failed_at)b::timestamptz[], "
    "%(id)b::text[], %(fence)b::text[], %(refused)b::text[]) "
    f"AS r({', '.join(_OUTCOME_COLUMNS)})), "
    "done AS (UPDATE messages m SET status = r.status, failure = r.failure, "
    "next_attempt_at = r.next_attempt_at, "
    "due_at = CASE WHEN r.next_attempt_at > m.send_after THEN r.next_attempt_at "
    "ELSE m.send_after END, "
    "pending_recipients = r.pending_recipients, sent_at = r.sent_at, "
    "refused = coalesce(r.refused, m.refused), "
    "num_fails = m.num_fails + r.inc, last_failed_at = coalesce(r.failed_at, m.last_failed_at), "
    "lease_owner = NULL, lease_until = NULL, attempt_started_at = NULL, updated_at = %(now)b "
    "FROM r WHERE m.id = r.id AND m.status = r.fence AND m.lease_owner = %(owner)b "
    "RETURNING m.id), "
    f"tried AS (INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
    "SELECT * FROM unnest(%(a_message_id)b::text[], %(a_started_at)b::timestamptz[], "
    "%(a_ended_at)b::timestamptz[], %(a_outcome)b::text[], %(a_code)b::int[], "
    "%(a_enhanced_code)b::text[], %(a_reply)b::text[], %(a_dispatcher)b::text[], "
    "%(a_recipients)b::text[], %(a_replies)b::text[]) "
    f"AS a({', '.join(_ATTEMPT_COLUMNS)}) "
    "WHERE EXISTS (SELECT 1 FROM messages x WHERE x.id = a.message_id)) "
    "SELECT count(*) FROM done"
)


def outcome_rows(
    results: Sequence[Finish], now: datetime, to_db: ToDb
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The update rows and attempt rows of ``results``; :class:`StoreError` for a bad one."""
    updates: list[tuple[object, ...]] = []
    tried: list[tuple[object, ...]] = []
    for result in results:
        if result.status not in FINISH_STATUSES:
            raise StoreError(
                f"message {result.id!r}: finish status {result.status!r} is not one of "
                f"{', '.join(FINISH_STATUSES)}"
            )
        attempt = result.attempt
        failed_at: TimeValue | None = None
        if attempt is not None:
            ended = db_time(attempt.ended_at, result.id, "attempt ended_at", to_db)
            tried.append(
                (
                    result.id,
                    db_time(attempt.started_at, result.id, "attempt started_at", to_db),
                    ended,
                    attempt.outcome,
                    attempt.code,
                    attempt.enhanced_code,
                    attempt.reply,
                    attempt.dispatcher,
                    dump_list(attempt.recipients),
                    dump_replies(attempt.replies),
                )
            )
            if result.count_fail:
                failed_at = ended
        elif result.count_fail:
            failed_at = to_db(now)
        pending = result.pending_recipients
        updates.append(
            (
                result.status,
                result.failure,
                _maybe_time(result.next_attempt_at, result.id, "next_attempt_at", to_db),
                None if pending is None else dump_list(pending),
                _maybe_time(result.sent_at, result.id, "sent_at", to_db),
                1 if result.count_fail else 0,
                failed_at,
                result.id,
                "sending",
                None if result.refused is None else dump_list(result.refused),
            )
        )
    return updates, tried


def finish_postgres(
    dbapi: PgConnection,
    owner: str,
    updates: list[tuple[object, ...]],
    tried: list[tuple[object, ...]],
    now: TimeValue,
    started: Sequence[str] = (),
) -> int:
    """Write ``updates`` fenced on ``owner`` and insert ``tried`` for messages that still
    exist, and mark the rows ``started`` (:func:`started_postgres`); return how many messages
    were updated. One transaction, committed here.
    """
    outcomes = _columns(updates, len(_OUTCOME_COLUMNS))
    attempts = _columns(tried, len(_ATTEMPT_COLUMNS))
    params: dict[str, object] = dict(zip(_OUTCOME_COLUMNS, outcomes, strict=True))
    params.update(zip((f"a_{name}" for name in _ATTEMPT_COLUMNS), attempts, strict=True))
    params.update(now=now, owner=owner)
    with dbapi.pipeline():
        dbapi.execute(_PLAN_SETTINGS)
        cursor = dbapi.execute(_FINISH_POSTGRES, params)
        if started:
            dbapi.execute(_STARTED_POSTGRES, _started_params(owner, started, now))
        dbapi.commit()
    found = cursor.fetchone()
    return int(found[0]) if found else 0


def finish_sqlite(
    dbapi: sqlite3.Connection,
    owner: str,
    updates: list[tuple[object, ...]],
    tried: list[tuple[object, ...]],
    now: TimeValue,
    started: Sequence[str] = (),
) -> int:
    """:func:`finish_postgres` for SQLite, inside the caller's transaction: update the leased
    rows, then record the attempts of messages that still exist (a
    message purged meanwhile loses its attempt, as its other attempts went with it), then mark
    the rows ``started``."""
    updated = 0
    for chunk in _statement_chunks(dbapi, updates, _OUTCOME_WIDTH + 2):  # room for ?1, ?2
        values: list[object] = [now, owner]
        for row in chunk:
            values += row
        updated += dbapi.execute(_finish_sqlite_statement(len(chunk)), values).rowcount
    for chunk in _statement_chunks(dbapi, tried, len(_ATTEMPT_COLUMNS)):
        values = []
        for row in chunk:
            values += row
        dbapi.execute(_attempts_sqlite_statement(len(chunk)), values)
    started_sqlite(dbapi, owner, started, now)
    return updated


_STARTED_SQLITE = (
    "UPDATE messages SET attempt_started_at = ?1 "
    "WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'sending' AND lease_owner = ?3 "
    "AND attempt_started_at IS NULL"
)
_STARTED_POSTGRES = (
    "UPDATE messages SET attempt_started_at = %(now)b "
    "WHERE id = ANY(%(ids)b::text[]) AND status = %(fence)b AND lease_owner = %(owner)b "
    "AND attempt_started_at IS NULL"
)


def started_sqlite(
    dbapi: sqlite3.Connection, owner: str, ids: Sequence[str], now: TimeValue
) -> int:
    """Note that ``owner`` began delivering the rows ``ids`` it still holds (the first time
    only); inside the caller's transaction. Returns how many rows were marked."""
    if not ids:
        return 0
    return int(dbapi.execute(_STARTED_SQLITE, (now, dump_list(list(ids)), owner)).rowcount)


def started_postgres(dbapi: PgConnection, owner: str, ids: Sequence[str], now: TimeValue) -> int:
    """:func:`started_sqlite` for PostgreSQL, inside the caller's transaction."""
    if not ids:
        return 0
    return dbapi.execute(_STARTED_POSTGRES, _started_params(owner, ids, now)).rowcount


def _started_params(owner: str, ids: Sequence[str], now: TimeValue) -> dict[str, object]:
    return {"now": now, "ids": list(ids), "fence": "sending", "owner": owner}


_RELEASE_SQLITE = (
    "UPDATE messages SET status = 'queued', lease_owner = NULL, lease_until = NULL, "
    "attempt_started_at = NULL, updated_at = ?1 "
    "WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'sending' AND lease_owner = ?3"
)
_RELEASE_POSTGRES = (
    "UPDATE messages m SET status = 'queued', lease_owner = NULL, lease_until = NULL, "
    "attempt_started_at = NULL, updated_at = %(now)b "
    "FROM unnest(%(ids)b::text[], %(fence)b::text[]) AS r(id, fence) "
    "WHERE m.id = r.id AND m.status = r.fence AND m.lease_owner = %(owner)b"
)


def release_sqlite(
    dbapi: sqlite3.Connection, owner: str, ids: Sequence[str], now: TimeValue
) -> int:
    """``sending`` -> ``queued`` for the ``ids`` ``owner`` still holds; return how many.
    Inside the caller's transaction."""
    unique = list(dict.fromkeys(ids))
    return int(dbapi.execute(_RELEASE_SQLITE, (now, dump_list(unique), owner)).rowcount)


def release_postgres(dbapi: PgConnection, owner: str, ids: Sequence[str], now: TimeValue) -> int:
    """:func:`release_sqlite` for PostgreSQL, committed here."""
    unique = list(dict.fromkeys(ids))
    params = {"now": now, "ids": unique, "fence": ["sending"] * len(unique), "owner": owner}
    with dbapi.pipeline():
        cursor = dbapi.execute(_RELEASE_POSTGRES, params)
        dbapi.commit()
    return cursor.rowcount
