"""Idempotency keys end to end: two processes queue the same keys at the same moment, through a
real queue engine and two real ``postroom serve`` processes, and every key is sent once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from postroom.config import load_config
from postroom.payload import keyed_message_id
from postroom.store import open_store
from tests.integration.test_serve import config_dict, start_serve, wait_until, write_config
from tests.smtp_servers import SmtpServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

KEYS = 300

SCRIPT = r"""
import json, sys, time
import postroom
from postroom import Email

config, start_at, tag = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
postroom.configure(config)
Email(from_="warm@example.com", to="warm@example.org", text="warm-up")  # imports done
while time.time() < start_at:
    time.sleep(0.001)
ids = {}
for n in range(KEYS):
    e = Email(from_="shop@example.com", to=f"buyer{n}@example.org",
              subject=f"order {n} from {tag}", text="Thanks")
    key = f"order-{n}/confirmation"
    if n % 3 == 0:
        ids[key] = e.enqueue(idempotency_key=key)
    elif n % 3 == 1:
        ids[key] = e.send_later("0s", idempotency_key=key)
    else:
        ids[key] = e.send_at(e.date, idempotency_key=key)
assert postroom.flush(60) == 0
print(json.dumps(ids))
""".replace("KEYS", str(KEYS))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def enqueue_at_once(tmp_path: Path, config: dict[str, Any]) -> list[dict[str, str]]:
    script = tmp_path / "enqueue.py"
    script.write_text(SCRIPT)
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(config), str(start_at), tag],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for tag in ("A", "B")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results


def run(tmp_path: Path, smtp: SmtpServer, data: dict[str, Any]) -> None:
    config_path = write_config(tmp_path, data)
    url = load_config(config_path).email.server.database.sqlalchemy_url()
    servers = [start_serve(config_path, tmp_path, f"serve-{n}.log") for n in range(2)]
    try:
        first, second = enqueue_at_once(tmp_path, data)
        expected = {f"order-{n}/confirmation" for n in range(KEYS)}
        assert set(first) == set(second) == expected
        assert first == second == {key: keyed_message_id(key) for key in expected}
        wait_until(lambda: len(smtp.accepted) >= KEYS, 120, f"{KEYS} messages to be sent")
        time.sleep(2.0)  # a second copy, if any were coming, would arrive meanwhile
        with open_store(url) as store:
            rows = [store.get(message_id) for message_id in first.values()]
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in servers]
    assert codes == [0, 0]
    assert {row.status for row in rows} == {"sent"}
    received = Counter(rcpt for m in smtp.accepted for rcpt in m.rcpt_tos)
    assert received == Counter({f"buyer{n}@example.org": 1 for n in range(KEYS)})
    # each key's one email is one of the two processes' whole emails, never a mixture
    for message in smtp.accepted:
        subject = message_from_bytes(message.content)["Subject"]
        assert subject.rsplit(" ", 1)[-1] in {"A", "B"}
        assert message.rcpt_tos[0] == f"buyer{subject.split()[1]}@example.org"


def test_two_processes_one_key_one_email_on_sqlite(tmp_path: Path, smtp: SmtpServer) -> None:
    run(tmp_path, smtp, config_dict(tmp_path, smtp.port))


@pytest.mark.postgres
@pytest.mark.redis
def test_two_processes_one_key_one_email_on_postgres_and_redis(
    tmp_path: Path, smtp: SmtpServer, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    queue = {"engine": "redis", "url": redis_url, "name": redis_prefix}
    database = {"engine": "postgres", "url": postgres_url}
    run(tmp_path, smtp, config_dict(tmp_path, smtp.port, queue=queue, database=database))


@pytest.mark.redis
def test_two_processes_one_key_one_email_on_redis_and_sqlite(
    tmp_path: Path, smtp: SmtpServer, redis_url: str, redis_prefix: str
) -> None:
    queue = {"engine": "redis", "url": redis_url, "name": redis_prefix}
    run(tmp_path, smtp, config_dict(tmp_path, smtp.port, queue=queue))


@pytest.mark.postgres
def test_a_purged_key_can_be_sent_again_and_a_kept_one_cannot(
    tmp_path: Path, smtp: SmtpServer, postgres_url: str
) -> None:
    """What "until the row is purged" means, on the store a server uses."""
    from postroom.client import Outbox
    from postroom.message import Email

    data = config_dict(tmp_path, smtp.port, database={"engine": "postgres", "url": postgres_url})
    config_path = write_config(tmp_path, data)
    config = load_config(config_path)
    server = start_serve(config_path, tmp_path)

    def send(subject: str) -> str:
        e = Email(from_="shop@example.com", to="ana@example.org", subject=subject, text="x")
        with Outbox(config) as outbox:
            message_id = e.enqueue(outbox=outbox, idempotency_key="welcome/ana")
            assert outbox.flush(30) == 0
        return message_id

    try:
        first = send("one")
        wait_until(lambda: len(smtp.accepted) == 1, 60, "the first email")
        assert send("two") == first
        time.sleep(2.0)
        assert len(smtp.accepted) == 1
        with open_store(postgres_url) as store:
            purged = store.purge(datetime.now(UTC) + timedelta(hours=1))  # every finished row
        assert purged == 1
        assert send("three") == first
        wait_until(lambda: len(smtp.accepted) == 2, 60, "the email after the purge")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    subjects = [message_from_bytes(m.content)["Subject"] for m in smtp.accepted]
    assert subjects == ["one", "three"]
