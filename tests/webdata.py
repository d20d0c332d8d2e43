"""Messages in a real store for the dashboard's tests: queued, sent, failed, with attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom import Email
from postroom.payload import encode, new_message_id
from postroom.store import AttemptRecord, Finish, NewMessage, RecipientReply, Store

__all__ = ["add_message", "deliver", "utc"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def add_message(
    store: Store,
    *,
    created_at: datetime,
    subject: str = "Hello",
    sender: str = "app@example.com",
    to: tuple[str, ...] = ("alice@example.com",),
    html: str | None = None,
    attachment: tuple[bytes, str] | None = None,
    send_after: datetime | None = None,
) -> str:
    """Insert one queued message built from a real :class:`Email`; return its id."""
    email = Email(from_=sender, to=list(to), subject=subject, text="Hello there", html=html)
    if attachment is not None:
        email.attach(attachment[0], attachment[1])
    message_id = new_message_id()
    due = send_after or created_at
    row = NewMessage(
        id=message_id,
        status="queued",
        priority=0,
        created_at=created_at,
        send_after=due,
        expires_at=due + timedelta(hours=1),
        mail_from=sender,
        recipients=list(to),
        subject=subject,
        message_id=email.message_id,
        data=encode(message_id, email.to_dict(), due, created_at),
    )
    assert store.insert_messages([row], now=created_at) == 1
    return message_id


def deliver(store: Store, message_id: str, *, at: datetime, outcome: str) -> None:
    """Claim ``message_id`` (it must be the only due row) and finish it: ``sent`` (250 from
    every recipient) or ``failed`` (a permanent 550 refusal)."""
    claimed = store.claim_due("test-dispatcher", 1, 60, at)
    assert [c.id for c in claimed] == [message_id]
    rcpts = claimed[0].recipients
    ok = outcome == "sent"
    code, text = (250, "2.0.0 queued as X1") if ok else (550, "5.1.1 no such user")
    replies = [RecipientReply(r, code, text[:5], text[6:]) for r in rcpts]
    attempt = AttemptRecord(
        started_at=at,
        ended_at=at + timedelta(seconds=1),
        outcome="sent" if ok else "permanent",
        code=code,
        enhanced_code=text[:5],
        reply=text[6:],
        dispatcher="test-dispatcher",
        recipients=rcpts,
        replies=replies,
    )
    finish = Finish(
        id=message_id,
        status="sent" if ok else "failed",
        attempt=attempt,
        count_fail=not ok,
        failure=None if ok else f"refused by the server: {rcpts[0]}: 550 5.1.1 no such user",
        next_attempt_at=None,
        pending_recipients=None if ok else rcpts,
        sent_at=at + timedelta(seconds=1) if ok else None,
    )
    assert store.finish("test-dispatcher", [finish], now=at + timedelta(seconds=1)) == 1
