"""When a queued email becomes due: the time arithmetic behind ``send_later`` and ``send_at``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.durations import MAX_DURATION, parse_duration
from postroom.errors import MessageError

__all__ = ["due_at", "due_in"]


def due_in(delay: str | timedelta, now: datetime | None = None) -> datetime:
    """The aware UTC time ``delay`` after ``now`` (default: the current time).

    ``delay`` is a Go-style duration (``"300ms"``, ``"5m"``, ``"1h30m"``) or a timedelta of at
    most 100 years. A negative, malformed or longer delay raises :class:`ValueError` naming it.
    """
    if isinstance(delay, timedelta):
        if delay < timedelta(0):
            raise ValueError(f"delay {delay!r} is negative: use send_at() for a time in the past")
        if delay > MAX_DURATION:
            raise MessageError(f"delay {delay!r} is longer than {MAX_DURATION.days // 365} years")
        offset = delay
    elif isinstance(delay, str):
        offset = parse_duration(delay)
    else:
        raise ValueError(f"delay {delay!r} is not a duration: pass e.g. '5m' or a timedelta")
    start = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return start + offset


def due_at(when: datetime) -> datetime:
    """``when`` as an aware UTC time; a naive ``when`` is local time. A past time stays as is
    (the client sends it right away); a time UTC cannot represent raises
    :class:`~postroom.errors.MessageError`. The outbox refuses times after
    :data:`postroom.payload.LATEST_TIME`."""
    if not isinstance(when, datetime):
        raise TypeError(f"send_at() needs a datetime, not {type(when).__name__}")
    try:
        return when.astimezone(UTC)
    except (
        OverflowError,
        OSError,
        ValueError,
    ):  # e.g. 0001-01-01 at +01:00: before the year 1 in UTC
        raise MessageError(f"send time {when.isoformat()} cannot be represented in UTC") from None
