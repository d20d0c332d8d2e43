"""The wire format the pusher writes: ``encode_email_json`` gives the bytes ``encode`` gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.errors import PayloadError
from postroom.message import Email
from postroom.payload import PAYLOAD_VERSION, decode, decode_email, encode, encode_email_json

QUEUED_AT = datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=UTC)


def _email() -> Email:
    email = Email(
        from_="Jörg <jorg@exämple.com>",
        to=["ünï@example.com"],
        subject='Grüße "quoted" \\ ✓',
        text="naïve\nbody 😀",
        headers={"X-Note": "é"},
        smtputf8=True,
    )
    email.attach(b"\x00\xff", "a.bin")
    return email


@pytest.mark.parametrize(
    "send_after",
    [
        QUEUED_AT,  # the same object: sent right away
        QUEUED_AT + timedelta(minutes=5),
        datetime(2026, 11, 28, 12, 0, tzinfo=timezone(timedelta(hours=3))),  # converted to UTC
    ],
)
def test_payload_bytes_are_compact_utf8_json_of_the_documented_object(
    send_after: datetime,
) -> None:
    email = _email()
    reference = json.dumps(
        {
            "v": PAYLOAD_VERSION,
            "id": "01JD0000000000000000000000",
            "queued_at": QUEUED_AT.isoformat(),
            "send_after": send_after.astimezone(UTC).isoformat(),
            "email": email.to_dict(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    from_dict = encode("01JD0000000000000000000000", email.to_dict(), send_after, QUEUED_AT)
    from_json = encode_email_json(
        "01JD0000000000000000000000", email.to_json(), send_after, QUEUED_AT
    )
    assert from_dict == from_json == reference
    decoded = decode(from_json)
    assert decoded.email == email.to_dict()
    assert decoded.send_after == send_after and decoded.queued_at == QUEUED_AT


def test_an_id_that_needs_escaping_is_escaped() -> None:
    payload = encode_email_json('a"b\\c', "{}", QUEUED_AT, QUEUED_AT)
    assert decode(payload).id == 'a"b\\c'


def test_decode_email_gives_the_email_alone() -> None:
    email = _email()
    payload = encode("m1", email.to_dict(), QUEUED_AT, QUEUED_AT)
    assert decode_email(payload) == email.to_dict()
    assert Email.from_dict(decode_email(payload)).to_bytes() == email.to_bytes()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xff", "not UTF-8 JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 99, "email": {}}', "version 99 is not supported"),
        (b'{"v": 1, "email": "x"}', "'email' is missing or not an object"),
    ],
)
def test_decode_and_decode_email_name_the_same_problems(raw: bytes, problem: str) -> None:
    for parse in (decode, decode_email):
        with pytest.raises(PayloadError, match=problem):
            parse(raw)
