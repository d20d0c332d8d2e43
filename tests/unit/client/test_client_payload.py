"""The wire format the pusher writes: ``encode_email_json`` gives the bytes ``encode`` gives."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.durations import MAX_DURATION
from postroom.errors import MessageError, PayloadError
from postroom.message import Email
from postroom.payload import (
    ID_PATTERN,
    LATEST_TIME,
    PAYLOAD_VERSION,
    decode,
    decode_email,
    encode,
    encode_email_json,
    is_message_id,
    new_message_id,
)

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


def _payload(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "id": new_message_id(),
        "queued_at": QUEUED_AT.isoformat(),
        "send_after": QUEUED_AT.isoformat(),
        "email": {},
    }
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "message_id",
    ["", "a\r\nb", "x" * 65, 'a"b\\c', "\x1b]0;title\x07", "é", "a b", 7, None, ["a"]],
)
def test_ids_outside_the_documented_alphabet_are_refused(message_id: object) -> None:
    assert not is_message_id(message_id)
    with pytest.raises(PayloadError, match="payload field 'id'"):
        decode(_payload(id=message_id))


@pytest.mark.parametrize("message_id", ["01JD0000000000000000000000", "kept-1", "a.b_c", "x" * 64])
def test_ids_inside_the_alphabet_are_read(message_id: str) -> None:
    assert re.fullmatch(ID_PATTERN, message_id)
    assert decode(_payload(id=message_id)).id == message_id


def test_generated_ids_match_the_documented_alphabet() -> None:
    assert all(is_message_id(new_message_id()) for _ in range(1000))


@pytest.mark.parametrize("version", [True, 1.0, "1", None, 2])
def test_the_version_must_be_the_integer_1(version: object) -> None:
    for parse in (decode, decode_email):
        with pytest.raises(PayloadError, match=r"payload version .* is not supported"):
            parse(_payload(v=version))
    with pytest.raises(MessageError, match=r"version .* is not supported"):
        Email.from_dict({**_email().to_dict(), "v": version})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("queued_at", "0001-01-01T00:00:00+01:00"),
        ("send_after", "0001-01-01T00:00:00+01:00"),
        ("send_after", "9999-12-31T23:59:59-01:00"),
        ("send_after", "9999-12-31T00:00:00+00:00"),
        ("queued_at", (LATEST_TIME + timedelta(seconds=1)).isoformat()),
    ],
)
def test_times_that_cannot_be_represented_are_refused(key: str, value: str) -> None:
    with pytest.raises(PayloadError, match=f"payload field '{key}'.*outside the times"):
        decode(_payload(**{key: value}))


def test_the_latest_time_still_leaves_room_for_any_duration() -> None:
    latest = decode(_payload(send_after=LATEST_TIME.isoformat())).send_after
    assert latest == LATEST_TIME
    assert latest + MAX_DURATION == datetime.max.replace(tzinfo=UTC)


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
