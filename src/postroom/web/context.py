"""What every request handler of the dashboard works with, built once per application."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from postroom.errors import PostroomError
from postroom.message import Email
from postroom.payload import decode_email
from postroom.store import Store
from postroom.store.browse import Browser
from postroom.web.mailbox import Mailbox
from postroom.web.metrics import DatabaseCollector
from postroom.web.security import Access

__all__ = ["WebContext", "rendered_message", "utc_now"]

#: a dispatcher silent for this many heartbeats is dead (as the dispatchers themselves judge)
DEAD_AFTER_HEARTBEATS = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WebContext:
    """The store, its read-only view, the settings the actions need, and the dev mailbox."""

    store: Store
    browser: Browser
    access: Access
    max_time: timedelta
    heartbeat: timedelta
    collector: DatabaseCollector
    mailbox: Mailbox | None = None
    now: Callable[[], datetime] = utc_now

    @property
    def dead_after_s(self) -> float:
        return DEAD_AFTER_HEARTBEATS * self.heartbeat.total_seconds()

    def payload(self, message_id: str) -> bytes:
        """The stored payload of a message; ``KeyError`` when there is none."""
        return self.browser.payload(message_id)


def rendered_message(payload: bytes) -> tuple[bytes | None, str | None]:
    """The RFC 5322 bytes a payload is sent as, or ``None`` and why it cannot be rendered (a
    poison payload is stored as received)."""
    try:
        return Email.from_dict(decode_email(payload)).to_bytes(), None
    except (PostroomError, ValueError, TypeError, KeyError) as exc:
        return None, f"the stored payload cannot be rendered as an email: {exc}"
