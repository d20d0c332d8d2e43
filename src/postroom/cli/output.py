"""How commands print: aligned text for people, one JSON document for scripts.

Times are always shown in UTC, ISO 8601 with a ``Z`` suffix: whole seconds in text
(``2026-12-01T09:00:00Z``), microseconds in JSON (``2026-12-01T09:00:00.123456Z``).
Durations are shown as ``350ms``, ``1.25s`` or ``2m5s`` in text and as float seconds in JSON.

Subjects, failure reasons and SMTP replies come from outside: a control character in them
could move the cursor, retitle the terminal or forge a line. Text output shows every control
character (C0, DEL, C1), the bidirectional overrides and the line separators escaped
(``\\x1b``, ``\\u202e``); JSON output escapes them as ``\\u`` sequences.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

from postroom.durations import format_duration

__all__ = [
    "JsonValue",
    "fmt_seconds",
    "fmt_time",
    "json_time",
    "print_json",
    "printable",
    "record_to_json",
    "table",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

# what a terminal may act on: C0 and C1 controls, DEL, bidirectional marks and overrides, and
# the Unicode line and paragraph separators
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_TEXT = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")  # json.dumps escapes C0 itself (keep its indent)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on escaped (``\\x1b``, ``\\u202e``).

    >>> printable("hi\\x1b]0;owned\\x07")
    'hi\\\\x1b]0;owned\\\\x07'
    """
    return _UNSAFE_TEXT.sub(_escape, text)


def fmt_time(value: datetime | None) -> str:
    """``2026-12-01T09:00:00Z`` (UTC, whole seconds), or ``-`` for no time."""
    if value is None:
        return "-"
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def json_time(value: datetime | None) -> str | None:
    """``2026-12-01T09:00:00.123456Z`` (UTC, full precision), or ``None``."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def fmt_seconds(value_s: float | None) -> str:
    """A duration for people: ``350ms`` below a second, ``1.25s`` below a minute, else ``2m5s``."""
    if value_s is None:
        return "-"
    if value_s < 1:
        return f"{value_s * 1000:.0f}ms"
    if value_s < 60:
        return f"{value_s:.2f}".rstrip("0").rstrip(".") + "s"
    return format_duration(timedelta(seconds=round(value_s)))


def to_json(value: object) -> JsonValue:
    """Convert store values (datetimes, dataclasses, tuples, bytes sizes) to JSON-safe data."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return json_time(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return record_to_json(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [to_json(v) for v in value]
    return str(value)


def record_to_json(record: object) -> dict[str, JsonValue]:
    """Every field of a dataclass instance, by field name, as JSON-safe data."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"{record!r} is not a dataclass instance")
    return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}


def print_json(document: JsonValue, out: TextIO | None = None) -> None:
    """Print one JSON document (sorted keys, indented) followed by a newline."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    text = _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)  # only in strings
    print(text, file=out or sys.stdout)


def table(
    rows: Sequence[Sequence[str]], *, header: Sequence[str] | None = None, indent: int = 0
) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded. Every cell
    is shown :func:`printable`."""
    all_rows = [list(map(printable, header))] if header else []
    all_rows += [list(map(printable, r)) for r in rows]
    if not all_rows:
        return ""
    widths = [max(len(r[i]) for r in all_rows if i < len(r)) for i in range(len(all_rows[0]))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return "\n".join(lines)
