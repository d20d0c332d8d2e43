"""postroom: queued email for Python.

Build an email with :class:`Email` and hand it off with ``enqueue()``, ``send_later("5m")`` or
``send_at(when)``; a separate ``postroom serve`` process stores and delivers it. There is no
synchronous ``send()``.

>>> from postroom import Email
>>> e = Email(from_="app@example.com", to="alice@example.org", subject="Hi", text="Hello")
>>> e.to_bytes().startswith(b"")
True
"""

from __future__ import annotations

from postroom.client import Outbox, configure, flush
from postroom.client.aio import aflush
from postroom.errors import (
    AddressError,
    BufferFullError,
    ConfigError,
    HeaderError,
    IngestFailed,
    LimitError,
    MessageError,
    NotFoundError,
    ParseError,
    PayloadError,
    PostroomError,
    QueueError,
    StoreError,
)
from postroom.message import Attachment, Email

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "Attachment",
    "BufferFullError",
    "ConfigError",
    "Email",
    "HeaderError",
    "IngestFailed",
    "LimitError",
    "MessageError",
    "NotFoundError",
    "Outbox",
    "ParseError",
    "PayloadError",
    "PostroomError",
    "QueueError",
    "StoreError",
    "__version__",
    "aflush",
    "configure",
    "flush",
]
