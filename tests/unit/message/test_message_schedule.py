"""send_later / send_at time computation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.message.schedule import due_at, due_in

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("300ms", timedelta(milliseconds=300)),
        ("0", timedelta(0)),
        (timedelta(days=2), timedelta(days=2)),
        (timedelta(0), timedelta(0)),
    ],
)
def test_due_in_adds_the_delay(delay: str | timedelta, expected: timedelta) -> None:
    assert due_in(delay, NOW) == NOW + expected
    assert due_in(delay, NOW).tzinfo == UTC


def test_due_in_defaults_to_now() -> None:
    before = datetime.now(UTC)
    result = due_in("1s")
    assert before + timedelta(seconds=1) <= result <= datetime.now(UTC) + timedelta(seconds=1)


def test_due_in_converts_an_aware_now_to_utc() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    assert due_in("1h", now) == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("delay", ["-5m", "5", "soon", "", "5 minutes", 5, None])
def test_malformed_or_negative_delays_raise_value_error(delay: object) -> None:
    with pytest.raises(ValueError):
        due_in(delay, NOW)  # type: ignore[arg-type]


def test_negative_timedelta_raises_value_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        due_in(timedelta(seconds=-1), NOW)


@pytest.fixture
def kolkata() -> Iterator[None]:
    """Local time is UTC+05:30 (no daylight saving) for the test."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


def test_due_at_reads_naive_times_as_local(kolkata: None) -> None:
    assert due_at(datetime(2030, 1, 1, 12, 0)) == datetime(2030, 1, 1, 6, 30, tzinfo=UTC)


def test_due_at_converts_aware_times_to_utc() -> None:
    when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-8)))
    result = due_at(when)
    assert result == datetime(2030, 1, 1, 20, 0, tzinfo=UTC) and result.tzinfo == UTC


def test_due_at_keeps_a_past_time() -> None:
    past = datetime(2000, 1, 1, tzinfo=UTC)
    assert due_at(past) == past


def test_due_at_needs_a_datetime() -> None:
    with pytest.raises(TypeError, match="datetime"):
        due_at("2030-01-01")  # type: ignore[arg-type]
