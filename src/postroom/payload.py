"""The queue wire format: what one queued email looks like between ``enqueue()`` and ingest.

A payload is UTF-8 JSON bytes::

    {"v": 1, "id": "01JD...", "queued_at": "2026-11-28T09:00:00.000000+00:00",
     "send_after": "2026-11-28T09:05:00.000000+00:00", "email": {...Email.to_dict()...}}

``v`` is the integer 1 (not ``true``, not ``1.0``). ``id`` is the message id that
``enqueue()`` returned: 1 to 64 characters from ``A-Z a-z 0-9 . _ -`` (:data:`ID_PATTERN`;
postroom makes 26-character ULIDs), so an id can never carry a control character into a log
line or a terminal. ``send_after`` is an absolute UTC time (``send_later``/``send_at`` resolve
durations and local times before the payload is built); both times lie between the years 1 and
:data:`LATEST_TIME`, so adding any configured duration to them stays representable.
:func:`decode` refuses anything else with :class:`~postroom.errors.PayloadError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from postroom._quick_init import quick_init
from postroom.durations import MAX_DURATION
from postroom.errors import MessageError, PayloadError

__all__ = [
    "ID_PATTERN",
    "LATEST_TIME",
    "MAX_IDEMPOTENCY_KEY",
    "PAYLOAD_VERSION",
    "QueuedEmail",
    "decode",
    "decode_email",
    "encode",
    "encode_email_json",
    "is_message_id",
    "keyed_message_id",
    "new_message_id",
]

PAYLOAD_VERSION = 1
#: what a message id may look like: 1 to 64 letters, digits, ``.``, ``_`` or ``-``
ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_ID = re.compile(ID_PATTERN)
#: the latest send time a payload may carry: an expiry up to :data:`MAX_DURATION` later must
#: still be a representable time
LATEST_TIME = datetime.max.replace(tzinfo=UTC) - MAX_DURATION
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every pair of base-32 digits, indexed by 10 bits: 5 lookups spell the 48-bit time part
_DIGIT_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
# a byte -> the digit of its low 5 bits; 256 is a multiple of 32, so random bytes give
# uniformly random digits (16 of them hold the 80 random bits of an id)
_DIGIT_OF_BYTE = bytes(ord(_CROCKFORD[byte % 32]) for byte in range(256))
# one encoder for every payload (json.dumps would build a new one per call)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


# The random parts of ids, spelled from os.urandom 256 at a time: one system call per id would
# release the GIL on every enqueue() and hand it to the pusher thread. Each part is used once
# (deque.popleft is atomic). A new process (after fork(), also one that ran no at-fork hooks,
# as under uWSGI) starts a stock of its own, so parent and child never share one.
_RANDOM_PARTS: deque[str] = deque()
_random_pid = 0
# (millisecond, its 10 digits): ids made in the same millisecond share the time part's text
_time_part: tuple[int, str] = (-1, "")


def _random_part() -> str:
    global _random_pid
    pid = os.getpid()
    if pid != _random_pid:
        _RANDOM_PARTS.clear()  # before the pid: a racing thread never sees the parent's parts
        _random_pid = pid
    try:
        return _RANDOM_PARTS.popleft()
    except IndexError:
        digits = os.urandom(16 * 256).translate(_DIGIT_OF_BYTE).decode("ascii")
        _RANDOM_PARTS.extend([digits[i : i + 16] for i in range(16, 4096, 16)])
        return digits[:16]


def new_message_id() -> str:
    """A new 26-character, time-ordered, unique id (ULID layout: 48-bit ms time + 80 random bits).

    Ids sort by creation time, which keeps database index inserts local.
    """
    global _time_part
    ms = time.time_ns() // 1_000_000
    cached = _time_part
    if cached[0] != ms:
        digits = "".join([_DIGIT_PAIRS[(ms >> shift) & 0x3FF] for shift in (40, 30, 20, 10, 0)])
        cached = _time_part = (ms, digits)
    return cached[1] + _random_part()


#: longest idempotency key, in characters
MAX_IDEMPOTENCY_KEY = 200
# What a keyed id is made of: a hash of the key under this label, so that nothing but a key
# given to postroom spells the same id.
_KEY_LABEL = b"postroom idempotency key\x00"


def keyed_message_id(key: str) -> str:
    """The message id of the email queued with idempotency key ``key``.

    The same key gives the same id in every process on every machine, so the database, whose
    insert is idempotent on the id, stores at most one message per key. The id is ``k``
    followed by 25 base-32 digits of the key's SHA-256 (125 bits): a lower-case first letter,
    which no generated ULID has, so a keyed id never meets a generated one.

    Raises :class:`~postroom.errors.MessageError` for a key that is not a string of 1 to
    :data:`MAX_IDEMPOTENCY_KEY` characters of valid Unicode text.

    >>> keyed_message_id("order-1234/confirmation") == keyed_message_id("order-1234/confirmation")
    True
    """
    digest = hashlib.sha256(_KEY_LABEL + _key_bytes(key)).digest()
    number = int.from_bytes(digest[:16]) >> 3  # 125 bits: 25 digits of 5 bits
    return "k" + "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(120, -1, -5))


def _key_bytes(key: object) -> bytes:
    if not isinstance(key, str):
        raise MessageError(f"idempotency_key must be a string, not {type(key).__name__}")
    if not key:
        raise MessageError("idempotency_key must not be empty")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise MessageError(
            f"idempotency_key is {len(key)} characters long; at most {MAX_IDEMPOTENCY_KEY} "
            "are allowed (hash a longer key yourself)"
        )
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageError(f"idempotency_key is not valid Unicode text ({exc.reason})") from None


@quick_init
@dataclass(frozen=True, slots=True)
class QueuedEmail:
    """One decoded payload. ``email`` is the ``Email.to_dict()`` form, not yet validated."""

    id: str
    queued_at: datetime
    send_after: datetime
    email: dict[str, Any]


def encode(
    message_id: str, email: dict[str, Any], send_after: datetime, queued_at: datetime
) -> bytes:
    """Serialise one queued email. Both times must be timezone-aware."""
    return encode_email_json(message_id, _JSON.encode(email), send_after, queued_at)


def encode_email_json(
    message_id: str, email_json: str, send_after: datetime, queued_at: datetime
) -> bytes:
    """:func:`encode` for an email already serialised: ``email_json`` is the compact JSON text
    of its dict (``Email.to_json()``), embedded as is. Both times must be timezone-aware."""
    queued = queued_at.astimezone(UTC).isoformat()
    due = queued if send_after is queued_at else send_after.astimezone(UTC).isoformat()
    return (
        f'{{"v":{PAYLOAD_VERSION},"id":{_JSON.encode(message_id)},"queued_at":"{queued}",'
        f'"send_after":"{due}","email":{email_json}}}'
    ).encode()


def is_message_id(value: object) -> bool:
    """Whether ``value`` is a string a message id may be (see :data:`ID_PATTERN`)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _time(doc: dict[str, Any], key: str) -> datetime:
    value = doc.get(key)
    if not isinstance(value, str):
        raise PayloadError(f"payload field {key!r} is missing or not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(f"payload field {key!r}: {value!r} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise PayloadError(f"payload field {key!r}: {value!r} has no time zone")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc > LATEST_TIME:
        raise PayloadError(
            f"payload field {key!r}: {value!r} is outside the times postroom can represent "
            f"(year 1 to {LATEST_TIME.isoformat()})"
        )
    return utc


def decode(raw: bytes) -> QueuedEmail:
    """Parse a payload; raise :class:`PayloadError` naming what is wrong."""
    doc = _document(raw)
    message_id = doc.get("id")
    if not is_message_id(message_id):
        shown = repr(message_id)[:80]
        raise PayloadError(
            f"payload field 'id': {shown} is not a message id (1 to 64 of A-Z a-z 0-9 . _ -)"
        )
    assert isinstance(message_id, str)
    return QueuedEmail(
        id=message_id,
        queued_at=_time(doc, "queued_at"),
        send_after=_time(doc, "send_after"),
        email=doc["email"],
    )


def decode_email(raw: bytes) -> dict[str, Any]:
    """Only the email of a payload (what delivery needs); raise :class:`PayloadError`."""
    email: dict[str, Any] = _document(raw)["email"]
    return email


def _document(raw: bytes) -> dict[str, Any]:
    """The payload's JSON object, checked for its version and an ``email`` object."""
    try:
        doc = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("payload is not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version != PAYLOAD_VERSION:  # True == 1 == 1.0
        version = repr(version)[:40]
        raise PayloadError(
            f"payload version {version} is not supported (this postroom reads {PAYLOAD_VERSION})"
        )
    if not isinstance(doc.get("email"), dict):
        raise PayloadError("payload field 'email' is missing or not an object")
    return doc
