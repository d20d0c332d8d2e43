"""Leases under the conditions operators meet: a slow relay, a hanging reply at shutdown, a crash
and an immediate restart, a message that kills its dispatcher. Real ``postroom serve``
processes, real databases (SQLite and PostgreSQL), a real SMTP server scripted to misbehave.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import postroom.dispatch.server as server_module
from postroom.config import load_config
from postroom.store import open_store
from tests.integration.test_serve import (
    RunningServer,
    config_dict,
    enqueue_all,
    make_email,
    sent_count,
    start_serve,
    status_of,
    wait_until,
    write_config,
)
from tests.smtp_servers import SmtpServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")}
    url = request.getfixturevalue("postgres_url")
    return {"engine": "postgres", "url": url}


def migrated(url: str) -> str:
    """``url``, with the schema in place (racing the servers' own migrations is allowed)."""
    with open_store(url) as store:
        store.migrate()
    return url


def stop(proc: Any) -> int:
    proc.send_signal(signal.SIGTERM)
    return int(proc.wait(timeout=60))


def test_healthy_dispatchers_never_send_twice_on_a_relay_slower_than_the_lease(
    tmp_path: Path, smtp: SmtpServer, database: dict[str, Any]
) -> None:
    # a batch of 50 over 4 connections at 0.75 s a message takes ~9 s: longer than the lease
    smtp.on_dot("250 OK", delay_s=0.75)
    data = config_dict(
        tmp_path, smtp.port, database=database, processes=2, lease="5s", heartbeat="1s"
    )
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    emails = [make_email(i) for i in range(100)]
    enqueue_all(config, emails)
    proc = start_serve(config_path, tmp_path)
    try:
        url = migrated(config.email.server.database.sqlalchemy_url())
        wait_until(lambda: sent_count(url) == 100, 120, "every message to be sent")
    finally:
        assert stop(proc) == 0
    received = Counter(m.message_id for m in smtp.messages)
    assert [received[e.message_id] for e in emails] == [1] * 100
    log = (tmp_path / "serve.log").read_text()
    assert "took over" not in log and "not recorded" not in log, log


def test_sigterm_with_a_hanging_delivery_records_every_accepted_result(
    tmp_path: Path, smtp: SmtpServer, database: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "GRACE_S", 1.0)
    smtp.on_dot("250 OK", delay_s=0.05)
    smtp.on_dot("451 4.4.2 never answered", delay_s=3600, times=1, address="user7@example.org")
    data = config_dict(tmp_path, smtp.port, database=database, batch=20)
    data["email"]["server"]["smtp"]["data-timeout"] = "20s"
    config = load_config(data)
    emails = [make_email(i) for i in range(20)]
    ids = enqueue_all(config, emails)
    running = RunningServer(config)
    url = config.email.server.database.sqlalchemy_url()
    wait_until(lambda: len(smtp.messages) == 20, 30, "all 20 to reach the final dot")
    wait_until(lambda: sent_count(url) == 19, 10, "19 to be recorded sent before the stop")
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 10  # did not wait for the hanging reply
    with open_store(url) as store:
        statuses = [store.get(i).status for i in ids]
        assert statuses == ["sent"] * 7 + ["sending"] + ["sent"] * 12
        assert store.get(ids[7]).attempt_started_at is not None
        assert store.dispatchers() == []  # it left: the next one takes over at once

    restarted = RunningServer(config)
    try:
        wait_until(lambda: sent_count(url) == 20, 30, "the hanging one to be sent again")
    finally:
        restarted.stop()
    received = Counter(m.message_id for m in smtp.accepted)
    assert [received[e.message_id] for e in emails] == [1] * 20
    with open_store(url) as store:
        assert [a.outcome for a in store.attempts(ids[7])] == ["maybe_delivered", "sent"]


def test_kill_9_then_an_immediate_restart_delivers_everything_within_seconds(
    tmp_path: Path, smtp: SmtpServer, database: dict[str, Any]
) -> None:
    smtp.on_dot("250 OK", delay_s=0.005)
    data = config_dict(tmp_path, smtp.port, database=database, batch=20)  # default lease
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    emails = [make_email(i) for i in range(600)]
    enqueue_all(config, emails)
    url = migrated(config.email.server.database.sqlalchemy_url())

    proc = start_serve(config_path, tmp_path)
    wait_until(lambda: len(smtp.accepted) >= 100, 60, "the first 100 deliveries")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(smtp.accepted) < 600, "the run finished before the kill: nothing was tested"

    restarted_at = time.monotonic()
    proc = start_serve(config_path, tmp_path, "serve-2.log")
    try:
        wait_until(lambda: sent_count(url) == 600, 60, "every message to be sent")
        took_s = time.monotonic() - restarted_at
    finally:
        assert stop(proc) == 0
    print(f"restart to last delivery: {took_s:.1f}s")
    assert took_s < 30, f"{took_s:.1f}s from restart to the last delivery"
    received = Counter(m.message_id for m in smtp.accepted)
    counts = [received[e.message_id] for e in emails]
    assert min(counts) == 1, "a message was lost"
    duplicates = sum(c - 1 for c in counts)
    print(f"duplicates after kill -9: {duplicates}")
    bound = 20 + 2 * 4  # one claim, and one in flight plus one lined up per connection
    assert duplicates <= bound, f"{duplicates} duplicates, more than a claim and the connections"
    assert "taking over their messages" in (tmp_path / "serve-2.log").read_text()


def test_a_message_that_kills_its_dispatcher_ends_failed_instead_of_looping(
    tmp_path: Path, smtp: SmtpServer, database: dict[str, Any]
) -> None:
    smtp.on_dot("250 OK", delay_s=3600, address="user0@example.org")  # never answered
    data = config_dict(tmp_path, smtp.port, database=database)  # max-fails: 3
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    [msg_id] = enqueue_all(config, [make_email(0)])
    url = migrated(config.email.server.database.sqlalchemy_url())

    for run in range(3):  # each run "dies" on the message: kill -9 while it is on the wire
        proc = start_serve(config_path, tmp_path, f"serve-{run}.log")
        wait_until(lambda n=run: len(smtp.messages) == n + 1, 30, "the message on the wire")
        time.sleep(0.3)  # the keeper notes that the delivery began
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    proc = start_serve(config_path, tmp_path, "serve-last.log")
    try:

        def failed() -> bool:
            with open_store(url) as store:
                return store.get(msg_id).status == "failed"

        wait_until(failed, 30, "the message to fail")
    finally:
        assert stop(proc) == 0
    with open_store(url) as store:
        info = store.get(msg_id)
        outcomes = [a.outcome for a in store.attempts(msg_id)]
    assert info.num_fails == 3
    assert info.failure is not None and info.failure.startswith("gave up after 3 attempts")
    assert outcomes == ["maybe_delivered"] * 3
    assert len(smtp.messages) == 3  # never a fourth time


def test_a_frozen_dispatchers_rows_are_taken_over_and_it_starts_none_of_them_again(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # A is frozen (SIGSTOP) mid-batch: alive on this host, but its heartbeats stop. B takes its
    # rows over after 5 missed beats; A, thawed, may finish the conversations it had on the wire
    # but starts nothing it can no longer vouch for.
    smtp.on_dot("250 OK", delay_s=0.5)
    data = config_dict(tmp_path, smtp.port, batch=20, heartbeat="500ms", lease="5s")
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    emails = [make_email(i) for i in range(40)]
    enqueue_all(config, emails)
    url = migrated(config.email.server.database.sqlalchemy_url())

    first = start_serve(config_path, tmp_path, "serve-a.log")
    wait_until(lambda: len(smtp.messages) >= 2, 30, "the first deliveries")
    first.send_signal(signal.SIGSTOP)
    frozen_at = len(smtp.messages)
    second = start_serve(config_path, tmp_path, "serve-b.log")
    try:
        wait_until(lambda: sent_count(url) == 40, 90, "every message to be sent")
        first.send_signal(signal.SIGCONT)
        time.sleep(2)  # A wakes up: what it still had in flight ends, nothing new starts
    finally:
        first.send_signal(signal.SIGCONT)
        assert stop(first) == 0
        assert stop(second) == 0
    received = Counter(m.message_id for m in smtp.messages)
    counts = [received[e.message_id] for e in emails]
    assert min(counts) == 1, "a message was lost"
    # only the conversations A had on the wire when it froze can be duplicated
    assert sum(c - 1 for c in counts) <= 4 + 1, counts
    assert frozen_at < 40
    assert "took over" in (tmp_path / "serve-b.log").read_text()


def test_a_wrong_password_defers_every_message_without_charging_it_and_stats_say_why(
    tmp_path: Path,
) -> None:
    with SmtpServer(users={"app": "right"}, auth_require_tls=False) as relay:
        data = config_dict(tmp_path, relay.port)
        data["email"]["server"]["smtp"].update(
            {"auth": {"username": "app", "password": "wrong"}, "allow-plaintext-password": True}
        )
        config_path = write_config(tmp_path, data)
        config = load_config(config_path)
        ids = enqueue_all(config, [make_email(i) for i in range(20)])
        url = migrated(config.email.server.database.sqlalchemy_url())
        proc = start_serve(config_path, tmp_path)
        try:
            wait_until(lambda: status_of(url, ids[-1]) is not None, 30, "ingest")

            def all_deferred() -> bool:
                with open_store(url) as store:
                    failures = [i.failure or "" for i in map(store.get, ids)]
                return all(f.startswith("relay unavailable") for f in failures)

            wait_until(all_deferred, 30, "every message to wait for the relay")
            stats = subprocess.run(
                [sys.executable, "-m", "postroom", "stats", "-c", str(config_path), "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            assert stop(proc) == 0
        with open_store(url) as store:
            infos = [store.get(i) for i in ids]
            attempts = [a for i in ids for a in store.attempts(i)]
    assert {(i.status, i.num_fails) for i in infos} == {("queued", 0)}
    assert attempts == []  # not one attempt charged to a message
    assert "535" in (infos[0].failure or "")
    assert len(relay.logins) <= 2  # one login per rest of the relay, not one per message
    [me] = json.loads(stats.stdout)["dispatchers"]
    assert me["relay"]["up"] is False and "535" in me["relay"]["reason"]
