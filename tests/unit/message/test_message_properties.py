"""Property-based round trips with arbitrary Unicode.

``from_dict(to_dict(e))`` must give back exactly the same email. ``from_bytes(to_bytes(e))``
gives back the same fields after these documented normalisations:

* bodies: line endings become ``\\n`` (CRLF and lone CR included); "no body" reads back as
  either ``None`` or ``""``;
* display names: surrounding whitespace is dropped (an address's name is a phrase);
* domains come back in their punycode (ASCII) form, as written in the message;
* Bcc is not in the message, so it reads back empty;
* with an HTML body, inline attachments come back first (they live in the related part),
  each group in its original order.

Every rendered message is also checked against the wire rules (ASCII only, CRLF, no line over
998 octets, no Bcc) by the ``check_wire`` fixture the rendering tests share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.message import Attachment, Email
from postroom.message.addresses import parse_address
from postroom.message.html_text import html_to_text

WireCheck = Callable[[bytes], None]

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_SURROGATES = st.characters(blacklist_categories=("Cs",))
ONE_LINE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"))  # names refuse control characters

header_text = st.text(ONE_LINE, max_size=60)
body_text = st.text(NO_SURROGATES, max_size=300)
atom = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-+", min_size=1, max_size=10)
local_part = st.lists(atom, min_size=1, max_size=2).map(".".join)
domain = st.sampled_from(
    ["example.com", "mail.example.org", "exämple.com", "bücher.example", "日本.example"]
)


@st.composite
def address(draw: st.DrawFn) -> str:
    spec = f"{draw(local_part)}@{draw(domain)}"
    name = draw(st.text(NAME_CHARS, max_size=40))
    if not name:
        return spec
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{spec}>'


@st.composite
def attachment(draw: st.DrawFn) -> Attachment:
    return Attachment(
        filename=draw(header_text.filter(lambda name: name.strip() != "")),
        content=draw(st.binary(max_size=300)),
        content_type=draw(
            st.sampled_from(
                [
                    "application/octet-stream",
                    "image/png",
                    "text/plain; charset=utf-8",
                    "application/pdf",
                ]
            )
        ),
        inline=draw(st.booleans()),
    )


@st.composite
def email(draw: st.DrawFn) -> Email:
    return Email(
        from_=draw(address()),
        to=draw(st.lists(address(), min_size=1, max_size=3)),
        cc=draw(st.lists(address(), max_size=2)),
        bcc=draw(st.lists(address(), max_size=2)),
        reply_to=draw(st.lists(address(), max_size=1)),
        subject=draw(header_text),
        text=draw(st.none() | body_text),
        html=draw(st.none() | body_text),
        headers=draw(st.dictionaries(st.sampled_from(["X-Tag", "X-Note", "List-Id"]), header_text)),
        attachments=draw(st.lists(attachment(), max_size=3)),
        priority=draw(st.integers(-5, 5)),
        auto_text=False,
    )


def body(value: str | None) -> str:
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


def address_key(text: str) -> tuple[str, str, str]:
    parsed = parse_address(text)
    return parsed.name.strip(), parsed.local, parsed.ascii_domain


def attachment_key(item: Attachment) -> tuple[Any, ...]:
    return (item.filename, item.content, item.content_type, item.inline, item.content_id)


@SETTINGS
@given(email())
def test_dict_round_trip_is_exact(original: Email) -> None:
    copy = Email.from_dict(original.to_dict())
    assert copy.to_dict() == original.to_dict()
    assert copy.to_bytes() == original.to_bytes()


@SETTINGS
@given(email())
def test_bytes_round_trip_keeps_every_field(check_wire: WireCheck, original: Email) -> None:
    raw = original.to_bytes()
    check_wire(raw)
    parsed = Email.from_bytes(raw)
    assert address_key(parsed.from_ or "") == address_key(original.from_ or "")
    for field in ("to", "cc", "reply_to"):
        assert [address_key(a) for a in getattr(parsed, field)] == [
            address_key(a) for a in getattr(original, field)
        ], field
    assert parsed.bcc == []
    assert parsed.subject == original.subject
    assert body(parsed.text) == body(original.text)
    assert body(parsed.html) == body(original.html)
    assert parsed.headers == original.headers
    expected = original.attachments
    if original.html:
        expected = [a for a in expected if a.inline] + [a for a in expected if not a.inline]
    assert [attachment_key(a) for a in parsed.attachments] == [attachment_key(a) for a in expected]
    assert (parsed.message_id, parsed.date) == (original.message_id, original.date)


@SETTINGS
@given(body_text.filter(lambda html: html.strip() != ""), header_text)
def test_generated_text_alternative_reads_back(
    check_wire: WireCheck, html: str, subject: str
) -> None:
    original = Email(from_="a@example.com", to="b@example.com", subject=subject, html=html)
    raw = original.to_bytes()
    check_wire(raw)
    parsed = Email.from_bytes(raw)
    assert body(parsed.html) == body(html)
    assert body(parsed.text) == html_to_text(html)
