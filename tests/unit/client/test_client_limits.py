"""What ``enqueue()`` refuses before anything is queued: emails over the size and recipient
limits, and send times a payload cannot carry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.client import Outbox
from postroom.config import ConfigError, load_config
from postroom.errors import LimitError, MessageError
from postroom.message import Email
from postroom.payload import LATEST_TIME, decode
from postroom.queue.memory import MemoryQueue


@pytest.fixture
def queue() -> MemoryQueue:
    return MemoryQueue()


def outbox_for(queue: MemoryQueue, **email: object) -> Iterator[Outbox]:
    config = load_config({"email": email}, env={})
    with Outbox(config, queue=queue, flush_timeout_s=5) as outbox:
        yield outbox


@pytest.fixture
def small(queue: MemoryQueue) -> Iterator[Outbox]:
    yield from outbox_for(queue, **{"max-message-size": 64 * 1024, "max-recipients": 5})


def email(**fields: object) -> Email:
    values: dict[str, object] = {"from_": "a@example.com", "to": "b@example.com", "text": "hi"}
    values.update(fields)
    return Email(**values)  # type: ignore[arg-type]


def test_defaults_are_25_mib_and_1000_recipients() -> None:
    config = load_config({}, env={})
    assert config.email.max_message_size == 25 * 1024 * 1024
    assert config.email.max_recipients == 1000


def test_an_email_over_the_size_limit_is_refused_naming_both_sizes(
    small: Outbox, queue: MemoryQueue
) -> None:
    big = email()
    big.attach(b"\x00" * 60_000, "data.bin")  # base64 makes it about 81 KB
    size = len(big.to_bytes())
    with pytest.raises(LimitError) as caught:
        big.enqueue(outbox=small)
    error = caught.value
    assert isinstance(error, MessageError)
    assert (error.key, error.value, error.limit) == ("email.max-message-size", size, 65536)
    assert f"{size} bytes" in str(error) and "email.max-message-size allows 65536" in str(error)
    assert small.flush() == 0 and queue.take(10, 0) == []


def test_multibyte_text_is_measured_rendered_not_as_characters(small: Outbox) -> None:
    emoji = email(text="😀" * 6_000)  # 6,000 characters, ~75 KB as quoted-printable
    assert len(emoji.to_json()) < 65536 < len(emoji.to_bytes())
    with pytest.raises(LimitError, match=r"email\.max-message-size"):
        emoji.enqueue(outbox=small)


def test_an_email_under_the_size_limit_is_queued(small: Outbox, queue: MemoryQueue) -> None:
    fits = email()
    fits.attach(b"\x00" * 30_000, "data.bin")
    message_id = fits.enqueue(outbox=small)
    assert small.flush() == 0
    assert [decode(item.payload).id for item in queue.take(10, 0)] == [message_id]


def test_too_many_recipients_are_refused_counting_bcc(small: Outbox) -> None:
    many = email(to=["a1@example.com", "a2@example.com"], cc="a3@example.com")
    many.bcc = ["a4@example.com", "a5@example.com", "a6@example.com"]
    with pytest.raises(LimitError) as caught:
        many.enqueue(outbox=small)
    assert (caught.value.key, caught.value.value, caught.value.limit) == (
        "email.max-recipients",
        6,
        5,
    )
    assert "6 recipients" in str(caught.value) and "allows 5" in str(caught.value)


def test_duplicate_recipients_count_once(small: Outbox) -> None:
    repeated = email(to=["x@example.com"] * 4, cc=["X@example.com"] * 4)
    assert repeated.enqueue(outbox=small)


@pytest.mark.parametrize(
    ("key", "value"), [("max-message-size", 0), ("max-recipients", 0), ("max-recipients", "5")]
)
def test_limits_are_validated_at_load(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^email\.{key}: "):
        load_config({"email": {key: value}}, env={})


@pytest.mark.parametrize(
    "when",
    [
        datetime(9999, 1, 1, tzinfo=UTC),
        datetime(9998, 12, 31, 23, 59, tzinfo=UTC),
        LATEST_TIME + timedelta(seconds=1),
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),  # past 9999 in UTC
        datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # before year 1 in UTC
    ],
)
def test_send_times_that_cannot_be_carried_are_refused_at_enqueue(
    small: Outbox, queue: MemoryQueue, when: datetime
) -> None:
    with pytest.raises(MessageError, match="send time"):
        email().send_at(when, outbox=small)
    assert small.flush() == 0 and queue.take(10, 0) == []


def test_the_latest_send_time_still_leaves_room_for_the_longest_max_time(
    queue: MemoryQueue,
) -> None:
    for outbox in outbox_for(queue, server={"max-time": "876000h"}):
        email().send_at(LATEST_TIME, outbox=outbox)
        assert outbox.flush() == 0
    queued = decode(queue.take(1, 0)[0].payload)
    assert queued.send_after == LATEST_TIME
    assert queued.send_after + timedelta(hours=876000) <= datetime.max.replace(tzinfo=UTC)


def test_a_delay_over_100_years_is_refused(small: Outbox) -> None:
    with pytest.raises(ValueError, match="100 years"):
        email().send_later(timedelta(days=999_999_999), outbox=small)
    with pytest.raises(ValueError, match="100 years"):
        email().send_later("99999999999d", outbox=small)


def test_naive_times_past_the_calendar_are_refused_in_any_time_zone() -> None:
    code = (
        "from datetime import datetime\n"
        "from postroom import Email, MessageError\n"
        "from postroom.message.schedule import due_at\n"
        "for when in (datetime(1, 1, 1), datetime.max):\n"
        "    for make in (lambda: Email(date=when), lambda: due_at(when)):\n"
        "        try:\n"
        "            make()\n"
        "        except MessageError as error:\n"
        "            print(type(error).__name__)\n"
    )
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MessageError"] * 4
