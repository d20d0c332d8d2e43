"""Ingest survives whatever reaches the queue: real queue engines, real databases.

Poison payloads are pushed raw into the queue, as an older client or a hand-written script
could; each must end as a ``failed`` row with its reason, acknowledged, while the good payload
behind it is ingested. A server whose ingest cannot go on must exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from postroom.dispatch.ingest import Ingestor
from postroom.errors import IngestFailed, NotFoundError, QueueError, StoreError
from postroom.message import Email
from postroom.queue.base import QueueEngine
from postroom.queue.sqlite import SqliteQueue
from postroom.store import MessageInfo, Store, open_store
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def payload(
    msg_id: str, *, queued_at: str | None = None, send_after: str | None = None, **email: Any
) -> bytes:
    """A payload as a client writes it, with any field overridden as text."""
    data = Email(from_="app@example.com", to="user@example.org", subject=msg_id, text="hi")
    fields = data.to_dict() | email
    doc = {
        "v": 1,
        "id": msg_id,
        "queued_at": queued_at or NOW.isoformat(),
        "send_after": send_after or NOW.isoformat(),
        "email": fields,
    }
    return json.dumps(doc).encode()


def nested(depth: int) -> bytes:
    return b'{"v": 1, "id": "deep", "email": ' + b"[" * depth + b"]" * depth + b"}"


POISON = {
    "send_at_year_9999": (
        payload("far-future", send_after="9999-12-31T23:30:00+00:00"),
        "far-future",
        "'send_after': '9999-12-31T23:30:00+00:00' is outside the times postroom can represent",
    ),
    "queued_at_year_1_east_of_utc": (
        payload("year-one", queued_at="0001-01-01T00:00:00+01:00"),
        "year-one",
        "'queued_at': '0001-01-01T00:00:00+01:00' is outside the times postroom can represent",
    ),
    "json_nested_100000_deep": (nested(100_000), None, "RecursionError"),
    "surrogate_in_subject": (payload("surrogate", subject="\ud800"), "surrogate", "Unicode"),
    "nul_in_id": (payload("bad\x00id"), None, "'id': 'bad\\x00id' is not a message id"),
}


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteQueue]:
    q = SqliteQueue(str(tmp_path / "queue.db"), redeliver_after_s=0.2)
    yield q
    q.close()


def ingestor(queue: QueueEngine, store: Store, **kwargs: Any) -> Ingestor:
    return Ingestor(
        queue, store, max_time=kwargs.pop("max_time", HOUR), clock=lambda: NOW, **kwargs
    )


def failed_reasons(store: Store) -> list[str]:
    stats = store.stats(None, NOW + timedelta(days=1))
    return [reason for reason, _ in stats.top_failures]


def get(store: Store, msg_id: str) -> MessageInfo | None:
    try:
        return store.get(msg_id)
    except NotFoundError:
        return None


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_payload_is_failed_and_the_good_one_behind_it_is_ingested(
    case: str, queue: SqliteQueue, store: Store
) -> None:
    raw, poison_id, reason = POISON[case]
    queue.push([raw, payload("good")])
    ingest = ingestor(queue, store)
    assert ingest.run_once(timeout_s=1) == 2
    assert queue.size() == 0  # both acknowledged
    good = store.get("good")
    assert good.status == "queued"
    counts = store.stats(None, NOW + timedelta(days=1)).counts
    assert counts["failed"] == 1 and counts["queued"] == 1
    [failure] = failed_reasons(store)
    assert reason in failure, failure
    if poison_id is not None:
        info = store.get(poison_id)
        assert info.status == "failed" and info.failure == failure
        assert info.data_size == len(raw)


def test_a_max_time_too_large_for_any_date_fails_the_item_not_ingest(
    queue: SqliteQueue, store: Store
) -> None:
    queue.push([payload("one")])
    ingest = ingestor(queue, store, max_time=timedelta(hours=100_000_000))
    assert ingest.run_once(timeout_s=1) == 1
    info = store.get("one")
    assert info.status == "failed"
    assert info.failure is not None and "max-time" in info.failure and "9999" in info.failure
    assert queue.size() == 0


def refuse_subject(store_url: str, subject: str) -> None:
    """Make the database itself refuse rows with this subject (a rule a DBA could add)."""
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages "
                f"WHEN NEW.subject = '{subject}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE messages ADD CONSTRAINT refuse CHECK (subject <> '{subject}')")


def test_a_row_the_database_refuses_is_stored_failed_and_the_others_go_in(
    queue: SqliteQueue, store: Store, store_url: str
) -> None:
    refuse_subject(store_url, "refuse me")
    refused = payload("refused", subject="refuse me")
    queue.push([payload("before"), refused, payload("after")])
    assert ingestor(queue, store).run_once(timeout_s=1) == 3
    assert store.get("before").status == "queued"
    assert store.get("after").status == "queued"
    info = store.get("refused")
    assert info.status == "failed" and info.subject == "" and info.data_size == len(refused)
    assert info.failure is not None and info.failure.startswith("cannot be stored: ")
    assert queue.size() == 0


def down_database_url() -> str:
    """A PostgreSQL URL nobody answers on: every connection is refused."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


def test_nothing_is_acknowledged_or_failed_while_the_database_is_down(
    queue: SqliteQueue, tmp_path: Path
) -> None:
    queue.push([payload("one"), payload("two")])
    with open_store(down_database_url()) as down, pytest.raises(StoreError):
        ingestor(queue, down).run_once(timeout_s=1)
    assert queue.size() == 2
    time.sleep(0.3)  # the queue hands the batch out again after redeliver_after_s
    with open_store(f"sqlite:///{tmp_path / 'up.db'}") as up:
        up.migrate()
        assert ingestor(queue, up).run_once(timeout_s=1) == 2
        assert up.get("one").status == up.get("two").status == "queued"
    assert queue.size() == 0


@pytest.mark.redis
def test_poison_payloads_from_redis_are_acknowledged(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    from postroom.queue.redis import RedisQueue

    with (
        RedisQueue(redis_url, name=redis_prefix) as queue,
        open_store(f"sqlite:///{tmp_path / 'postroom.db'}") as store,
    ):
        store.migrate()
        raws = [raw for raw, _, _ in POISON.values()]
        queue.push([*raws, payload("good")])
        ingest = ingestor(queue, store)
        while queue.size():
            ingest.run_once(timeout_s=1)
        assert store.get("good").status == "queued"
        assert store.stats(None, NOW + timedelta(days=1)).counts["failed"] == len(raws)


def run_in_thread(
    ingest: Ingestor,
) -> tuple[threading.Event, threading.Thread, list[BaseException]]:
    stop, raised = threading.Event(), []

    def target() -> None:
        try:
            ingest.run(stop)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return stop, thread, raised


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def test_run_ingests_past_poison_and_returns_when_stopped(queue: SqliteQueue, store: Store) -> None:
    stop, thread, raised = run_in_thread(ingestor(queue, store))
    try:
        queue.push([POISON["send_at_year_9999"][0]])
        queue.push([payload("good")])
        wait_until(lambda: get(store, "good") is not None, 10, "the good payload")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and raised == []
    assert store.get("far-future").status == "failed"


def test_run_waits_out_a_database_outage_and_logs_it_once(
    queue: SqliteQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue.push([payload("one")])
    with open_store(down_database_url()) as down:
        ingest = ingestor(queue, down, give_up_after=2)
        with caplog.at_level(logging.INFO, logger="postroom.ingest"):
            stop, thread, raised = run_in_thread(ingest)
            time.sleep(1.0)  # rounds at about 0, 0.1, 0.3 and 0.7 s: more than give_up_after
            alive = thread.is_alive()
            stop.set()
            thread.join(10)
    assert alive and raised == []
    outage_logs = [r for r in caplog.records if "retrying until it works" in r.getMessage()]
    assert len(outage_logs) == 1
    assert queue.size() == 1


def test_run_gives_up_when_an_unexpected_error_keeps_coming(
    queue: SqliteQueue, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def broken_take(max_items: int, timeout_s: float) -> list[object]:
        calls.append(1)
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(queue, "take", broken_take)
    stop, thread, raised = run_in_thread(ingestor(queue, store, give_up_after=3))
    thread.join(10)
    stop.set()
    assert not thread.is_alive()
    [exc] = raised
    assert isinstance(exc, IngestFailed)
    assert "3 rounds in a row" in str(exc) and "a bug in the engine" in str(exc)
    assert len(calls) == 3


def test_queue_errors_do_not_count_towards_giving_up(
    queue: SqliteQueue, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def down(max_items: int, timeout_s: float) -> list[object]:
        calls.append(1)
        raise QueueError("queue down")

    monkeypatch.setattr(queue, "take", down)
    stop, thread, raised = run_in_thread(ingestor(queue, store, give_up_after=2))
    wait_until(lambda: len(calls) >= 4, 10, "four failed rounds")
    stop.set()
    thread.join(10)
    assert raised == [] and not thread.is_alive()


class BrokenStop(threading.Event):
    """A stop event whose wait breaks: a failure of the loop itself, outside any item."""

    def wait(self, timeout: float | None = None) -> bool:
        raise RuntimeError("the loop broke")


def test_run_raises_ingest_failed_when_its_own_loop_fails(
    queue: SqliteQueue, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(max_items: int, timeout_s: float) -> list[object]:
        raise QueueError("queue down")

    monkeypatch.setattr(queue, "take", down)
    with pytest.raises(IngestFailed, match="its loop failed: RuntimeError: the loop broke"):
        ingestor(queue, store).run(BrokenStop())


def test_a_server_whose_ingest_cannot_go_on_exits_non_zero(tmp_path: Path) -> None:
    config = {
        "email": {
            "queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "q.db")}},
            "server": {
                "database": {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")},
                "smtp": {"host": "127.0.0.1", "port": 9, "tls": "none"},
            },
        }
    }
    config_path = tmp_path / "postroom.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # a real `postroom serve` whose queue engine is broken in a way ingest cannot heal
    code = (
        "import sys\n"
        "from postroom.queue.sqlite import SqliteQueue\n"
        "def take(self, max_items, timeout_s):\n"
        "    raise RuntimeError('a bug in the engine')\n"
        "SqliteQueue.take = take\n"
        "from postroom.cli import main\n"
        f"sys.exit(main(['serve', '-c', {str(config_path)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "ingest cannot go on" in proc.stderr
    assert "a bug in the engine" in proc.stderr
    assert "stopped cleanly" not in proc.stderr


def test_a_server_sends_the_email_queued_behind_a_year_9999_one(tmp_path: Path) -> None:
    from postroom.client import Outbox
    from postroom.config import load_config
    from postroom.dispatch.server import Server
    from tests.smtp_servers import SmtpServer

    with SmtpServer() as smtp:
        config = load_config(
            {
                "email": {
                    "queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "q.db")}},
                    "server": {
                        "database": {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")},
                        "smtp": {"host": "127.0.0.1", "port": smtp.port, "tls": "none"},
                    },
                }
            },
            env={},
        )
        with SqliteQueue(str(tmp_path / "q.db")) as raw_queue:  # as an older client wrote it
            raw_queue.push([POISON["send_at_year_9999"][0]])
        server = Server(config)
        raised: list[BaseException] = []

        def run() -> None:
            try:
                server.run()
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            good = Email(from_="app@example.com", to="user@example.org", text="after")
            with Outbox(config) as outbox:
                good.enqueue(outbox=outbox)
                assert outbox.flush(30) == 0
            wait_until(lambda: smtp.count(good.message_id) == 1, 30, "the good email")
        finally:
            server.stop()
            thread.join(60)
    assert raised == [] and not thread.is_alive()
    with open_store(config.email.server.database.sqlalchemy_url()) as store:
        assert store.get("far-future").status == "failed"
