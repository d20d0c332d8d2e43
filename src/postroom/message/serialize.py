"""The dict form of an Email (``Email.to_dict()`` writes it): what travels through the queue.

Version 1 (every key is always present in ``to_dict`` output)::

    {"v": 1, "from": str|null, "sender": str|null, "to": [str], "cc": [str], "bcc": [str],
     "reply_to": [str], "read_receipt": [str], "subject": str, "text": str|null,
     "html": str|null, "headers": {str: str}, "priority": int, "smtputf8": bool,
     "auto_text": bool, "message_id": "<...>", "date": "2026-11-28T09:00:00+00:00",
     "attachments": [{"filename": str, "content_type": str, "inline": bool,
                      "content_id": str|null, "content": base64 str}]}

``from_dict`` accepts missing keys (their defaults apply) but refuses an unknown version or an
unknown key, and checks every value as the constructor does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from postroom.errors import MessageError
from postroom.message.attachment import Attachment

if TYPE_CHECKING:
    from postroom.message.email import Email

__all__ = ["VERSION", "from_dict"]

VERSION = 1
_FIELDS = {
    "from": "from_",
    "sender": "sender",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply_to": "reply_to",
    "read_receipt": "read_receipt",
    "subject": "subject",
    "text": "text",
    "html": "html",
    "headers": "headers",
    "priority": "priority",
    "smtputf8": "smtputf8",
    "auto_text": "auto_text",
    "message_id": "message_id",
}
_KNOWN_KEYS = frozenset({*_FIELDS, "v", "date", "attachments"})
_ATTACHMENT_KEYS = frozenset({"filename", "content_type", "inline", "content_id", "content"})


def _attachment(index: int, data: object) -> Attachment:
    where = f"attachments[{index}]"
    if not isinstance(data, Mapping):
        raise MessageError(f"{where} must be an object")
    unknown = set(data) - _ATTACHMENT_KEYS
    if unknown:
        raise MessageError(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    content = data.get("content", "")
    if not isinstance(content, str):
        raise MessageError(f"{where}.content must be a base64 string")
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError(f"{where}.content is not valid base64 ({exc})") from None
    return Attachment(
        filename=data.get("filename"),  # type: ignore[arg-type]  # checked by Attachment
        content=raw,
        content_type=data.get("content_type", "application/octet-stream"),
        inline=data.get("inline", False),
        content_id=data.get("content_id"),
    )


def _date(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError("date must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MessageError(f"date {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise MessageError(f"date {value!r} has no time zone")
    return parsed


def from_dict(data: Mapping[str, Any], cls: type[Email]) -> Email:
    """Rebuild an Email of class ``cls``; raise :class:`MessageError` naming the first
    problem."""
    if not isinstance(data, Mapping):
        raise MessageError(f"email data must be a dict, not {type(data).__name__}")
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # True == 1 == 1.0
        raise MessageError(
            f"email data version {repr(version)[:40]} is not supported "
            f"(this postroom reads {VERSION})"
        )
    if not _KNOWN_KEYS.issuperset(data):
        unknown = set(data) - _KNOWN_KEYS
        raise MessageError(f"email data has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    kwargs = {_FIELDS[key]: value for key, value in data.items() if key in _FIELDS}
    attachments = data.get("attachments") or []
    if not isinstance(attachments, list):
        raise MessageError("attachments must be a list")
    return cls(
        **kwargs,
        date=_date(data.get("date")),
        attachments=[_attachment(i, item) for i, item in enumerate(attachments)],
    )
