"""The store contract, run unchanged against SQLite (a file) and PostgreSQL (a fresh database)."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, inspect, text

from postroom.errors import NotFoundError, StoreError
from postroom.store import (
    SCHEMA_VERSION,
    STATUSES,
    AttemptRecord,
    DispatcherBeat,
    Finish,
    NewMessage,
    RecipientReply,
    Store,
    batch,
    open_store,
)
from postroom.store.migrations import Step, upgrade

PUBLIC_COLUMNS = (
    *("id", "status", "priority", "created_at", "send_after", "next_attempt_at", "due_at"),
    *("expires_at", "num_fails", "last_failed_at", "failure", "sent_at", "updated_at"),
    *("mail_from", "recipients", "pending_recipients", "subject", "message_id", "data"),
    *("lease_owner", "lease_until", "attempt_started_at", "refused"),
)
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(id: str, **changes: object) -> NewMessage:
    row = NewMessage(
        id=id,
        status="queued",
        priority=0,
        created_at=T0,
        send_after=T0,
        expires_at=at(3600),
        mail_from="sender@example.com",
        recipients=["a@example.com", "b@example.com"],
        subject=f"subject {id}",
        message_id=f"<{id}@example.com>",
        data=b"payload " + id.encode(),
    )
    return replace(row, **changes)  # type: ignore[arg-type]


def attempt(outcome: str = "sent", *, ended: datetime = T0, who: str = "A") -> AttemptRecord:
    return AttemptRecord(
        started_at=ended - timedelta(seconds=1),
        ended_at=ended,
        outcome=outcome,
        code=250 if outcome == "sent" else 451,
        enhanced_code="2.0.0" if outcome == "sent" else "4.3.0",
        reply="ok" if outcome == "sent" else "try later",
        dispatcher=who,
        recipients=["a@example.com", "b@example.com"],
    )


def sent(id: str, *, at_time: datetime = T0, who: str = "A") -> Finish:
    return Finish(
        id=id,
        status="sent",
        attempt=attempt(ended=at_time, who=who),
        count_fail=False,
        failure=None,
        next_attempt_at=None,
        pending_recipients=None,
        sent_at=at_time,
    )


def retry_later(id: str, when: datetime, *, pending: list[str] | None = None) -> Finish:
    return Finish(
        id=id,
        status="queued",
        attempt=attempt("temporary", ended=T0),
        count_fail=True,
        failure="451 4.3.0 try later",
        next_attempt_at=when,
        pending_recipients=pending,
        sent_at=None,
    )


# -- schema and migrations ---------------------------------------------------------------------


def test_migrate_creates_the_public_schema_and_is_idempotent(store: Store) -> None:
    store.migrate()
    assert store.schema_version() == SCHEMA_VERSION == 3
    with store._engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        columns = {c["name"] for c in inspect(conn).get_columns("messages")}
        attempt_columns = {c["name"] for c in inspect(conn).get_columns("attempts")}
        versions = conn.execute(text("SELECT count(*) FROM schema_version")).scalar_one()
    assert {"messages", "attempts", "schema_version", "dispatchers"} <= tables
    assert "replies" in attempt_columns
    assert versions == 1
    assert set(PUBLIC_COLUMNS) <= columns


def test_schema_version_is_zero_before_migrate(store_url: str) -> None:
    with open_store(store_url) as fresh:
        assert fresh.schema_version() == 0


def test_concurrent_migrate_applies_the_schema_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store) -> None:
        barrier.wait()
        try:
            s.migrate()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with stores[0]._engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar_one() == 1
    for s in stores:
        s.close()


def test_upgrade_applies_pending_steps_in_order(store: Store) -> None:
    def add_column(conn: Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE messages ADD COLUMN campaign TEXT")

    nxt = SCHEMA_VERSION + 1
    steps = [Step(nxt, "messages.campaign", add_column)]
    with store._engine.begin() as conn:
        assert upgrade(conn, latest=nxt, steps=steps) == nxt
        assert upgrade(conn, latest=nxt, steps=steps) == nxt  # nothing left to do
    assert store.schema_version() == nxt
    with store._engine.connect() as conn:
        assert "campaign" in {c["name"] for c in inspect(conn).get_columns("messages")}
    with pytest.raises(StoreError, match="newer than this postroom"):
        store.migrate()


def test_upgrade_refuses_a_gap_in_the_steps(store: Store) -> None:
    gap = SCHEMA_VERSION + 2  # no step for SCHEMA_VERSION + 1
    with store._engine.begin() as conn, pytest.raises(StoreError, match="upgrade path"):
        upgrade(conn, latest=gap, steps=[Step(gap, "x", lambda c: None)])


def test_migrate_refuses_foreign_tables(store_url: str) -> None:
    with open_store(store_url) as s:
        with s._engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE messages (id TEXT PRIMARY KEY)")
        with pytest.raises(StoreError, match="not created by postroom"):
            s.migrate()


V1_FINISHED_INDEX = (
    "CREATE INDEX ix_messages_finished ON messages (status, updated_at) "
    "WHERE status IN ('sent', 'failed', 'expired', 'cancelled')"
)


def finished_index_sql(s: Store) -> str:
    with s._engine.connect() as conn:
        if s.dialect == "sqlite":
            query = "SELECT sql FROM sqlite_master WHERE name = 'ix_messages_finished'"
        else:
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_finished'"
        return str(conn.exec_driver_sql(query).scalar_one())


def test_migrate_upgrades_a_version_1_database(store: Store) -> None:
    # a version 1 database: the finished-rows index named the final statuses one by one, and
    # no dispatchers table, delivery start or per-recipient replies (version 3)
    with store._engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE dispatchers")
        conn.exec_driver_sql("ALTER TABLE messages DROP COLUMN attempt_started_at")
        conn.exec_driver_sql("ALTER TABLE messages DROP COLUMN refused")
        conn.exec_driver_sql("ALTER TABLE attempts DROP COLUMN replies")
        conn.exec_driver_sql("DROP INDEX ix_messages_finished")
        conn.exec_driver_sql(V1_FINISHED_INDEX)
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE messages ALTER COLUMN data SET COMPRESSION pglz")
        conn.exec_driver_sql("UPDATE schema_version SET version = 1")
    assert store.schema_version() == 1
    store.insert_messages([new("m1"), new("m2")])
    store.cancel("m1", at(1))

    store.migrate()
    assert store.schema_version() == 3
    with store._engine.connect() as conn:
        steps = conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY 1").all()
        assert "dispatchers" in inspect(conn).get_table_names()
    assert [v for (v,) in steps] == [1, 2, 3]
    index = finished_index_sql(store)
    assert "sending" in index and "cancelled" not in index
    if store.dialect == "postgresql":  # new payloads compressed with lz4 (this server has it)
        with store._engine.connect() as conn:
            method = conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'messages'::regclass AND attname = 'data'"
            ).scalar_one()
        assert method == "l"
    assert store.get("m2").status == "queued"
    assert store.purge(at(2)) == 1
    store.migrate()  # idempotent
    assert store.schema_version() == 3
    assert store.get("m2").attempt_started_at is None


# -- ingest ------------------------------------------------------------------------------------


def test_insert_is_idempotent_on_id(store: Store) -> None:
    assert store.insert_messages([new("m1"), new("m2"), new("m2")]) == 2
    assert store.insert_messages([new("m1"), new("m2"), new("m3")]) == 1
    assert store.insert_messages([]) == 0
    assert store.stats(None, T0).counts["queued"] == 3


def test_a_batch_larger_than_one_statement_is_inserted_whole_and_once(store: Store) -> None:
    rows = [new(f"m{i:04d}", data=f"payload {i}".encode()) for i in range(1234)]
    rows.insert(700, new("m0001"))  # a repeat in another statement than its first
    assert store.insert_messages(rows) == 1234
    assert store.insert_messages(rows[-10:]) == 0
    claimed = store.claim_due("A", 2000, 60, at(10))
    assert len(claimed) == 1234
    assert {c.id: c.data for c in claimed}["m1233"] == b"payload 1233"
    assert store.get("m0500").due_at == store.get("m0500").send_after


def test_a_finish_larger_than_one_statement_records_every_row_and_attempt(store: Store) -> None:
    ids = [f"m{i:04d}" for i in range(1203)]
    store.insert_messages([new(i) for i in ids])
    assert len(store.claim_due("A", 2000, 60, at(1))) == 1203
    results = [sent(i) if n % 3 else retry_later(i, at(600)) for n, i in enumerate(ids)]
    assert store.finish("A", results, at(2)) == 1203
    counts = store.stats(None, at(3)).counts
    assert (counts["sent"], counts["queued"], counts["sending"]) == (802, 401, 0)
    assert [a.reply for a in store.attempts("m1202")] == ["ok"]
    assert store.get("m1200").due_at == at(600)


def test_get_round_trips_every_column_as_aware_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    store.insert_messages(
        [new("m1", priority=7, send_after=at(60).astimezone(paris), data=b"\x00\xff" * 50)]
    )
    info = store.get("m1")
    assert info.status == "queued"
    assert info.priority == 7
    assert info.created_at == T0 and info.created_at.tzinfo == UTC
    assert info.send_after == at(60) and info.send_after.tzinfo == UTC
    assert info.due_at == at(60)
    assert info.expires_at == at(3600)
    assert info.recipients == ["a@example.com", "b@example.com"]
    assert info.pending_recipients is None
    assert info.data_size == 100
    assert info.subject == "subject m1"
    assert info.message_id == "<m1@example.com>"
    assert (info.num_fails, info.failure, info.sent_at, info.lease_owner) == (0, None, None, None)
    assert info.updated_at.tzinfo == UTC


PAYLOADS = {
    "text": '{"subject": "Grüße ✓"}'.encode(),
    "binary": b"\xff\xfe not UTF-8",
    "nul": b"text with a \x00 inside",
    "empty": b"",
}


def test_payload_bytes_come_back_exactly_whatever_they_hold(store: Store) -> None:
    store.insert_messages([new(name, data=data) for name, data in PAYLOADS.items()])
    claimed = {c.id: c.data for c in store.claim_due("A", 10, 60, at(10))}
    assert claimed == PAYLOADS
    if store.dialect == "sqlite":
        with store._engine.connect() as conn:
            types = conn.exec_driver_sql("SELECT DISTINCT typeof(data) FROM messages").all()
        assert types == [("blob",)]


def test_failed_rows_are_stored_with_their_reason(store: Store) -> None:
    store.insert_messages([new("bad", status="failed", failure="cannot be sent: no recipients")])
    info = store.get("bad")
    assert (info.status, info.failure) == ("failed", "cannot be sent: no recipients")
    assert store.claim_due("A", 10, 60, at(10)) == []


def test_a_failed_batch_writes_nothing_and_the_store_keeps_working(store: Store) -> None:
    store.insert_messages([new("m1")])
    # "m1" again is skipped, "bad" breaks a NOT NULL constraint: the whole batch is refused
    bad = [new("m2"), new("m1"), new("bad", mail_from=None)]
    with pytest.raises(StoreError, match="database"):
        store.insert_messages(bad)
    with pytest.raises(StoreError, match="'huge': priority must be an integer"):
        store.insert_messages([new("huge", priority=2**63)])
    with pytest.raises(NotFoundError):
        store.get("m2")
    for _ in range(3):  # every pooled connection is usable again
        assert store.insert_messages([new("m2"), new("m3")]) in (0, 2)
    assert sorted(c.id for c in store.claim_due("A", 10, 60, at(0))) == ["m1", "m2", "m3"]


def test_insert_refuses_naive_times_and_unknown_statuses(store: Store) -> None:
    with pytest.raises(StoreError, match="send_after must be a timezone-aware"):
        store.insert_messages([new("m1", send_after=datetime(2026, 1, 1))])
    with pytest.raises(StoreError, match="status 'sending' cannot be inserted"):
        store.insert_messages([new("m1", status="sending")])
    with pytest.raises(NotFoundError, match="m1"):
        store.get("m1")


# -- claims ------------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest(store: Store) -> None:
    store.insert_messages(
        [
            new("old-low", created_at=at(-30)),
            new("new-high", priority=5, created_at=at(-10)),
            new("old-high", priority=5, created_at=at(-20)),
            new("new-low", created_at=at(-5)),
        ]
    )
    first = store.claim_due("A", 3, 60, at(1))
    assert [c.id for c in first] == ["old-high", "new-high", "old-low"]
    assert [c.id for c in store.claim_due("A", 3, 60, at(1))] == ["new-low"]
    assert store.claim_due("A", 3, 60, at(1)) == []


def test_claim_leases_the_row(store: Store) -> None:
    store.insert_messages([new("m1")])
    [claimed] = store.claim_due("dispatcher-1", 10, 90, at(5))
    assert claimed.data == b"payload m1"
    assert claimed.recipients == ["a@example.com", "b@example.com"]
    assert (claimed.mail_from, claimed.num_fails) == ("sender@example.com", 0)
    assert (claimed.created_at, claimed.send_after, claimed.expires_at) == (T0, T0, at(3600))
    assert claimed.message_id == "<m1@example.com>"
    info = store.get("m1")
    assert (info.status, info.lease_owner, info.lease_until) == ("sending", "dispatcher-1", at(95))


def test_claim_skips_scheduled_expired_and_finished_rows(store: Store) -> None:
    store.insert_messages(
        [
            new("later", send_after=at(600)),
            new("too-late", expires_at=at(10)),
            new("gone", status="failed", failure="x"),
            new("due"),
        ]
    )
    assert [c.id for c in store.claim_due("A", 10, 6000, at(10))] == ["due"]
    assert store.claim_due("A", 10, 6000, at(599)) == []
    assert [c.id for c in store.claim_due("A", 10, 6000, at(600))] == ["later"]


def test_claim_with_zero_limit_or_bad_lease(store: Store) -> None:
    store.insert_messages([new("m1")])
    assert store.claim_due("A", 0, 60, at(1)) == []
    with pytest.raises(StoreError, match="lease_s"):
        store.claim_due("A", 1, 0, at(1))
    with pytest.raises(StoreError, match="now must be a timezone-aware"):
        store.claim_due("A", 1, 60, datetime(2026, 3, 1))


def beat(store: Store, who: str, when: datetime, lease_s: float = 30) -> set[str]:
    me = DispatcherBeat(id=who, host="host-1", pid=1, started_at=at(0))
    return store.heartbeat(me, when, lease_s)


def take_over(store: Store, who: str, when: datetime, **kw: Any) -> list[str]:
    taken = store.take_over(who, when, dead_after_s=10, lease_s=30, limit=10, **kw)
    return sorted(row.id for row in taken)


def test_a_silent_dispatchers_rows_are_taken_over_and_the_old_owner_is_fenced(
    store: Store,
) -> None:
    store.insert_messages([new("m1"), new("m2")])
    assert len(store.claim_due("A", 10, 30, at(0))) == 2
    assert beat(store, "A", at(0)) == {"m1", "m2"}
    assert take_over(store, "B", at(9)) == []  # A beat 9 s ago: alive
    assert take_over(store, "B", at(11)) == ["m1", "m2"]  # 11 s of silence: dead
    assert store.get("m1").lease_owner == "B"

    assert store.finish("A", [sent("m1", who="A"), sent("m2", who="A")]) == 0
    info = store.get("m1")
    assert (info.status, info.lease_owner, info.sent_at) == ("sending", "B", None)

    assert store.finish("B", [sent("m1", at_time=at(40), who="B")]) == 1
    info = store.get("m1")
    assert (info.status, info.lease_owner, info.sent_at) == ("sent", None, at(40))
    # attempts are facts: A really tried, so both are on record
    assert [a.dispatcher for a in store.attempts("m1")] == ["A", "B"]
    assert store.release("A", ["m2"], at(41)) == 0
    assert store.get("m2").status == "sending"


def test_heartbeats_renew_the_leases_of_a_live_dispatcher(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 10, 30, at(0))
    for second in range(0, 100, 5):  # a batch much longer than the lease
        beat(store, "A", at(second))
        assert take_over(store, "B", at(second + 4)) == []
    assert store.get("m1").lease_until == at(95 + 30)
    assert [d.id for d in store.dispatchers()] == ["A"]


def test_an_unregistered_owners_rows_and_expired_leases_are_taken_over_at_once(
    store: Store,
) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("gone", 1, 30, at(0))  # m1: its dispatcher never beat (or left)
    beat(store, "B", at(0))
    assert take_over(store, "B", at(1)) == ["m1"]
    store.claim_due("C", 1, 5, at(2))  # m2: C beats, but its lease ran out
    beat(store, "C", at(2), lease_s=5)
    beat(store, "C", at(8), lease_s=5)
    store.forget_dispatchers(["C"])
    assert take_over(store, "B", at(9)) == ["m2"]


def test_a_dispatcher_takes_over_its_own_leftovers_only_when_asked(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 1, 30, at(0))
    store.mark_started("A", ["m1"], at(1))
    assert take_over(store, "A", at(100)) == []  # never its own rows in passing
    [row] = store.take_over("A", at(100), dead_after_s=10, lease_s=30, limit=5, own_leftovers=True)
    assert (row.id, row.previous_owner, row.attempt_started_at) == ("m1", "A", at(1))


def test_mark_started_is_fenced_and_cleared_by_finish(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 1, 30, at(0))
    assert store.mark_started("B", ["m1"], at(1)) == 0
    assert store.mark_started("A", ["m1"], at(1)) == 1
    assert store.mark_started("A", ["m1"], at(2)) == 0  # the first start stays
    assert store.get("m1").attempt_started_at == at(1)
    store.finish("A", [sent("m1", who="A")])
    assert store.get("m1").attempt_started_at is None


def test_finish_marks_the_rows_started_in_the_same_transaction(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2"), new("m3")])
    store.claim_due("A", 3, 30, at(0))
    assert store.finish("A", [sent("m1", who="A")], at(1), started=["m2", "m3"]) == 1
    assert store.get("m1").status == "sent"
    assert [store.get(i).attempt_started_at for i in ("m2", "m3")] == [at(1), at(1)]
    store.finish("B", [], at(2), started=["m2"])  # fenced: not B's row
    assert store.get("m2").attempt_started_at == at(1)


def test_late_finish_of_a_purged_message_is_ignored(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("A", 2, 30, at(0))
    assert take_over(store, "B", at(31)) == ["m1", "m2"]  # A's lease ran out
    assert store.finish("B", [sent("m1", who="B")]) == 1
    assert store.purge(datetime.now(UTC) + timedelta(days=1)) == 1
    assert store.finish("A", [sent("m1", who="A"), sent("m2", who="A")]) == 0
    with pytest.raises(NotFoundError):
        store.get("m1")
    assert [a.dispatcher for a in store.attempts("m2")] == ["A"]


# -- outcomes ----------------------------------------------------------------------------------


def test_finish_sent_records_the_attempt_and_clears_the_lease(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 1, 60, at(0))
    assert store.finish("A", [sent("m1", at_time=at(3))]) == 1
    info = store.get("m1")
    assert (info.status, info.sent_at, info.failure) == ("sent", at(3), None)
    assert (info.lease_owner, info.lease_until, info.num_fails) == (None, None, 0)
    [a] = store.attempts("m1")
    assert (a.message_id, a.outcome, a.code, a.enhanced_code) == ("m1", "sent", 250, "2.0.0")
    assert (a.started_at, a.ended_at, a.reply, a.dispatcher) == (at(2), at(3), "ok", "A")
    assert a.recipients == ["a@example.com", "b@example.com"]
    assert store.finish("A", [sent("m1")]) == 0  # not leased any more


def test_temporary_failure_waits_for_next_attempt_with_pending_recipients(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 1, 60, at(0))
    assert store.finish("A", [retry_later("m1", at(300), pending=["b@example.com"])]) == 1
    info = store.get("m1")
    assert (info.status, info.num_fails, info.last_failed_at) == ("queued", 1, T0)
    assert (info.next_attempt_at, info.due_at) == (at(300), at(300))
    assert info.failure == "451 4.3.0 try later"
    assert info.pending_recipients == ["b@example.com"]
    assert store.claim_due("A", 1, 60, at(299)) == []
    [again] = store.claim_due("A", 1, 60, at(300))
    assert (again.recipients, again.num_fails) == (["b@example.com"], 1)


def test_next_attempt_never_precedes_send_after(store: Store) -> None:
    store.insert_messages([new("m1", send_after=at(100))])
    store.claim_due("A", 1, 60, at(100))
    store.finish("A", [retry_later("m1", at(50))])
    assert store.get("m1").due_at == at(100)


def test_finish_failed_and_expired(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("A", 2, 60, at(0))
    failed = Finish(
        id="m1",
        status="failed",
        attempt=attempt("permanent", ended=at(2)),
        count_fail=True,
        failure="550 5.1.1 no such user",
        next_attempt_at=None,
        pending_recipients=["b@example.com"],
        sent_at=None,
    )
    expired = replace(failed, id="m2", status="expired", attempt=None, failure="too late")
    assert store.finish("A", [failed, expired]) == 2
    m1, m2 = store.get("m1"), store.get("m2")
    assert (m1.status, m1.num_fails, m1.last_failed_at, m1.failure) == (
        "failed",
        1,
        at(2),
        "550 5.1.1 no such user",
    )
    assert (m2.status, m2.num_fails, m2.failure) == ("expired", 1, "too late")
    assert m2.last_failed_at is not None
    assert store.attempts("m2") == []


def test_finish_refuses_an_unknown_status_and_writes_nothing(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("A", 2, 60, at(0))
    with pytest.raises(StoreError, match="finish status 'done'"):
        store.finish("A", [sent("m1"), replace(sent("m2"), status="done")])
    assert store.get("m1").status == "sending"
    assert store.attempts("m1") == []


def test_release_requeues_without_counting_a_failure(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("A", 2, 60, at(0))
    assert store.release("B", ["m1", "m2"], at(1)) == 0
    assert store.release("A", ["m1"], at(1)) == 1
    info = store.get("m1")
    assert (info.status, info.num_fails, info.lease_owner, info.updated_at) == (
        "queued",
        0,
        None,
        at(1),
    )
    assert [c.id for c in store.claim_due("B", 5, 60, at(2))] == ["m1"]
    assert store.release("A", [], at(3)) == 0


def test_next_due_at_is_the_earliest_moment_with_work(store: Store) -> None:
    assert store.next_due_at() is None
    store.insert_messages([new("gone", status="failed", failure="x")])
    assert store.next_due_at() is None
    store.insert_messages([new("later", send_after=at(600), expires_at=at(4000))])
    assert store.next_due_at() == at(600)
    store.insert_messages([new("soon", send_after=at(120), expires_at=at(4000))])
    assert store.next_due_at() == at(120)
    store.insert_messages([new("expiring", send_after=at(900), expires_at=at(60))])
    assert store.next_due_at() == at(60)
    store.expire_overdue(at(60))
    store.claim_due("A", 5, 10, at(120))  # "soon" leased: no longer queued
    assert store.next_due_at() == at(600)


def test_expire_overdue_only_touches_queued_rows_past_expiry(store: Store) -> None:
    store.insert_messages(
        [
            new("old", expires_at=at(10)),
            new("young", expires_at=at(100)),
            new("busy", priority=9, expires_at=at(5)),
        ]
    )
    [busy] = store.claim_due("A", 1, 60, at(0))
    assert busy.id == "busy"
    assert store.expire_overdue(at(10)) == 1
    assert store.expire_overdue(at(10)) == 0
    info = store.get("old")
    assert (info.status, info.updated_at) == ("expired", at(10))
    assert info.failure == "not sent within max-time (expired at 2026-03-01 12:00:10 UTC)"
    assert store.get("young").status == "queued"
    assert store.get("busy").status == "sending"


def test_times_in_any_zone_and_on_whole_seconds_come_back_as_utc(store: Store) -> None:
    east, west = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))
    whole = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    store.insert_messages([new("m1", created_at=whole.astimezone(east), send_after=whole)])
    [claimed] = store.claim_due("A", 1, 60, whole.astimezone(west))
    assert (claimed.created_at, claimed.created_at.tzinfo) == (whole, UTC)
    done = replace(
        sent("m1", at_time=(whole + timedelta(seconds=5)).astimezone(west)),
        attempt=attempt(ended=(whole + timedelta(seconds=4)).astimezone(east)),
    )
    assert store.finish("A", [done]) == 1
    info = store.get("m1")
    assert (info.sent_at, info.sent_at.tzinfo) == (whole + timedelta(seconds=5), UTC)
    assert (info.created_at, info.due_at) == (whole, whole)
    [a] = store.attempts("m1")
    assert (a.started_at, a.ended_at) == (
        whole + timedelta(seconds=3),
        whole + timedelta(seconds=4),
    )
    assert a.ended_at is not None and a.ended_at.tzinfo == UTC


def test_finish_without_any_attempt_and_naive_times_refused(store: Store) -> None:
    store.insert_messages([new("m1"), new("m2")])
    store.claim_due("A", 2, 60, at(0))
    gone = Finish(
        id="m1",
        status="expired",
        attempt=None,
        count_fail=False,
        failure="too late",
        next_attempt_at=None,
        pending_recipients=None,
        sent_at=None,
    )
    with pytest.raises(StoreError, match="'m2': sent_at must be a timezone-aware"):
        store.finish("A", [gone, replace(sent("m2"), sent_at=datetime(2026, 3, 1))])
    assert store.get("m1").status == "sending"  # nothing of the refused batch was written
    assert store.finish("A", [gone]) == 1
    assert (store.get("m1").status, store.attempts("m1")) == ("expired", [])
    with pytest.raises(StoreError, match="now must be a timezone-aware"):
        store.release("A", ["m2"], datetime(2026, 3, 1))
    assert store.release("A", ["m2", "m2", "nope"], at(1)) == 1


def test_recipients_with_quotes_and_non_ascii_round_trip(store: Store) -> None:
    odd = ['"quoted name"@example.com', "jürgen@bücher.example", "back\\slash@example.com"]
    store.insert_messages([new("m1", recipients=odd)])
    assert store.get("m1").recipients == odd
    [claimed] = store.claim_due("A", 1, 60, at(0))
    assert claimed.recipients == odd
    store.finish("A", [retry_later("m1", at(10), pending=odd[1:])])
    assert store.get("m1").pending_recipients == odd[1:]
    [again] = store.claim_due("A", 1, 60, at(10))
    assert again.recipients == odd[1:]


# -- operator actions --------------------------------------------------------------------------


def test_cancel_queued_and_scheduled_but_not_others(store: Store) -> None:
    store.insert_messages([new("now"), new("later", send_after=at(3000)), new("busy")])
    store.cancel("now", at(1))
    store.cancel("later", at(1))
    assert store.get("later").status == "cancelled"
    assert store.get("later").updated_at == at(1)
    [busy] = store.claim_due("A", 1, 60, at(2))
    assert busy.id == "busy"
    with pytest.raises(StoreError, match="'busy' is sending"):
        store.cancel("busy", at(3))
    with pytest.raises(StoreError, match="is cancelled"):
        store.cancel("now", at(3))
    with pytest.raises(NotFoundError, match="'nope'"):
        store.cancel("nope", at(3))
    # cancelled rows are never claimed or taken over; "busy" comes back as its lease ran out
    assert store.claim_due("B", 10, 60, at(4000)) == []
    assert take_over(store, "B", at(4000)) == ["busy"]


def test_retry_requeues_failed_and_expired(store: Store) -> None:
    store.insert_messages(
        [new("failed", status="failed", failure="550"), new("expired", expires_at=at(5))]
    )
    store.expire_overdue(at(5))
    store.retry("failed", at(100), at(3700))
    store.retry("expired", at(100), at(3700))
    info = store.get("expired")
    assert (info.status, info.num_fails, info.due_at, info.expires_at) == (
        "queued",
        0,
        at(100),
        at(3700),
    )
    assert store.claim_due("A", 10, 60, at(99)) == []
    assert sorted(c.id for c in store.claim_due("A", 10, 60, at(100))) == ["expired", "failed"]
    with pytest.raises(StoreError, match="is sending: only failed or expired"):
        store.retry("failed", at(101), at(3700))
    with pytest.raises(NotFoundError):
        store.retry("nope", at(101), at(3700))


def test_purge_deletes_old_finished_rows_and_their_attempts_in_batches(store: Store) -> None:
    store.insert_messages([new(f"c{i}") for i in range(5)] + [new("q"), new("s1"), new("s2")])
    for i in range(5):
        store.cancel(f"c{i}", at(10))
    store.claim_due("A", 10, 60, at(20))  # q, s1, s2 are now sending
    store.finish("A", [sent("s1"), sent("s2")])  # updated_at = wall clock (after T0 + 20 s)
    store.release("A", ["q"], at(20))
    seen: list[int] = []
    assert store.purge(at(11), batch=2, progress=seen.append) == 5
    assert seen == [2, 4, 5]
    assert store.stats(None, T0).counts["cancelled"] == 0
    assert store.get("q").status == "queued"
    assert store.purge(at(11)) == 0
    far_future = datetime.now(UTC) + timedelta(days=1)
    assert store.purge(far_future) == 2
    assert store.attempts("s1") == []
    with pytest.raises(NotFoundError):
        store.get("s1")
    assert store.get("q").status == "queued"
    with pytest.raises(StoreError, match="batch"):
        store.purge(at(0), batch=0)


# -- stats -------------------------------------------------------------------------------------


def test_stats_counts_latency_failures_and_attempts(store: Store) -> None:
    ids = [f"s{i}" for i in range(1, 11)]
    store.insert_messages([new(i) for i in ids])
    store.claim_due("A", 10, 60, at(0))
    store.finish("A", [sent(f"s{i}", at_time=at(i)) for i in range(1, 11)])  # latencies 1..10 s
    store.insert_messages(
        [
            new("f1", status="failed", failure="550 no such user"),
            new("f2", status="failed", failure="550 no such user"),
            new("f3", status="failed", failure="554 rejected"),
            new("old", created_at=at(-86400), send_after=at(5000)),
        ]
    )
    stats = store.stats(None, at(20))
    assert set(stats.counts) == set(STATUSES)
    assert stats.counts == {
        "queued": 1,
        "sending": 0,
        "sent": 10,
        "failed": 3,
        "expired": 0,
        "cancelled": 0,
    }
    assert stats.latency_p50_s == pytest.approx(5.0, abs=1e-3)
    assert stats.latency_p95_s == pytest.approx(10.0, abs=1e-3)
    assert stats.latency_p99_s == pytest.approx(10.0, abs=1e-3)
    assert stats.top_failures == [("550 no such user", 2), ("554 rejected", 1)]
    assert stats.attempts == 10
    assert (stats.queued_due, stats.queued_scheduled) == (0, 1)

    recent = store.stats(at(-60), at(20))
    assert recent.since == at(-60)
    assert recent.counts["queued"] == 0 and recent.counts["sent"] == 10
    late = store.stats(at(6), at(20))
    assert late.latency_p50_s == pytest.approx(8.0, abs=1e-3)  # sent at 6..10 s: 6 7 8 9 10
    assert late.attempts == 4  # attempts started at 6..9 s


def test_stats_on_an_empty_database(store: Store) -> None:
    stats = store.stats(None, T0)
    assert stats.counts == dict.fromkeys(STATUSES, 0)
    assert (stats.latency_p50_s, stats.latency_p95_s, stats.latency_p99_s) == (None, None, None)
    assert (stats.top_failures, stats.attempts) == ([], 0)


# -- errors and engine specifics ---------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    url = f"postgresql://postroom:s3cret-pw@127.0.0.1:{closed_port()}/postroom"
    with open_store(url) as s, pytest.raises(StoreError) as caught:
        s.migrate()
    message = str(caught.value)
    assert message.startswith("cannot connect to database postgresql+psycopg://postroom:********@")
    assert "s3cret-pw" not in message
    assert isinstance(caught.value.__cause__, Exception)


def test_open_store_creates_the_sqlite_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "postroom.db"
    with open_store(f"sqlite:///{path}") as s:
        s.migrate()
    assert path.exists()


def test_open_store_refuses_unknown_schemes() -> None:
    with pytest.raises(StoreError, match="'mysql' is not supported"):
        open_store("mysql://u@h/db")
    with pytest.raises(StoreError, match="is not a database URL"):
        open_store("not a url")


def test_sqlite_times_are_fixed_width_utc_text(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as s:
        s.migrate()
        s.insert_messages([new("m1", send_after=at(0.5))])
        with s._engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT created_at, send_after FROM messages").one()
            newer = conn.exec_driver_sql(
                "SELECT count(*) FROM messages WHERE created_at > datetime('2026-03-01 11:59:59')"
            ).scalar_one()
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            fks = conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
    assert tuple(raw) == ("2026-03-01 12:00:00.123456", "2026-03-01 12:00:00.623456")
    assert newer == 1
    assert (mode, fks) == ("wal", 1)


def test_sqlite_writes_begin_immediate_and_reads_begin_deferred(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as s:
        s.migrate()
        begins: list[str] = []

        def trace(sql: str) -> None:
            if sql.startswith("BEGIN"):
                begins.append(sql)

        def on_connect(dbapi: sqlite3.Connection, record: object) -> None:
            dbapi.set_trace_callback(trace)

        s._engine.dispose()  # new connections, each traced from its first statement
        event.listen(s._engine, "connect", on_connect)
        s.insert_messages([new("m1")])
        s.claim_due("A", 1, 60, at(1))
        s.finish("A", [sent("m1")])
        assert begins == ["BEGIN IMMEDIATE"] * 3
        begins.clear()
        s.get("m1")
        s.next_due_at()
        assert begins == ["BEGIN", "BEGIN"]


def test_sqlite_claim_leases_in_two_steps_and_reads_the_rows_after_the_commit(
    tmp_path: Path,
) -> None:
    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as s:
        s.migrate()
        s.insert_messages([new(f"m{i}", created_at=at(i)) for i in range(30)])
        statements: list[str] = []

        def on_connect(dbapi: sqlite3.Connection, record: object) -> None:
            dbapi.set_trace_callback(statements.append)

        s._engine.dispose()
        event.listen(s._engine, "connect", on_connect)
        claimed = s.claim_due("A", 25, 60, at(100))

    assert [c.id for c in claimed] == [f"m{i}" for i in range(25)]
    begin, commit = statements.index("BEGIN IMMEDIATE"), statements.index("COMMIT")
    inside = statements[begin + 1 : commit]
    assert [sql.split()[0] for sql in inside] == ["SELECT", "UPDATE"]
    assert any(sql.startswith("SELECT id, data") for sql in statements[commit:])


def test_sqlite_claim_plan_walks_the_partial_index_without_sorting(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as s:
        s.migrate()
        s.insert_messages([new("m1")])
        assert len(s.claim_due("A", 50, 60, at(1))) == 1
        with s._engine.connect() as conn:
            plan = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {batch.claim_keys_sql(50)}", {"now": "2026-01-01"}
            ).all()
    steps = [str(row[-1]) for row in plan]
    assert "SCAN messages USING INDEX ix_messages_claim" in steps
    assert not any("TEMP B-TREE" in step for step in steps)


def test_sqlite_writes_wait_for_the_write_lock_file(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "p.db"
    with open_store(f"sqlite:///{path}") as s:
        s.migrate()
        lock_file = Path(f"{path}.lock")
        assert lock_file.exists()
        fd = os.open(lock_file, os.O_RDWR)
        inserted: list[int] = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds the write lock
            writer = threading.Thread(
                target=lambda: inserted.append(s.insert_messages([new("m1")]))
            )
            writer.start()
            writer.join(0.3)
            assert writer.is_alive() and inserted == []
            with pytest.raises(NotFoundError):  # reads do not wait for the lock
                s.get("m1")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        writer.join(10)
        assert inserted == [1]


@pytest.mark.postgres
def test_postgres_claim_and_finish_plans_do_not_depend_on_statistics(postgres_url: str) -> None:
    with open_store(postgres_url) as s:
        s.migrate()
        s.insert_messages([new(f"m{i:04d}", created_at=at(i)) for i in range(300)])
        claimed = s.claim_due("A", 50, 60, at(400))
        assert [c.id for c in claimed] == [f"m{i:04d}" for i in range(50)]
        with s._engine.connect() as conn:  # never analyzed: the planner has no statistics
            reltuples = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'messages'"
            ).scalar_one()
            assert reltuples < 0
            conn.exec_driver_sql(batch._PLAN_SETTINGS)
            claim = "\n".join(
                row[0]
                for row in conn.exec_driver_sql(
                    "EXPLAIN " + batch.claim_sql("postgresql", 50),
                    {"now": at(400), "owner": "B", "lease_until": at(500)},
                )
            )
            conn.rollback()
        assert "Index Scan using ix_messages_claim" in claim, claim
        assert "Sort" not in claim, claim
        assert "JIT" not in claim


def test_every_recipients_reply_and_the_refusals_round_trip(store: Store) -> None:
    store.insert_messages([new("m1")])
    store.claim_due("A", 1, 30, at(0))
    replies = [
        RecipientReply("a@example.org", 250, "2.0.0", 'queued "1" \\ é\x01'),
        RecipientReply("b@example.org", None, None, "timed out"),
    ]
    finish = replace(
        sent("m1"),
        attempt=replace(attempt(ended=T0), replies=replies),
        refused=["c@example.org: 550 5.1.1 no such user"],
    )
    assert store.finish("A", [finish]) == 1
    [recorded] = store.attempts("m1")
    assert recorded.replies == replies
    assert store.get("m1").refused == ["c@example.org: 550 5.1.1 no such user"]
