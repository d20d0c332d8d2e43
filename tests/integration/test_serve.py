"""``postroom serve`` end to end: real queue engines, real databases, real SMTP servers.

Each test enqueues through the public client API and checks what a scriptable aiosmtpd server
received. Processes are real where the behaviour is about processes (crash, several dispatchers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

import postroom.dispatch.server as server_module
from postroom.client import Outbox
from postroom.config import Config, load_config
from postroom.dispatch.server import Server
from postroom.errors import NotFoundError
from postroom.message import Email
from postroom.store import Store, open_store
from tests.smtp_servers import SmtpServer

pytestmark = pytest.mark.timeout(300)


def config_dict(
    tmp_path: Path,
    smtp_port: int,
    *,
    queue: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
    **server: Any,
) -> dict[str, Any]:
    return {
        "email": {
            "queue": {"default": queue or {"engine": "sqlite", "path": str(tmp_path / "q.db")}},
            "server": {
                "database": database
                or {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")},
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "connections": 4},
                **server,
            },
        }
    }


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "postroom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def status_of(url: str, msg_id: str) -> str | None:
    """The message's status, or None while ingest has not stored it yet."""
    with open_store(url) as store:
        try:
            return store.get(msg_id).status
        except NotFoundError:
            return None


def make_email(i: int) -> Email:
    return Email(
        from_="app@example.com",
        to=[f"user{i}@example.org"],
        subject=f"Message {i}",
        text=f"Body {i}",
    )


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


class RunningServer:
    def __init__(self, config: Config) -> None:
        self.server = Server(config)
        self.server.open()  # the database exists once this returns
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def enqueue_all(config: Config, emails: list[Email], **kwargs: Any) -> list[str]:
    with Outbox(config) as outbox:
        ids = [e.enqueue(outbox=outbox) for e in emails]
        assert outbox.flush(30) == 0
    return ids


def test_a_fresh_message_is_sent_at_once(tmp_path: Path, smtp: SmtpServer) -> None:
    config = load_config(config_dict(tmp_path, smtp.port))
    running = RunningServer(config)
    try:
        time.sleep(0.5)  # the server is up and idle
        e = make_email(1)
        start = time.monotonic()
        with Outbox(config) as outbox:
            e.enqueue(outbox=outbox)
            wait_until(lambda: smtp.count(e.message_id) == 1, 5, "the message to arrive")
        elapsed = time.monotonic() - start
    finally:
        running.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f}s: something waited on a timer"


def test_scheduled_message_is_sent_within_a_second_of_its_time(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = load_config(config_dict(tmp_path, smtp.port))
    running = RunningServer(config)
    try:
        e = make_email(2)
        with Outbox(config) as outbox:
            outbox.submit(e, send_after=datetime.now(UTC).replace(microsecond=0))
            scheduled = make_email(3)
            start = time.monotonic()
            scheduled.send_later("2s", outbox=outbox)
        wait_until(lambda: smtp.count(scheduled.message_id) == 1, 10, "the scheduled message")
        elapsed = time.monotonic() - start
    finally:
        running.stop()
    assert 2.0 <= elapsed < 3.0, f"scheduled for 2s, arrived after {elapsed:.2f}s"
    assert smtp.count(e.message_id) == 1


def test_stop_finishes_in_flight_and_leaves_nothing_sending(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.on_dot("250 OK", delay_s=0.3)
    config = load_config(config_dict(tmp_path, smtp.port))
    enqueue_all(config, [make_email(i) for i in range(40)])
    running = RunningServer(config)
    wait_until(lambda: len(smtp.messages) >= 4, 20, "the first deliveries")
    running.stop()
    with open_store(config.email.server.database.sqlalchemy_url()) as store:
        counts = store.stats(None, datetime.now(UTC)).counts
    assert counts["sending"] == 0
    assert counts["sent"] == len(smtp.accepted)
    assert counts["sent"] + counts["queued"] == 40


def test_stop_gives_up_on_a_hanging_delivery_after_the_grace_period(
    tmp_path: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "GRACE_S", 0.5)
    smtp.on_dot("250 OK", delay_s=6)
    config = load_config(config_dict(tmp_path, smtp.port))
    [msg_id] = enqueue_all(config, [make_email(7)])
    running = RunningServer(config)
    wait_until(lambda: len(smtp.messages) == 1, 10, "the message to reach the final dot")
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 3  # did not wait for the 6 s reply
    url = config.email.server.database.sqlalchemy_url()
    assert status_of(url, msg_id) == "sending"  # its lease expires; another run retries it


def test_temporary_failure_is_retried_over_real_smtp(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.on_dot("451 4.3.0 try again later", times=1)
    data = config_dict(tmp_path, smtp.port, retry={"initial": "200ms", "jitter": 0})
    config = load_config(data)
    running = RunningServer(config)
    try:
        [msg_id] = enqueue_all(config, [make_email(4)])
        url = config.email.server.database.sqlalchemy_url()

        def sent() -> bool:
            return status_of(url, msg_id) == "sent"

        wait_until(sent, 10, "the retry to succeed")
    finally:
        running.stop()
    with open_store(url) as store:
        attempts = store.attempts(msg_id)
    assert [(a.outcome, a.code) for a in attempts] == [("temporary", 451), ("sent", 250)]
    assert len(smtp.messages) == 2 and len(smtp.accepted) == 1


# -- processes ------------------------------------------------------------------------------------


def start_serve(
    config_path: Path, cwd: Path, log_name: str = "serve.log"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(cwd / log_name, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "postroom", "serve", "-c", str(config_path)],
            cwd=cwd,
            stdout=log,
            stderr=log,
            env=env,
        )


def sent_count(url: str) -> int:
    with open_store(url) as store:
        return sent_in(store)


def test_sigterm_exits_cleanly(tmp_path: Path, smtp: SmtpServer) -> None:
    config_path = write_config(tmp_path, config_dict(tmp_path, smtp.port))
    proc = start_serve(config_path, tmp_path)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "stopped cleanly" in (tmp_path / "serve.log").read_text()


def run_dispatchers(
    tmp_path: Path,
    data: dict[str, Any],
    count: int,
    processes: int,
    smtp: SmtpServer,
    timeout_s: float,
) -> None:
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    emails = [make_email(i) for i in range(count)]
    procs = [start_serve(config_path, tmp_path, f"serve-{n}.log") for n in range(processes)]
    try:
        enqueue_all(config, emails)
        url = config.email.server.database.sqlalchemy_url()
        with open_store(url) as store:
            store.migrate()  # racing the servers' own migrations is allowed
            wait_until(lambda: sent_in(store) == count, timeout_s, f"{count} messages to be sent")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    assert codes == [0] * processes
    received = Counter(m.message_id for m in smtp.accepted)
    counts = [received[e.message_id] for e in emails]
    assert counts == [1] * count, f"{sum(c != 1 for c in counts)} messages not received once"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text("SELECT dispatcher, count(*) FROM attempts GROUP BY dispatcher")
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == processes, f"not every dispatcher sent something: {rows}"
    assert sum(n for _, n in rows) == count


def sent_in(store: Store) -> int:
    return store.stats(None, datetime.now(UTC)).counts["sent"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_three_dispatchers_on_postgres_and_redis_send_each_message_once(
    tmp_path: Path, smtp: SmtpServer, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    data = config_dict(
        tmp_path,
        smtp.port,
        queue={"engine": "redis", "url": redis_url, "name": redis_prefix},
        database={"engine": "postgres", "url": postgres_url},
    )
    run_dispatchers(tmp_path, data, 10_000, 3, smtp, timeout_s=240)


@pytest.mark.slow
def test_two_dispatchers_on_one_sqlite_file_send_each_message_once(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    run_dispatchers(tmp_path, config_dict(tmp_path, smtp.port), 2_000, 2, smtp, timeout_s=120)


def dispatcher_pids(url: str) -> set[int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            owners = conn.execute(sqlalchemy.text("SELECT DISTINCT dispatcher FROM attempts"))
            return {int(owner.split(":")[1]) for (owner,) in owners}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_several_processes_and_a_killed_child_is_replaced(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.on_dot("250 OK", delay_s=0.005)
    data = config_dict(tmp_path, smtp.port, processes=2, batch=10)  # default lease: rows of
    # the killed child are taken over because its process is gone, not because a lease ran out
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    emails = [make_email(i) for i in range(400)]
    enqueue_all(config, emails)
    url = config.email.server.database.sqlalchemy_url()
    with open_store(url) as store:
        store.migrate()
    proc = start_serve(config_path, tmp_path)
    try:
        wait_until(lambda: len(dispatcher_pids(url)) == 2, 60, "both processes to send")
        victim = min(dispatcher_pids(url))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: sent_count(url) == 400, 120, "every message to be sent")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    log = (tmp_path / "serve.log").read_text()
    assert code == 0, log
    assert f"(pid {victim}) exited" in log
    received = Counter(m.message_id for m in smtp.accepted)
    counts = [received[e.message_id] for e in emails]
    assert min(counts) == 1, "a message was lost"
    # results are written before each claim: what can be unrecorded is one claim (batch 10)
    # and what was in flight on the 4 connections, one lined up behind each with PIPELINING
    bound = 10 + 2 * 4
    assert sum(c - 1 for c in counts) <= bound, "more duplicates than a claim and the connections"


def children_of(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path, smtp: SmtpServer) -> None:
    data = config_dict(tmp_path, smtp.port, processes=2)
    config_path = write_config(tmp_path, data)
    proc = start_serve(config_path, tmp_path)
    children: set[int] = set()
    try:
        wait_until(lambda: len(dispatchers_under(proc.pid)) == 2, 30, "two dispatchers")
        children = dispatchers_under(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: not any(alive(c) for c in children), 30, "the children to stop")
    finally:
        proc.kill()
        for child in children:
            if alive(child):
                os.kill(child, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text()
    assert log.count("the supervisor is gone") == 2, log


def dispatchers_under(pid: int) -> set[int]:
    """The supervisor's dispatcher children (not multiprocessing's resource tracker)."""
    found = set()
    for child in children_of(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            found.add(child)
    return found


def test_poison_payload_is_recorded_and_does_not_block_the_queue(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    from postroom.queue.sqlite import SqliteQueue

    config = load_config(config_dict(tmp_path, smtp.port))
    with SqliteQueue(str(tmp_path / "q.db"), name="postroom") as queue:
        queue.push([b"\x00 not a payload", b'{"v": 1, "id": "half", "email": {}}'])
    running = RunningServer(config)
    try:
        good = make_email(5)
        enqueue_all(config, [good])
        wait_until(lambda: smtp.count(good.message_id) == 1, 10, "the good message")
    finally:
        running.stop()
    with open_store(config.email.server.database.sqlalchemy_url()) as store:
        stats = store.stats(None, datetime.now(UTC))
    assert stats.counts["failed"] == 2 and stats.counts["sent"] == 1
    reasons = " | ".join(reason for reason, _ in stats.top_failures)
    assert "not UTF-8 JSON" in reasons and "'queued_at'" in reasons, reasons


def test_message_that_keeps_failing_temporarily_expires(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.on_dot("451 4.4.1 no answer from the next hop")
    data = config_dict(
        tmp_path,
        smtp.port,
        retry={"initial": "300ms", "jitter": 0},
        **{"max-time": "2s", "max-fails": 100},
    )
    config = load_config(data)
    running = RunningServer(config)
    try:
        [msg_id] = enqueue_all(config, [make_email(6)])
        url = config.email.server.database.sqlalchemy_url()

        def expired() -> bool:
            return status_of(url, msg_id) == "expired"

        wait_until(expired, 15, "the message to expire")
    finally:
        running.stop()
    with open_store(url) as store:
        info, attempts = store.get(msg_id), store.attempts(msg_id)
    assert 2 <= len(attempts) <= 5, [a.started_at for a in attempts]
    assert all(a.code == 451 and a.enhanced_code == "4.4.1" for a in attempts)
    assert info.failure is not None and "451" in info.failure
