"""The postroom exception tree.

Every error postroom raises on purpose derives from :class:`PostroomError`, so an application
can catch the whole family with one ``except``. Third-party exceptions (redis, psycopg,
smtplib, SQLAlchemy) are translated once, in the module that calls the library, and chained
with ``raise ... from`` so the original stays visible.

::

    PostroomError
    ├── ConfigError            bad configuration: unknown key, wrong type, bad duration
    ├── MessageError           an Email that cannot be built, rendered or serialised
    │   ├── HeaderError        a header name or value that is not allowed (e.g. CR/LF injection)
    │   ├── AddressError       an address that does not parse or cannot be sent without SMTPUTF8
    │   ├── LimitError         over email.max-message-size or email.max-recipients
    │   └── ParseError         a raw message that cannot be read at all
    ├── PayloadError           a queued payload that cannot be decoded (unknown version, bad JSON)
    ├── QueueError             the queue engine failed (connection refused, timeout)
    │   └── BufferFullError    the in-process buffer stayed full longer than the enqueue timeout
    ├── StoreError             the database failed or refused an operation
    │   └── NotFoundError      no message with that id
    └── IngestFailed           the server's ingest cannot go on (the server stops, exit code 1)

A delivery's outcome is not an exception: a transport reports every reply, refusal, timeout
and relay failure as a ``DeliveryResult`` (:mod:`postroom.transport.base`).
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "BufferFullError",
    "ConfigError",
    "HeaderError",
    "IngestFailed",
    "LimitError",
    "MessageError",
    "NotFoundError",
    "ParseError",
    "PayloadError",
    "PostroomError",
    "QueueError",
    "StoreError",
]


class PostroomError(Exception):
    """Raised for every failure postroom reports on purpose; the root of the tree."""


class ConfigError(PostroomError):
    """Raised when a configuration value is unknown, of the wrong type or out of range.

    The message starts with the key path, e.g. ``email.server.max-time: "1x" is not a duration``.
    """

    def __init__(self, key_path: str, problem: str) -> None:
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{key_path}: {problem}" if key_path else problem)


class MessageError(PostroomError, ValueError):
    """Raised when an Email cannot be built, rendered or serialised as asked."""


class HeaderError(MessageError):
    """Raised when a header name is invalid or a header value contains CR or LF."""


class AddressError(MessageError):
    """Raised when an address does not parse, or needs SMTPUTF8 that was not asked for."""


class LimitError(MessageError):
    """Raised by ``enqueue()`` when an email is over a configured limit: its rendered size
    (``email.max-message-size``) or its number of recipients (``email.max-recipients``).

    ``key`` names the configuration key, ``value`` the email's size or count, ``limit`` the
    configured limit.
    """

    def __init__(self, key: str, value: int, limit: int, problem: str) -> None:
        self.key = key
        self.value = value
        self.limit = limit
        super().__init__(problem)


class ParseError(MessageError):
    """Raised when a raw message cannot be read at all."""


class PayloadError(PostroomError, ValueError):
    """Raised when a queued payload cannot be decoded: bad JSON, unknown version, missing field."""


class QueueError(PostroomError):
    """Raised when the queue engine cannot push, take or acknowledge (server down, timeout)."""


class BufferFullError(QueueError):
    """Raised when ``enqueue()`` waited the configured time and the buffer is still full."""


class StoreError(PostroomError):
    """Raised when the database fails or refuses an operation."""


class NotFoundError(StoreError, LookupError):
    """Raised when no message has the given id."""


class IngestFailed(PostroomError):
    """Raised by the server's ingest loop when it cannot go on: several rounds in a row failed
    with errors that are neither the database's nor the queue's, or the loop itself broke.
    ``postroom serve`` then stops and exits non-zero instead of running on without ingest.
    """
