"""Python values to and from their stored form, one fast function per kind.

Both the SQLAlchemy column types of :mod:`postroom.store.schema` and the batch statements of
:mod:`postroom.store.batch` use these, so a value is stored the same way whichever path wrote it:

* times: aware datetimes only (a naive one raises :class:`ValueError`); SQLite stores fixed-width
  UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, PostgreSQL ``timestamptz``; both come back as aware
  UTC datetimes;
* lists of strings: compact JSON text (``["a@example.com","b@example.com"]``, no ASCII escaping).
"""

from __future__ import annotations

import functools
import json
import json.encoder
from collections.abc import Sequence
from datetime import UTC, datetime

from postroom.store.records import RecipientReply

__all__ = [
    "SQLITE_TIME_WIDTH",
    "dump_list",
    "dump_replies",
    "load_list",
    "load_replies",
    "sqlite_time",
    "time_from_postgres",
    "time_from_sqlite",
    "utc_time",
]

SQLITE_TIME_WIDTH = 26  # len("2026-11-28 09:00:00.000000")

#: a JSON string literal without ASCII escaping (what ``json.dumps(..., ensure_ascii=False)``
#: writes for a string); a list is these joined by commas: no encoder object per call
_quote = json.encoder.encode_basestring
_decoder = json.JSONDecoder()


def utc_time(value: datetime) -> datetime:
    """``value`` in UTC; :class:`ValueError` for a naive datetime or a non-datetime."""
    if type(value) is datetime and value.tzinfo is UTC:
        return value
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is a naive datetime; the store needs aware UTC times")
    return value.astimezone(UTC)


def sqlite_time(value: datetime) -> str:
    """``value`` as SQLite stores it: fixed-width UTC text, so text order is time order.

    The last times converted are remembered: a row's times are often one and the same (sent at
    the end of its attempt; due when it was queued), and a batch shares its ``now``. Equal
    aware times are one instant, so they have one text whatever their zones."""
    if type(value) is datetime:
        return _remembered_sqlite_time(value)
    return _sqlite_time(value)  # a subclass, or not a time at all: ValueError


@functools.lru_cache(maxsize=256)
def _remembered_sqlite_time(value: datetime) -> str:
    return _sqlite_time(value)


def _sqlite_time(value: datetime) -> str:
    utc = utc_time(value)
    text = utc.isoformat(" ")  # "...:SS.ffffff+00:00", or "...:SS+00:00" on a whole second
    return text[:SQLITE_TIME_WIDTH] if utc.microsecond else f"{text[:19]}.000000"


def time_from_sqlite(text: str) -> datetime:
    """The aware UTC datetime of a stored SQLite time."""
    return datetime.fromisoformat(text + "+00:00")


def time_from_postgres(value: datetime) -> datetime:
    """A ``timestamptz`` from the driver (in the session's time zone) as aware UTC."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def dump_list(values: Sequence[str]) -> str:
    """A list of strings as compact JSON text (other JSON values are written as JSON too)."""
    try:
        return f"[{','.join([_quote(value) for value in values])}]"
    except TypeError:  # not all strings
        return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def load_list(text: str) -> list[str]:
    """The list stored by :func:`dump_list`; :class:`ValueError` for anything but a JSON list."""
    loaded, end = _decoder.raw_decode(text)
    if not isinstance(loaded, list) or end != len(text):
        raise ValueError(f"expected a JSON list in the database, got {text!r}")
    return [item if isinstance(item, str) else str(item) for item in loaded]


def dump_replies(replies: Sequence[RecipientReply]) -> str | None:
    """Every recipient's reply of one attempt as JSON text (``None`` when there is none)::

        [{"recipient":"a@example.org","code":250,"enhanced_code":"2.1.5","text":"OK"}]

    Written by hand like :func:`dump_list`: one of these goes with every attempt.
    """
    if not replies:
        return None
    return "[" + ",".join(map(_reply_json, replies)) + "]"


def _reply_json(r: RecipientReply) -> str:
    code = "null" if r.code is None else str(int(r.code))
    enhanced = "null" if r.enhanced_code is None else _quote(r.enhanced_code)
    return (
        f'{{"recipient":{_quote(r.recipient)},"code":{code},'
        f'"enhanced_code":{enhanced},"text":{_quote(r.text)}}}'
    )


def load_replies(text: str | None) -> list[RecipientReply]:
    """The replies stored by :func:`dump_replies`; an unreadable value reads as none."""
    if not text:
        return []
    try:
        loaded = json.loads(text)
        return [
            RecipientReply(
                recipient=str(item["recipient"]),
                code=int(item["code"]) if item.get("code") is not None else None,
                enhanced_code=item.get("enhanced_code"),
                text=str(item.get("text") or ""),
            )
            for item in loaded
        ]
    except (ValueError, TypeError, KeyError):
        return []
