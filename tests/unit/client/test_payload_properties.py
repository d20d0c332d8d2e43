"""Property tests over queue payloads: a payload with any one field replaced by arbitrary JSON
(or removed, or joined by an unknown key) is refused with an error that names the field, or it
renders a message that keeps every wire rule and reads back as it says."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from postroom.errors import MessageError, PayloadError
from postroom.message import Email
from postroom.payload import decode, encode, new_message_id
from tests.hypothesis_profiles import PROFILE
from tests.readback import check_postroom, check_stdlib, wire_rules

QUEUED_AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# values chosen to sit near what the fields accept
near_misses = st.sampled_from(
    [
        True,
        1.0,
        "1",
        "",
        "a@example.com",
        "alice@example.com<bob@evil.com>",
        ["a@exa\u200bmple.com"],
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59+00:00",
        "2026-12-01T09:00:00",
        {"Resent-Bcc": "x@example.com"},
        {"X-Tag": "a\r\nBcc: x@example.com"},
        [{"filename": "a", "content": "!!"}],
        [{"filename": "a", "content": "", "content_type": "message/rfc822", "x": 1}],
        "<order-1234@shop.example>",
        "x" * 65,
        "a\nb",
    ]
)
TOP_KEYS = ["v", "id", "queued_at", "send_after", "email"]
EMAIL_KEYS = list(Email(from_="a@example.com", to="b@example.com").to_dict())
# key -> words an error about it must contain (one is enough)
ALIASES = {"v": ("version",), "from": ("from",), "headers": ("header",)}


def base_email() -> dict[str, Any]:
    e = Email(
        from_="Shop <shop@example.com>",
        to=["alice@example.com", '"Doe, John" <john@exämple.com>'],
        bcc="audit@example.com",
        subject="Grüße",
        text="hello",
        html="<p>hello</p>",
        headers={"X-Tag": "t"},
    )
    e.attach(b"\x89PNG", "logo.png", inline=True)
    e.attach(b"From: x@example.com\r\n\r\nfwd\r\n", "fwd.eml", "message/rfc822")
    return e.to_dict()


@st.composite
def payload(draw: st.DrawFn) -> tuple[str, bytes]:
    """(the key changed, the payload bytes)."""
    doc: dict[str, Any] = json.loads(
        encode(new_message_id(), base_email(), QUEUED_AT, QUEUED_AT).decode()
    )
    inside_email = draw(st.booleans())
    target = doc["email"] if inside_email else doc
    key = draw(st.sampled_from(EMAIL_KEYS if inside_email else TOP_KEYS) | st.text(max_size=6))
    action = draw(st.sampled_from(["replace", "replace", "near", "delete"]))
    if action == "delete":
        target.pop(key, None)
    else:
        target[key] = draw(json_value if action == "replace" else near_misses)
    return key, json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


def names(key: str, error: Exception) -> None:
    message = str(error)
    words = ALIASES.get(key, (key,)) if key else ()
    assert any(word in message for word in words) or not words, f"{key!r}: {message!r}"


@PROFILE
@given(payload())
def test_payloads_are_refused_naming_the_field_or_render_safely(case: tuple[str, bytes]) -> None:
    key, raw = case
    try:
        email = Email.from_dict(decode(raw).email)
        rendered = email.to_bytes()
    except (PayloadError, MessageError) as error:
        event("refused")
        names(key, error)
        return
    event("rendered")
    wire_rules(rendered, email)
    check_stdlib(rendered, email)
    check_postroom(rendered, email)
    assert Email.from_dict(email.to_dict()).to_bytes() == rendered
