"""to_dict / from_dict: the versioned, JSON-safe, lossless form that travels through the queue."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from postroom.errors import AddressError, HeaderError, MessageError
from postroom.message import Email


def full_email() -> Email:
    email = Email(
        from_="Jörg Müller <jorg@exämple.com>",
        to=["alice@example.com", '"Doe, John" <j@example.com>'],
        cc="carol@example.com",
        bcc=["audit@example.com"],
        reply_to="help@example.com",
        subject="Grüße 📦",
        text="plain\r\nline two",
        html="<p>rich</p>",
        headers={"X-Campaign": "welcome"},
        sender="bounces@example.com",
        read_receipt="jorg@exämple.com",
        priority=7,
        auto_text=False,
    )
    email.attach(bytes(range(256)), "blob.bin")
    email.attach(b"\x89PNG", "logo.png", inline=True)
    return email


def test_to_dict_is_versioned_and_json_safe() -> None:
    email = full_email()
    data = email.to_dict()
    assert data["v"] == 1
    decoded = json.loads(json.dumps(data))
    assert decoded == data
    assert data["attachments"][0]["content"] == base64.b64encode(bytes(range(256))).decode()
    assert data["from"] == "Jörg Müller <jorg@exämple.com>"
    assert data["priority"] == 7


def test_to_dict_assigns_the_identity_that_rendering_uses() -> None:
    email = Email(from_="a@example.com", to="b@example.com")
    data = email.to_dict()
    assert data["message_id"] == email.message_id
    assert datetime.fromisoformat(data["date"]) == email.date
    raw = email.to_bytes()
    assert f"Message-ID: {data['message_id']}".encode() in raw
    assert email.to_dict()["message_id"] == data["message_id"]


def test_round_trip_is_lossless() -> None:
    email = full_email()
    data = json.loads(json.dumps(email.to_dict()))
    copy = Email.from_dict(data)
    assert copy.to_dict() == email.to_dict()
    assert copy.to_bytes() == email.to_bytes()
    assert copy.bcc == ["audit@example.com"] and copy.sender == "bounces@example.com"
    assert copy.attachments[1].inline and copy.attachments[1].content_id == (
        email.attachments[1].content_id
    )
    assert copy.text == "plain\r\nline two"  # kept exactly, not normalised


def test_to_dict_is_a_snapshot() -> None:
    email = full_email()
    data = email.to_dict()
    email.to.append("late@example.com")
    email.headers["X-Late"] = "1"
    assert "late@example.com" not in data["to"]
    assert "X-Late" not in data["headers"]


def test_missing_keys_take_their_defaults() -> None:
    email = Email.from_dict({"v": 1, "from": "a@example.com", "to": ["b@example.com"]})
    assert (email.subject, email.text, email.priority, email.attachments) == ("", None, 0, [])
    email.validate()


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_unknown_version_is_refused(version: object) -> None:
    data: dict[str, Any] = {"from": "a@example.com"}
    if version is not None:
        data["v"] = version
    with pytest.raises(MessageError, match="version"):
        Email.from_dict(data)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"surprise": 1}, MessageError, "unknown keys: surprise"),
        ({"to": ["not an address"]}, AddressError, "not an address"),
        ({"subject": "a\r\nBcc: x@example.com"}, HeaderError, "line break"),
        ({"priority": "high"}, MessageError, "priority"),
        ({"date": "2026-01-01T00:00:00"}, MessageError, "time zone"),
        ({"date": "tomorrow"}, MessageError, "ISO 8601"),
        ({"attachments": [{"filename": "a", "content": "***"}]}, MessageError, "base64"),
        ({"attachments": [{"filename": "a", "content": "", "x": 1}]}, MessageError, "unknown"),
        ({"attachments": "nope"}, MessageError, "list"),
    ],
)
def test_bad_data_is_refused_naming_the_problem(
    change: dict[str, Any], error: type[Exception], match: str
) -> None:
    data = full_email().to_dict()
    data.update(change)
    with pytest.raises(error, match=match):
        Email.from_dict(data)


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(MessageError, match="must be a dict"):
        Email.from_dict([1, 2])  # type: ignore[arg-type]


def test_date_offset_is_kept() -> None:
    email = Email(from_="a@example.com", to="b@example.com")
    email.date = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert Email.from_dict(email.to_dict()).date == email.date


def test_from_dict_on_a_subclass_gives_the_subclass() -> None:
    class Receipt(Email):
        __slots__ = ()

    original = Email(from_="a@example.com", to=["b@example.com"], subject="s", text="t")
    rebuilt = Receipt.from_dict(original.to_dict())
    assert type(rebuilt) is Receipt
    assert rebuilt.to_bytes() == original.to_bytes()
