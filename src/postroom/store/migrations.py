"""Create or upgrade the schema, one recorded version at a time.

``schema_version`` holds one row per version reached. :func:`upgrade` runs inside one
transaction that the caller opened under a lock (PostgreSQL ``pg_advisory_xact_lock``, SQLite
``BEGIN IMMEDIATE``), so two processes starting at once apply each step exactly once:

* empty database: create the current tables and indexes of :mod:`postroom.store.schema` and
  record :data:`SCHEMA_VERSION`;
* database at version ``k < SCHEMA_VERSION``: apply the :data:`UPGRADES` steps ``k+1 ..``
  in order, recording each;
* database at the current version: nothing;
* database newer than this postroom, or with postroom tables but no version: refuse.

To change the schema: edit :mod:`~postroom.store.schema` (what a new database gets), bump
:data:`SCHEMA_VERSION` and append an :class:`Step` that turns the previous version into the new
one (what an existing database gets). The two must end in the same schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, inspect, select

from postroom.errors import StoreError
from postroom.store.schema import (
    compress_payloads_with_lz4,
    dispatchers,
    metadata,
    schema_version,
)

__all__ = ["LOCK_KEY", "SCHEMA_VERSION", "UPGRADES", "Step", "current_version", "upgrade"]

#: version of the schema that :mod:`postroom.store.schema` describes
SCHEMA_VERSION = 3
#: PostgreSQL advisory lock key taken by ``migrate()`` ("postroom" in ASCII)
LOCK_KEY = 0x706F7374726F6F6D


@dataclass(frozen=True, slots=True)
class Step:
    """Turns a database at ``version - 1`` into ``version``; runs inside the migrate transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _cheaper_writes(conn: Connection) -> None:
    """Version 2: ``ix_messages_finished`` selects finished rows as ``status NOT IN ('queued',
    'sending')`` instead of naming the four final statuses (SQLite evaluates an ``IN`` list of
    more than two values through a temporary table for every row it writes, so each insert and
    finish paid for this index even when the row was not finished); PostgreSQL compresses new
    payloads with lz4 where the server has it.
    """
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_messages_finished")
    conn.exec_driver_sql(
        "CREATE INDEX ix_messages_finished ON messages (status, updated_at) "
        "WHERE status NOT IN ('queued', 'sending')"
    )
    compress_payloads_with_lz4(conn)


def _heartbeats(conn: Connection) -> None:
    """Version 3: the ``dispatchers`` table (heartbeats, relay state),
    ``messages.attempt_started_at`` (when the delivery of a leased row began),
    ``messages.refused`` (every permanent refusal so far) and ``attempts.replies`` (every
    recipient's reply).
    """
    dispatchers.create(conn, checkfirst=True)
    conn.exec_driver_sql("ALTER TABLE messages ADD COLUMN attempt_started_at " + _time_type(conn))
    conn.exec_driver_sql("ALTER TABLE messages ADD COLUMN refused TEXT")
    conn.exec_driver_sql("ALTER TABLE attempts ADD COLUMN replies TEXT")


def _time_type(conn: Connection) -> str:
    return "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "VARCHAR(26)"


#: upgrade steps after version 1, in order (version 1 is the initial schema)
UPGRADES: tuple[Step, ...] = (
    Step(2, "finished-rows index without an IN list; lz4 payloads", _cheaper_writes),
    Step(
        3,
        "dispatcher heartbeats, delivery start of leased rows, per-recipient replies",
        _heartbeats,
    ),
)


def current_version(conn: Connection) -> int:
    """The highest recorded version, 0 when the database has no ``schema_version`` table."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    found = conn.execute(select(func.max(schema_version.c.version))).scalar_one()
    return int(found or 0)


def upgrade(
    conn: Connection, *, latest: int = SCHEMA_VERSION, steps: Sequence[Step] = UPGRADES
) -> int:
    """Bring the schema to ``latest`` inside the caller's locked transaction; return it."""
    schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    if version > latest:
        raise StoreError(
            f"the database schema is version {version}, newer than this postroom "
            f"understands ({latest}): upgrade postroom"
        )
    if version == 0:
        _create_fresh(conn, latest)
        return latest
    for step in _pending(steps, version, latest):
        step.apply(conn)
        _record(conn, step.version, step.description)
    return latest


def _create_fresh(conn: Connection, latest: int) -> None:
    existing = [t for t in ("messages", "attempts") if inspect(conn).has_table(t)]
    if existing:
        raise StoreError(
            f"the database has table(s) {', '.join(existing)} but no recorded schema version: "
            "it was not created by postroom, refusing to change it"
        )
    metadata.create_all(conn)
    _record(conn, latest, "initial schema")


def _pending(steps: Sequence[Step], version: int, latest: int) -> list[Step]:
    wanted = list(range(version + 1, latest + 1))
    chosen = sorted((s for s in steps if version < s.version <= latest), key=lambda s: s.version)
    if [s.version for s in chosen] != wanted:
        raise StoreError(
            f"no complete upgrade path from schema version {version} to {latest} "
            f"(steps known: {[s.version for s in steps]})"
        )
    return chosen


def _record(conn: Connection, version: int, description: str) -> None:
    conn.execute(
        insert(schema_version).values(
            version=version, applied_at=datetime.now(UTC), description=description
        )
    )
