"""When a queued email becomes due: the time arithmetic behind ``send_later`` and ``send_at``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.durations import parse_duration

__all__ = ["due_at", "due_in"]


def due_in(delay: str | timedelta, now: datetime | None = None) -> datetime:
    """The aware UTC time ``delay`` after ``now`` (default: the current time).

    ``delay`` is a Go-style duration (``"300ms"``, ``"5m"``, ``"1h30m"``) or a timedelta.
    A negative or malformed delay raises :class:`ValueError` naming it.
    """
    if isinstance(delay, timedelta):
        if delay < timedelta(0):
            raise ValueError(f"delay {delay!r} is negative: use send_at() for a time in the past")
        offset = delay
    elif isinstance(delay, str):
        offset = parse_duration(delay)
    else:
        raise ValueError(f"delay {delay!r} is not a duration: pass e.g. '5m' or a timedelta")
    start = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return start + offset


def due_at(when: datetime) -> datetime:
    """``when`` as an aware UTC time; a naive ``when`` is local time. A past time stays as is
    (the client sends it right away)."""
    if not isinstance(when, datetime):
        raise TypeError(f"send_at() needs a datetime, not {type(when).__name__}")
    return when.astimezone(UTC)
