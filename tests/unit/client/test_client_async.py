"""Awaitable enqueue and flush: the event loop keeps running while the buffer is full."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

import postroom
from postroom.client import Outbox
from postroom.errors import BufferFullError, MessageError
from postroom.message import Email
from postroom.payload import decode, keyed_message_id
from postroom.queue.memory import MemoryQueue


class GatedQueue(MemoryQueue):
    """A memory engine whose push waits until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def push(self, payloads: Sequence[bytes]) -> None:
        self.gate.wait(30)
        super().push(payloads)


def make_email(n: int = 0) -> Email:
    return Email(from_="a@example.com", to="b@example.org", subject=f"s{n}", text="t")


async def ticking(stop: asyncio.Event) -> float:
    """Tick every 5 ms until ``stop``; return the longest gap between two ticks."""
    longest, last = 0.0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


def test_aenqueue_waits_for_room_without_blocking_the_loop() -> None:
    queue = GatedQueue()
    outbox = Outbox(queue=queue, buffer=2, enqueue_timeout_s=10)

    async def scenario() -> tuple[str, float]:
        await make_email(0).aenqueue(outbox=outbox)
        await make_email(1).aenqueue(outbox=outbox)  # the buffer is full now
        stop = asyncio.Event()
        ticker = asyncio.create_task(ticking(stop))
        waiting = asyncio.create_task(make_email(2).aenqueue(outbox=outbox))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # still waiting for room, and the loop kept ticking
        queue.gate.set()
        message_id = await waiting
        stop.set()
        return message_id, await ticker

    try:
        message_id, longest_gap_s = asyncio.run(scenario())
        assert outbox.flush(10) == 0
    finally:
        outbox.close()
    assert longest_gap_s < 0.1
    assert decode(queue.take(10, 0)[-1].payload).id == message_id


def test_aenqueue_raises_buffer_full_after_the_enqueue_timeout() -> None:
    queue = GatedQueue()
    outbox = Outbox(queue=queue, buffer=1, enqueue_timeout_s=0.2)

    async def scenario() -> None:
        await make_email(0).aenqueue(outbox=outbox)
        with pytest.raises(BufferFullError):
            await make_email(1).aenqueue(outbox=outbox)

    try:
        asyncio.run(scenario())
    finally:
        queue.gate.set()
        outbox.close()


def test_asend_later_asend_at_keys_and_aflush() -> None:
    queue = MemoryQueue()
    outbox = Outbox(queue=queue)
    when = datetime.now(UTC) + timedelta(hours=2)

    async def scenario() -> list[str]:
        ids = [
            await make_email(0).asend_later("1h", outbox=outbox),
            await make_email(1).asend_at(when, outbox=outbox, idempotency_key="k1"),
        ]
        assert await postroom.aflush(5, outbox=outbox) == 0
        with pytest.raises(MessageError):
            await make_email(2).aenqueue(outbox=outbox, idempotency_key="")
        return ids

    try:
        later_id, at_id = asyncio.run(scenario())
    finally:
        outbox.close()
    assert at_id == keyed_message_id("k1")
    payloads = {p.id: p for p in (decode(i.payload) for i in queue.take(10, 0))}
    assert payloads[at_id].send_after == when.replace(microsecond=when.microsecond)
    assert payloads[later_id].send_after > datetime.now(UTC) + timedelta(minutes=59)


def test_aflush_without_an_outbox_is_zero() -> None:
    assert asyncio.run(postroom.aflush(1)) == 0
