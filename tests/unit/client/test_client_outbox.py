"""The Outbox against the memory engine and engine doubles that block or fail on purpose."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from postroom.client import MAX_BATCH, Outbox
from postroom.client.outbox import retry_delay_s
from postroom.errors import BufferFullError, ConfigError, MessageError, QueueError
from postroom.message import Email
from postroom.payload import QueuedEmail, decode
from postroom.queue.memory import MemoryQueue


def make_email(n: int = 0) -> Email:
    return Email(
        from_="Sender <sender@example.com>",
        to=["rcpt@example.com"],
        subject=f"message {n}",
        text=f"body {n}",
    )


def drain(queue: MemoryQueue) -> list[QueuedEmail]:
    """Every payload in the queue, oldest first."""
    out: list[QueuedEmail] = []
    while batch := queue.take(1000, 0):
        out.extend(decode(item.payload) for item in batch)
    return out


class GatedQueue(MemoryQueue):
    """A memory engine whose push waits until ``gate`` is set: a queue engine that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.batches: list[int] = []

    def push(self, payloads: Sequence[bytes]) -> None:
        self.gate.wait(30)
        self.batches.append(len(payloads))
        super().push(payloads)


class FlakyQueue(MemoryQueue):
    """A memory engine that is down (raises QueueError) while ``down`` is set."""

    def __init__(self, *, down: bool = True) -> None:
        super().__init__()
        self.down = threading.Event()
        if down:
            self.down.set()
        self.attempts = 0

    def push(self, payloads: Sequence[bytes]) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise QueueError("connection refused")
        super().push(payloads)


@pytest.fixture
def queue() -> MemoryQueue:
    return MemoryQueue()


@pytest.fixture
def outbox(queue: MemoryQueue) -> Iterator[Outbox]:
    box = Outbox(queue=queue, buffer=250, enqueue_timeout_s=1.0, flush_timeout_s=5.0)
    yield box
    box.close(timeout_s=1.0)


def test_submit_returns_the_id_that_arrives_in_the_payload(
    outbox: Outbox, queue: MemoryQueue
) -> None:
    email = make_email(7)
    before = datetime.now(UTC)
    message_id = outbox.enqueue(email)
    assert outbox.flush(2.0) == 0
    [payload] = drain(queue)
    assert payload.id == message_id
    assert payload.email == email.to_dict()
    assert before <= payload.queued_at <= datetime.now(UTC)
    assert payload.send_after == payload.queued_at


def test_send_after_in_the_future_is_kept_and_in_the_past_means_now(
    outbox: Outbox, queue: MemoryQueue
) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    outbox.submit(make_email(1), send_after=later)
    outbox.submit(make_email(2), send_after=datetime.now(UTC) - timedelta(days=1))
    outbox.submit(make_email(3), send_after=(later + timedelta(hours=1)).replace(tzinfo=None))
    assert outbox.flush(2.0) == 0
    future, past, naive = drain(queue)
    assert abs(future.send_after - later) < timedelta(milliseconds=1)
    assert past.send_after == past.queued_at
    # a naive time is local time, converted to UTC
    local = (later + timedelta(hours=1)).replace(tzinfo=None).astimezone(UTC)
    assert abs(naive.send_after - local) < timedelta(milliseconds=1)


def test_an_invalid_email_raises_before_anything_is_queued(outbox: Outbox) -> None:
    bad = Email(from_="sender@example.com", to=[], subject="nobody to send to", text="x")
    with pytest.raises(MessageError):
        outbox.enqueue(bad)
    assert outbox.pending() == 0
    assert outbox.flush(0.5) == 0


def test_changing_the_email_after_enqueue_does_not_change_what_is_sent() -> None:
    gate = GatedQueue()
    with Outbox(queue=gate, buffer=10, flush_timeout_s=2.0) as held:
        email = make_email(1)
        held.enqueue(email)
        email.subject = "changed afterwards"
        email.to.append("late@example.com")
        gate.gate.set()
        assert held.flush() == 0
    [payload] = drain(gate)
    assert payload.email["subject"] == "message 1"
    assert "late@example.com" not in str(payload.email)


def test_order_is_kept(outbox: Outbox, queue: MemoryQueue) -> None:
    ids = [outbox.enqueue(make_email(n)) for n in range(600)]
    assert outbox.flush(5.0) == 0
    assert [p.id for p in drain(queue)] == ids


def test_pushes_in_batches_bounded_by_max_batch() -> None:
    engine = GatedQueue()
    with Outbox(queue=engine, buffer=1200, flush_timeout_s=5.0) as box:
        ids = [box.enqueue(make_email(n)) for n in range(1200)]
        assert box.pending() == 1200  # the first push is hanging: everything is held
        engine.gate.set()
        assert box.flush() == 0
    assert sum(engine.batches) == 1200
    assert max(engine.batches) == MAX_BATCH
    assert len(engine.batches) <= 4  # one early small batch, then full ones
    assert [p.id for p in drain(engine)] == ids


def test_pusher_wakes_on_arrival_without_a_timer(outbox: Outbox, queue: MemoryQueue) -> None:
    outbox.enqueue(make_email(0))
    assert outbox.flush(2.0) == 0
    drain(queue)
    time.sleep(0.2)  # the pusher is idle now
    start = time.monotonic()
    outbox.enqueue(make_email(1))
    assert len(queue.take(10, 2.0)) == 1
    assert time.monotonic() - start < 0.25  # a timer-driven pusher would take far longer


def test_full_buffer_raises_after_the_enqueue_timeout_and_loses_nothing() -> None:
    engine = GatedQueue()
    box = Outbox(queue=engine, buffer=5, enqueue_timeout_s=0.3, flush_timeout_s=5.0)
    ids = [box.enqueue(make_email(n)) for n in range(5)]
    start = time.monotonic()
    with pytest.raises(BufferFullError) as caught:
        box.enqueue(make_email(99))
    waited_s = time.monotonic() - start
    assert 0.25 <= waited_s < 2.0
    message = str(caught.value)
    assert "5 emails" in message
    assert "unreachable or slow" in message
    assert box.pending() == 5
    engine.gate.set()
    assert box.close() == 0
    assert [p.id for p in drain(engine)] == ids


def test_a_waiting_enqueue_proceeds_when_room_appears() -> None:
    engine = GatedQueue()
    with Outbox(queue=engine, buffer=2, enqueue_timeout_s=5.0, flush_timeout_s=5.0) as box:
        box.enqueue(make_email(0))
        box.enqueue(make_email(1))
        threading.Timer(0.2, engine.gate.set).start()
        start = time.monotonic()
        box.enqueue(make_email(2))
        assert 0.15 <= time.monotonic() - start < 3.0
        assert box.flush() == 0
    assert len(drain(engine)) == 3


def test_flush_reports_what_is_left_while_the_engine_is_down() -> None:
    engine = FlakyQueue(down=True)
    with Outbox(queue=engine, buffer=100, flush_timeout_s=5.0) as box:
        for n in range(30):
            box.enqueue(make_email(n))
        start = time.monotonic()
        assert box.flush(0.3) == 30
        assert 0.25 <= time.monotonic() - start < 2.0
        engine.down.clear()
        assert box.flush(5.0) == 0
    assert len(drain(engine)) == 30


def test_one_warning_per_outage_and_one_info_on_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="postroom.client")
    engine = FlakyQueue(down=True)
    with Outbox(queue=engine, buffer=500, flush_timeout_s=5.0) as box:
        for n in range(100):
            box.enqueue(make_email(n))
        _wait_for(lambda: engine.attempts >= 4)
        engine.down.clear()
        assert box.flush() == 0
        engine.down.set()  # a second outage
        attempts_before = engine.attempts
        for n in range(10):
            box.enqueue(make_email(n))
        _wait_for(lambda: engine.attempts >= attempts_before + 2)
        engine.down.clear()
        assert box.flush() == 0
    records = [r for r in caplog.records if r.name == "postroom.client"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    infos = [r for r in records if r.levelno == logging.INFO]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "connection refused" in warnings[0].getMessage()
    assert re.search(r"\b\d+ emails? (is|are) buffered", warnings[0].getMessage())
    assert len(infos) == 2
    assert "pushed 100 emails that waited" in infos[0].getMessage()
    assert "pushed 10 emails that waited" in infos[1].getMessage()
    assert len(drain(engine)) == 110


def test_many_threads_every_id_arrives_exactly_once(queue: MemoryQueue) -> None:
    box = Outbox(queue=queue, buffer=64, enqueue_timeout_s=10.0, flush_timeout_s=10.0)
    emails = [make_email(n) for n in range(500)]
    results: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def worker(slot: int) -> None:
        start.wait()
        results[slot].extend(box.enqueue(email) for email in emails)

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert box.close() == 0
    sent = [message_id for ids in results for message_id in ids]
    arrived = [p.id for p in drain(queue)]
    assert len(sent) == 4000
    assert len(set(sent)) == 4000
    assert sorted(arrived) == sorted(sent)
    # each thread's own emails keep their order
    position = {message_id: n for n, message_id in enumerate(arrived)}
    for ids in results:
        assert [position[i] for i in ids] == sorted(position[i] for i in ids)


def test_close_refuses_new_emails_and_closes_an_engine_it_opened() -> None:
    closed = threading.Event()

    class ClosingQueue(MemoryQueue):
        def close(self) -> None:
            closed.set()

    box = Outbox(queue=ClosingQueue, flush_timeout_s=2.0)
    box.enqueue(make_email(0))
    assert box.close() == 0
    assert closed.is_set()
    with pytest.raises(QueueError, match="closed"):
        box.enqueue(make_email(1))
    assert box.close() == 0  # again: harmless


def test_close_does_not_close_an_engine_it_was_given() -> None:
    shared = FlakyQueue(down=False)
    with Outbox(queue=shared) as box:
        box.enqueue(make_email(0))
    assert shared.size() == 1  # still usable
    shared.push([b"x"])
    assert shared.size() == 2


def test_close_with_the_engine_down_warns_how_many_are_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = FlakyQueue(down=True)
    box = Outbox(queue=engine, buffer=50)
    for n in range(12):
        box.enqueue(make_email(n))
    assert box.close(timeout_s=0.2) == 12
    lost = [r.getMessage() for r in caplog.records if "before the outbox closed" in r.getMessage()]
    assert lost
    assert lost[0].startswith("12 emails were lost: not pushed to the memory queue")


def test_a_factory_failure_is_an_outage_and_is_retried() -> None:
    calls: list[int] = []
    engine = MemoryQueue()

    def factory() -> MemoryQueue:
        calls.append(1)
        if len(calls) < 3:
            raise QueueError("cannot connect")
        return engine

    with Outbox(queue=factory, flush_timeout_s=5.0) as box:
        box.enqueue(make_email(0))
        assert box.flush() == 0
    assert len(calls) == 3
    assert len(drain(engine)) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="buffer: must be at least 1"):
        Outbox(queue=MemoryQueue(), buffer=0)
    with pytest.raises(ConfigError, match="enqueue_timeout_s"):
        Outbox(queue=MemoryQueue(), enqueue_timeout_s=-1)


def test_retry_delay_doubles_from_50ms_to_5s_with_jitter() -> None:
    mid = [retry_delay_s(n, rng=lambda: 0.5) for n in range(1, 10)]
    assert mid[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert mid[-1] == pytest.approx(5.0)
    assert retry_delay_s(10_000, rng=lambda: 0.5) == pytest.approx(5.0)
    assert retry_delay_s(1, rng=lambda: 0.0) == pytest.approx(0.04)
    assert retry_delay_s(1, rng=lambda: 1.0) == pytest.approx(0.06)


def _wait_for(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
