"""ParsedEmails: the Emails ingest parsed, handed to delivery once, within a byte budget."""

from __future__ import annotations

from datetime import UTC, datetime

from postroom.dispatch.parsed import ParsedEmails, render_payload
from postroom.message import Email
from postroom.payload import encode

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def payload_of(subject: str) -> tuple[bytes, Email]:
    email = Email(from_="a@example.com", to=["b@example.org"], subject=subject, text="Hi")
    email.ensure_identity()
    return encode(f"id-{subject}", email.to_dict(), NOW, NOW), email


def test_a_kept_email_renders_the_same_message_as_its_payload() -> None:
    payload, email = payload_of("same")
    parsed = ParsedEmails()
    parsed.put(payload, email)
    assert parsed.render(payload) == render_payload(payload)


def test_an_email_is_taken_once_then_the_payload_is_parsed() -> None:
    payload, email = payload_of("once")
    parsed = ParsedEmails()
    parsed.put(payload, email)
    assert parsed.take(payload) is email
    assert parsed.take(payload) is None
    assert parsed.render(payload) == render_payload(payload)  # a miss parses the payload
    assert len(parsed) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_budget_keeps_the_older_entries_until_they_are_stale() -> None:
    entries = [payload_of(f"m{i}") for i in range(5)]
    clock = Clock()
    parsed = ParsedEmails(budget_bytes=4 * len(entries[0][0]) * 3 + 10, max_age_s=60, clock=clock)
    for payload, email in entries[:4]:
        parsed.put(payload, email)
    assert len(parsed) == 3  # the fourth did not fit: the oldest are delivered first
    assert parsed.take(entries[3][0]) is None
    clock.now = 61
    parsed.put(*entries[4])  # room is needed: entries over a minute old go
    assert len(parsed) == 1
    assert parsed.take(entries[4][0]) is entries[4][1]


def test_taking_frees_room() -> None:
    entries = [payload_of(f"t{i}") for i in range(3)]
    parsed = ParsedEmails(budget_bytes=4 * len(entries[0][0]) * 2 + 10)
    parsed.put(*entries[0])
    parsed.put(*entries[1])
    assert parsed.take(entries[0][0]) is entries[0][1]
    parsed.put(*entries[2])
    assert [parsed.take(p) is e for p, e in entries[1:]] == [True, True]


def test_a_payload_larger_than_the_budget_is_not_kept() -> None:
    payload, email = payload_of("big")
    parsed = ParsedEmails(budget_bytes=len(payload))
    parsed.put(payload, email)
    assert len(parsed) == 0
