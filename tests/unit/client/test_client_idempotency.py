"""Idempotency keys on the client side: the id is derived from the key, bad keys are refused."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from postroom.client import Outbox
from postroom.errors import MessageError
from postroom.message import Email
from postroom.payload import ID_PATTERN, MAX_IDEMPOTENCY_KEY, decode, keyed_message_id
from postroom.queue.memory import MemoryQueue


def make_email(subject: str = "Your order") -> Email:
    return Email(from_="shop@example.com", to="ana@example.org", subject=subject, text="Thanks")


def test_the_same_key_gives_the_same_id_and_different_keys_differ() -> None:
    first = keyed_message_id("order-1234/confirmation")
    assert first == keyed_message_id("order-1234/confirmation")
    assert first != keyed_message_id("order-1234/Confirmation")
    assert first != keyed_message_id("order-1235/confirmation")
    assert re.fullmatch(ID_PATTERN, first) and len(first) == 26 and first.startswith("k")


def test_the_id_does_not_depend_on_the_process() -> None:
    code = "from postroom.payload import keyed_message_id as k; print(k('order-1/ü'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == keyed_message_id("order-1/ü")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (1234, "must be a string, not int"),
        (b"order-1", "must be a string, not bytes"),
        ("", "must not be empty"),
        ("x" * (MAX_IDEMPOTENCY_KEY + 1), f"at most {MAX_IDEMPOTENCY_KEY}"),
        ("order-\ud800", "not valid Unicode"),
    ],
)
def test_a_bad_key_is_refused_before_anything_is_queued(key: object, problem: str) -> None:
    queue = MemoryQueue()
    with Outbox(queue=queue) as outbox:
        with pytest.raises(MessageError, match=problem):
            make_email().enqueue(outbox=outbox, idempotency_key=key)  # type: ignore[arg-type]
        assert outbox.flush(5) == 0
    assert queue.take(10, 0) == []


def test_enqueue_send_later_and_send_at_use_the_keyed_id() -> None:
    queue = MemoryQueue()
    with Outbox(queue=queue) as outbox:
        now_id = make_email().enqueue(outbox=outbox, idempotency_key="a")
        later_id = make_email().send_later("5m", outbox=outbox, idempotency_key="b")
        when = datetime.now(UTC) + timedelta(hours=1)
        at_id = make_email().send_at(when, outbox=outbox, idempotency_key="c")
        plain_id = make_email().enqueue(outbox=outbox)
        assert outbox.flush(5) == 0
    assert [now_id, later_id, at_id] == [keyed_message_id(k) for k in "abc"]
    assert not plain_id.startswith("k")
    ids = [decode(item.payload).id for item in queue.take(10, 0)]
    assert ids == [now_id, later_id, at_id, plain_id]


def test_a_key_queued_twice_is_pushed_twice_with_one_id_and_the_first_content_first() -> None:
    """The client does not remember keys: the database dedupes (first wins, see the
    integration test); both payloads carry the same id."""
    queue = MemoryQueue()
    with Outbox(queue=queue) as outbox:
        first = make_email("first").enqueue(outbox=outbox, idempotency_key="order-9")
        second = make_email("second").enqueue(outbox=outbox, idempotency_key="order-9")
        assert outbox.flush(5) == 0
    assert first == second
    payloads = [decode(item.payload) for item in queue.take(10, 0)]
    assert [p.id for p in payloads] == [first, first]
    assert [p.email["subject"] for p in payloads] == ["first", "second"]
