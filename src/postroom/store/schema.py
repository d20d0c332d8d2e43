"""Tables and indexes of the postroom database (a public contract: users query them with SQL).

Times are UTC. PostgreSQL stores them as ``timestamptz``. SQLite stores them as fixed-width
text, ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, so that text order is time order and SQLite's own
``datetime('now', '-1 day')`` compares correctly against them.

The indexes follow the queries the dispatcher runs all the time, on tables of millions of rows:

* claim: ``status='queued' AND due_at <= now ORDER BY priority DESC, created_at LIMIT n`` walks
  ``ix_messages_claim`` (queued rows only, already in claim order) and stops after ``n`` due rows;
* dead leases: ``status='sending' AND lease_until < now`` uses ``ix_messages_lease``;
* ``next_due_at`` reads the first entry of ``ix_messages_due``, ``ix_messages_expiry`` and
  ``ix_messages_lease``; ``expire_overdue`` ranges over ``ix_messages_expiry``;
* purge ranges over ``ix_messages_finished`` (finished rows only: claims never touch it);
* stats count through the partial indexes and range over ``ix_messages_created``,
  ``ix_messages_sent`` and ``ix_attempts_started``.

Every status change rewrites the row, so each index costs on the hot path; most are partial
(one status only) to keep that cost down. A claim of 50 rows writes the rows' pages plus one
page each of ``ix_messages_claim``, ``ix_messages_due``, ``ix_messages_expiry`` and
``ix_messages_lease``; a finish, the rows' pages plus one page each of ``ix_messages_lease``,
``ix_messages_finished``, ``ix_messages_sent`` and the attempts table and its two indexes.
Partial-index predicates avoid ``IN`` lists of more than two values: SQLite evaluates those
through a temporary table for every row written (see :data:`FINISHED_WHERE`). On PostgreSQL
new payloads are compressed with lz4 where the server supports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    and_,
    event,
    literal_column,
    text,
)
from sqlalchemy.types import DateTime, String, TypeDecorator, TypeEngine

from postroom.store.convert import (
    SQLITE_TIME_WIDTH,
    dump_list,
    load_list,
    sqlite_time,
    time_from_postgres,
    time_from_sqlite,
    utc_time,
)
from postroom.store.records import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = [
    "FINISHED_WHERE",
    "JSONList",
    "UTCDateTime",
    "attempts",
    "compress_payloads_with_lz4",
    "dispatchers",
    "messages",
    "metadata",
    "schema_version",
    "status_finished",
    "status_is",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, fixed-width UTC text on SQLite.

    Naive datetimes are refused (``ValueError``): the store never guesses a time zone.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(SQLITE_TIME_WIDTH))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> object:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_time(value)
        return utc_time(value)

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return time_from_sqlite(value)
        if isinstance(value, datetime):
            return time_from_postgres(value)
        raise ValueError(f"unexpected time value {value!r} in the database")


class JSONList(TypeDecorator[list[str]]):
    """A list of strings stored as JSON text (SQLite ``json_each()``, PostgreSQL ``::jsonb``)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else dump_list(value)

    def process_result_value(self, value: object, dialect: Dialect) -> list[str] | None:
        return None if value is None else load_list(str(value))


def status_is(*statuses: str) -> ColumnElement[bool]:
    """``messages.status`` equal to one of ``statuses``, written as SQL literals.

    Literals, not bound parameters: the planners of both engines match a partial index
    (``WHERE status = 'queued'``) only against a literal, never against a parameter.
    """
    for status in statuses:
        if not status.isidentifier():
            raise ValueError(f"{status!r} is not a status")
    values: list[ColumnElement[str]] = [literal_column(f"'{status}'") for status in statuses]
    if len(values) == 1:
        return messages.c.status == values[0]
    return messages.c.status.in_(values)


def status_finished() -> ColumnElement[bool]:
    """Finished rows (``sent``, ``failed``, ``expired``, ``cancelled``), written so that both
    planners use ``ix_messages_finished``: its exact predicate, plus the final statuses by name
    so that a range on ``updated_at`` becomes one index seek per status.
    """
    active: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in ACTIVE_STATUSES]
    return and_(messages.c.status.not_in(active), status_is(*FINAL_STATUSES))


metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("send_after", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("due_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("num_fails", Integer, nullable=False, server_default=text("0")),
    Column("last_failed_at", UTCDateTime, nullable=True),
    Column("failure", Text, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("mail_from", Text, nullable=False),
    Column("recipients", JSONList, nullable=False),
    Column("pending_recipients", JSONList, nullable=True),
    Column("subject", Text, nullable=False, server_default=text("''")),
    Column("message_id", Text, nullable=True),
    Column("data", LargeBinary, nullable=False),
    Column("lease_owner", Text, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempt_started_at", UTCDateTime, nullable=True),
    Column("refused", JSONList, nullable=True),
)

_QUEUED = text("status = 'queued'")
_SENDING = text("status = 'sending'")
_SENT = text("status = 'sent'")
#: finished rows, by the two statuses they are not: SQLite evaluates an ``IN`` list of more than
#: two values through a temporary table on every row written, which costs more than the index
FINISHED_WHERE = f"status NOT IN ({', '.join(repr(s) for s in ACTIVE_STATUSES)})"
_FINISHED = text(FINISHED_WHERE)

Index(
    "ix_messages_claim",
    messages.c.priority.desc(),
    messages.c.created_at,
    messages.c.due_at,
    sqlite_where=_QUEUED,
    postgresql_where=_QUEUED,
)
Index("ix_messages_due", messages.c.due_at, sqlite_where=_QUEUED, postgresql_where=_QUEUED)
Index("ix_messages_expiry", messages.c.expires_at, sqlite_where=_QUEUED, postgresql_where=_QUEUED)
Index("ix_messages_lease", messages.c.lease_until, sqlite_where=_SENDING, postgresql_where=_SENDING)
Index(
    "ix_messages_finished",
    messages.c.status,
    messages.c.updated_at,
    sqlite_where=_FINISHED,
    postgresql_where=_FINISHED,
)
Index("ix_messages_created", messages.c.created_at)
Index("ix_messages_sent", messages.c.sent_at, sqlite_where=_SENT, postgresql_where=_SENT)
Index("ix_messages_message_id", messages.c.message_id)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        Text,
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("code", Integer, nullable=True),
    Column("enhanced_code", Text, nullable=True),
    Column("reply", Text, nullable=False, server_default=text("''")),
    Column("dispatcher", Text, nullable=False, server_default=text("''")),
    Column("recipients", JSONList, nullable=False),
    Column("replies", Text, nullable=True),
)

Index("ix_attempts_message_id", attempts.c.message_id)
Index("ix_attempts_started", attempts.c.started_at)


def compress_payloads_with_lz4(conn: Connection) -> None:
    """PostgreSQL: store new payloads (``messages.data``) compressed with lz4 where the server
    supports it. Payloads of a few KB go to the TOAST table; pglz, the default, spends more time
    compressing them, most of all when they do not compress. Other engines: nothing.
    """
    if conn.dialect.name != "postgresql":
        return
    supported = conn.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    if supported:
        conn.exec_driver_sql("ALTER TABLE messages ALTER COLUMN data SET COMPRESSION lz4")


@event.listens_for(messages, "after_create")
def _after_messages_created(target: Table, connection: Connection, **kw: object) -> None:
    compress_payloads_with_lz4(connection)


#: one row per live dispatcher process: its heartbeat, and the state of its relay
dispatchers = Table(
    "dispatchers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("relay_down_since", UTCDateTime, nullable=True),
    Column("relay_failure", Text, nullable=True),
)

#: one row per applied migration step; ``max(version)`` is the schema version
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("description", Text, nullable=False),
)
