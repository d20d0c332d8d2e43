"""A real Redis server killed and restarted in the middle of a stream of enqueues.

The server writes an append-only file with ``appendfsync always`` so what it acknowledged survives
the restart, as in production; it is killed with SIGKILL (a crash, not a polite shutdown) and
started again on the same port about a second later.

What a crash can and cannot do: the engine pushes a batch with one server-side script, so a batch
is stored whole or not at all; but when the server stored it and the reply was lost, the outbox
pushes it again. Such duplicates are allowed by the queue contract (ingest is idempotent on the id)
and must be confined to that one batch: consecutive ids, at most ``MAX_BATCH`` of them.
Everything else arrives exactly once, and nothing is missing.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.client import MAX_BATCH, Outbox
from postroom.message import Email
from postroom.payload import decode

redis = pytest.importorskip("redis")

TOTAL = 3000
STREAM_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CrashableRedis:
    """A redis-server on its own port, with an append-only file in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CrashableRedis]:
    srv = CrashableRedis(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def stream_ids(url: str, name: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return [decode(fields[b"p"]).id for _, fields in client.xrange(name)]
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.slow
def test_redis_crash_mid_stream_loses_nothing(
    server: CrashableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    from postroom.queue.redis import RedisQueue

    caplog.set_level(logging.INFO, logger="postroom.client")
    name = "outage"
    outbox = Outbox(
        queue=lambda: RedisQueue(server.url, name=name),
        buffer=1000,
        enqueue_timeout_s=10.0,
        flush_timeout_s=15.0,
    )

    def outage() -> None:
        time.sleep(0.6)
        server.crash()
        time.sleep(1.0)
        server.start()

    chaos = threading.Thread(target=outage)
    chaos.start()
    sent: list[str] = []
    start = time.monotonic()
    for n in range(TOTAL):
        email = Email(from_="a@example.com", to=["b@example.com"], subject=f"n{n}", text="body")
        sent.append(outbox.enqueue(email))
        lag_s = start + STREAM_S * (n + 1) / TOTAL - time.monotonic()
        if lag_s > 0:
            time.sleep(lag_s)
    chaos.join(30)
    assert outbox.close() == 0

    arrived = stream_ids(server.url, name)
    counts = Counter(arrived)
    assert set(counts) == set(sent)  # nothing missing
    duplicated = {i for i, c in counts.items() if c > 1}
    assert max(counts.values()) <= 2
    if duplicated:  # only the batch that was in flight at the crash, in one consecutive run
        positions = sorted(sent.index(i) for i in duplicated)
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert len(positions) <= MAX_BATCH
    assert len(arrived) == TOTAL + len(duplicated)

    messages = [r for r in caplog.records if r.name == "postroom.client"]
    warnings = [r.getMessage() for r in messages if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in messages if r.levelno == logging.INFO]
    assert len(warnings) == 1, warnings
    assert len(infos) == 1, infos
    assert "reachable again" in infos[0]
