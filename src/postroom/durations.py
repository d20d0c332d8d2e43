"""Go-style durations: ``300ms``, ``5m``, ``1h30m``, ``100h``, ``1.5s``.

>>> parse_duration("1h30m")
datetime.timedelta(seconds=5400)
>>> format_duration(timedelta(seconds=5400))
'1h30m'
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_DURATION", "DurationTooLongError", "format_duration", "parse_duration"]

#: the longest duration postroom accepts anywhere (100 years): a time plus it stays representable
MAX_DURATION = timedelta(days=36525)

_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


class DurationTooLongError(ValueError):
    """Raised by :func:`parse_duration` for a well-formed duration over :data:`MAX_DURATION`."""


_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration into a :class:`~datetime.timedelta`.

    A bare ``0`` is accepted; anything else needs a unit on every number. Days (``30d``) are
    accepted as a convenience beyond Go. Negative durations, empty strings and durations longer
    than :data:`MAX_DURATION` (100 years, :class:`DurationTooLongError`) are refused with
    :class:`ValueError` naming the input.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration (expected a string such as '5m')")
    s = text.strip()
    if s == "0":
        return timedelta(0)
    if not s or s.startswith("-"):
        raise ValueError(f"{text!r} is not a duration (expected e.g. '300ms', '5m', '1h30m')")
    s = s.lstrip("+")
    pos = 0
    total_s = 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total_s += float(match.group(1)) * _UNITS_S[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (expected e.g. '300ms', '5m', '1h30m')")
    if not total_s <= MAX_DURATION.total_seconds():  # also catches an infinite sum
        raise DurationTooLongError(f"{text!r} is longer than {MAX_DURATION.days // 365} years")
    return timedelta(seconds=total_s)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go prints it, without zero parts: ``1h30m``, ``250ms``."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    total_ms = abs(total_ms)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds and millis:
        parts.append(f"{seconds}.{millis:03d}".rstrip("0") + "s")
    elif seconds:
        parts.append(f"{seconds}s")
    elif millis:
        parts.append(f"{millis}ms")
    return sign + "".join(parts)
