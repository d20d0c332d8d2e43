"""The sliding window: a dispatcher keeps every pooled connection busy, whatever ``batch`` is.

Against a real SMTP server that answers each final dot after a delay, on each database engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from postroom.dispatch.dispatcher import Dispatcher
from postroom.dispatch.ingest import Ingestor
from postroom.dispatch.policy import RetryPolicy
from postroom.message import Email
from postroom.payload import encode, new_message_id
from postroom.queue.memory import MemoryQueue
from postroom.store import Store
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode
from tests.smtp_servers import SmtpServer

POLICY = RetryPolicy(max_fails=3, initial_s=60, max_s=3600, multiplier=2, jitter=0.0)
CONNECTIONS, DELAY_S = 8, 0.3


@pytest.fixture
def slow_server() -> Iterator[SmtpServer]:
    with SmtpServer(pipelining=True) as server:
        server.on_dot("250 2.0.0 OK", delay_s=DELAY_S)
        yield server


def enqueue(store: Store, count: int) -> list[str]:
    queue, now = MemoryQueue(), datetime.now(UTC)
    ids = []
    for i in range(count):
        email = Email(from_="app@example.com", to=[f"r{i}@example.org"], subject=f"m{i}", text="x")
        email.ensure_identity()
        ids.append(new_message_id())
        queue.push([encode(ids[-1], email.to_dict(), now, now)])
    Ingestor(queue, store, max_time=timedelta(hours=1), clock=lambda: now).run_once(0)
    return ids


def dispatcher(store: Store, port: int, batch: int) -> Dispatcher:
    settings = SmtpSettings(
        host="127.0.0.1", port=port, tls=TlsMode.NONE, helo="client.test", connections=CONNECTIONS
    )
    return Dispatcher(store, SmtpTransport(settings), owner="window", policy=POLICY, batch=batch)


def test_connections_beyond_the_batch_are_used_side_by_side(
    store: Store, slow_server: SmtpServer
) -> None:
    ids = enqueue(store, 4 * CONNECTIONS)
    d = dispatcher(store, slow_server.port, batch=2)
    try:
        d.step()  # one stream: claims 2 at a time as connections free up, until none is due
    finally:
        d.transport.close()
    assert {store.get(i).status for i in ids} == {"sent"}
    assert len(slow_server.accepted) == len(ids)
    # batch by batch, no more than 2 conversations would ever have run at once
    assert slow_server.connections_peak == CONNECTIONS


def test_a_stream_stops_claiming_when_stopped(store: Store, slow_server: SmtpServer) -> None:
    ids = enqueue(store, 4 * CONNECTIONS)
    d = dispatcher(store, slow_server.port, batch=2)
    delivered = 0
    original = d.ledger.result

    def stop_after_first(finish: object) -> None:
        nonlocal delivered
        delivered += 1
        original(finish)  # type: ignore[arg-type]
        d.stop()

    d.ledger.result = stop_after_first  # type: ignore[method-assign]
    try:
        d.step()
    finally:
        d.transport.close()
    statuses = [store.get(i).status for i in ids]
    # what had started when the first result came is finished; nothing new started after it
    assert statuses.count("sent") == delivered
    assert delivered <= 2 * CONNECTIONS  # with PIPELINING, one lined up behind each
    assert statuses.count("queued") == len(ids) - delivered
