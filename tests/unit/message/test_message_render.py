"""Rendering, cross-checked with the standard library's parser (policy.default).

Every rendered message goes through ``parse_independently``, which first asserts the wire rules:
ASCII only, CRLF line endings, no line over 998 octets, no Bcc header.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from postroom.errors import MessageError
from postroom.message import Email

Parse = Callable[..., EmailMessage]
Tree = Callable[[EmailMessage], object]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8DwHwAFAAH/q842iQAAAABJRU5ErkJggg=="
)


def simple(**overrides: Any) -> Email:
    fields: dict[str, Any] = {
        "from_": "Ana <ana@example.com>",
        "to": "bo@example.com",
        "subject": "Hi",
    }
    fields.update(overrides)
    return Email(**fields)


def head(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")


# -- structure: only the containers the content needs --------------------------------------------
def test_text_alone_is_one_part(parse_independently: Parse, tree: Tree) -> None:
    message = parse_independently(simple(text="Hello\nthere").to_bytes())
    assert tree(message) == "text/plain"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content() == "Hello\r\nthere"


def test_text_and_html_are_alternatives(parse_independently: Parse, tree: Tree) -> None:
    message = parse_independently(simple(text="plain", html="<p>rich</p>").to_bytes())
    assert tree(message) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, rich = message.iter_parts()
    assert plain.get_content() == "plain"  # type: ignore[attr-defined]
    assert rich.get_content() == "<p>rich</p>"  # type: ignore[attr-defined]


def test_html_alone_gets_a_generated_text_alternative(
    parse_independently: Parse, tree: Tree
) -> None:
    html = "<h1>Welcome</h1><p>Read <a href='https://x.example/a'>the guide</a>.</p>"
    message = parse_independently(simple(html=html).to_bytes())
    assert tree(message) == ("multipart/alternative", ["text/plain", "text/html"])
    plain = next(message.iter_parts())
    assert plain.get_content() == (  # type: ignore[attr-defined]
        "Welcome\r\n\r\nRead the guide (https://x.example/a)."
    )


def test_html_alone_without_auto_text_is_one_part(parse_independently: Parse, tree: Tree) -> None:
    message = parse_independently(simple(html="<p>x</p>", auto_text=False).to_bytes())
    assert tree(message) == "text/html"


def test_inline_images_go_in_a_related_part_beside_the_html(
    parse_independently: Parse, tree: Tree
) -> None:
    email = simple(text="see logo")
    logo = email.attach(PNG, "logo.png", inline=True)
    email.html = f'<p>Logo: <img src="cid:{logo.content_id}"></p>'
    message = parse_independently(email.to_bytes())
    assert tree(message) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png"])],
    )
    related = list(message.iter_parts())[1]
    html_part, image = related.iter_parts()  # type: ignore[attr-defined]
    assert image["Content-ID"] == f"<{logo.content_id}>"
    assert f"cid:{logo.content_id}" in html_part.get_content()
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_payload(decode=True) == PNG


def test_attachments_make_mixed_the_outermost_part(parse_independently: Parse, tree: Tree) -> None:
    email = simple(text="body", html="<p>body <img src='cid:logo'></p>")
    email.attach(PNG, "logo.png", inline=True, content_id="logo")
    email.attach(b"a,b\r\n1,2\r\n", "report.csv")
    email.attach(b"%PDF-1.4", "invoice.pdf")
    message = parse_independently(email.to_bytes())
    assert tree(message) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                ["text/plain", ("multipart/related", ["text/html", "image/png"])],
            ),
            "text/csv",
            "application/pdf",
        ],
    )
    _, csv, pdf = message.iter_parts()
    assert csv["Content-Disposition"] == 'attachment; filename="report.csv"'
    assert pdf.get_content_disposition() == "attachment"
    assert csv.get_payload(decode=True) == b"a,b\r\n1,2\r\n"  # bytes kept exactly
    assert pdf.get_payload(decode=True) == b"%PDF-1.4"


def test_only_attachments_no_body(parse_independently: Parse, tree: Tree) -> None:
    email = simple()
    email.attach(b"x", "a.bin")
    assert tree(parse_independently(email.to_bytes())) == (
        "multipart/mixed",
        ["application/octet-stream"],
    )


def test_no_content_at_all_is_an_empty_text_part(parse_independently: Parse, tree: Tree) -> None:
    message = parse_independently(simple().to_bytes())
    assert tree(message) == "text/plain"
    assert message.get_content() == ""


def test_inline_parts_without_html_stay_in_mixed(parse_independently: Parse, tree: Tree) -> None:
    email = simple(text="photo below")
    email.attach(PNG, "photo.png", inline=True)
    message = parse_independently(email.to_bytes())
    assert tree(message) == ("multipart/mixed", ["text/plain", "image/png"])
    assert list(message.iter_parts())[1].get_content_disposition() == "inline"


# -- body encodings ------------------------------------------------------------------------------
def test_non_ascii_text_is_quoted_printable(parse_independently: Parse) -> None:
    text = "Grüße aus Köln – 日本語\nzweite Zeile mit Leerzeichen am Ende   \n"
    raw = simple(text=text).to_bytes()
    message = parse_independently(raw)
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content().replace("\r\n", "\n") == text


def test_long_lines_are_wrapped_losslessly(parse_independently: Parse) -> None:
    text = "x" * 5000 + "\n" + "word " * 600
    message = parse_independently(simple(text=text).to_bytes())
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content().replace("\r\n", "\n") == text


def test_any_line_ending_becomes_crlf(parse_independently: Parse) -> None:
    raw = simple(text="a\nb\r\nc\rd").to_bytes()
    parse_independently(raw)  # asserts no bare CR or LF
    assert raw.endswith(b"a\r\nb\r\nc\r\nd")


def test_control_characters_and_boundary_like_text_are_encoded(parse_independently: Parse) -> None:
    text = "nul \x00 bell \x07 and =_looks like a boundary"
    message = parse_independently(simple(text=text).to_bytes())
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content() == text


def test_base64_lines_are_76_characters(parse_independently: Parse) -> None:
    email = simple(text="x")
    email.attach(bytes(range(256)) * 40, "blob.bin")
    raw = email.to_bytes()
    parse_independently(raw)
    body = raw.split(b"Content-Transfer-Encoding: base64\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    lines = body.strip().split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76


def test_rendering_is_deterministic_and_boundaries_do_not_repeat() -> None:
    email = simple(text="t", html="<p>h <img src='cid:i'></p>")
    email.attach(PNG, "i.png", inline=True, content_id="i")
    email.attach(b"x", "x.bin")
    raw = email.to_bytes()
    assert raw == email.to_bytes()
    boundaries = re.findall(rb'boundary="([^"]+)"', raw)
    assert len(boundaries) == 3 and len(set(boundaries)) == 3


# -- headers -------------------------------------------------------------------------------------
def test_non_ascii_names_and_subjects_use_encoded_words(parse_independently: Parse) -> None:
    email = Email(
        from_="Jörg Müller <jorg@example.com>",
        to=["山田 太郎 <yamada@example.jp>", "Zoë <zoe@example.com>"],
        subject="Grüße – your order 📦 is on its way",
        text="x",
    )
    raw = email.to_bytes()
    assert "=?utf-8?" in head(raw)
    message = parse_independently(raw)
    assert message["Subject"] == "Grüße – your order 📦 is on its way"
    assert message["From"].addresses[0].display_name == "Jörg Müller"
    names = [a.display_name for a in message["To"].addresses]
    assert names == ["山田 太郎", "Zoë"]


@pytest.mark.parametrize(
    "name",
    ["Doe, John", 'Dwayne "The Rock" Johnson', "back\\slash", "O'Brien; Team", "J. R. R. Tolkien"],
)
def test_display_names_with_specials_are_quoted(parse_independently: Parse, name: str) -> None:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    email = simple(to=[f'"{escaped}" <j@example.com>', "other@example.com"], text="x")
    message = parse_independently(email.to_bytes())
    addresses = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in addresses] == [
        (name, "j@example.com"),
        ("", "other@example.com"),
    ]


def test_display_name_that_looks_like_an_encoded_word_survives(parse_independently: Parse) -> None:
    email = simple(from_="=?utf-8?q?fake?= <a@example.com>", text="x")
    message = parse_independently(email.to_bytes())
    assert message["From"].addresses[0].display_name == "=?utf-8?q?fake?="


def test_idn_domains_are_punycode_in_headers(parse_independently: Parse) -> None:
    email = simple(from_="Ana <ana@exämple.com>", to="bo@bücher.example", text="x")
    message = parse_independently(email.to_bytes())
    assert message["From"].addresses[0].domain == "xn--exmple-cua.com"
    assert message["To"].addresses[0].addr_spec == "bo@xn--bcher-kva.example"


def test_bcc_never_appears(parse_independently: Parse) -> None:
    email = simple(cc="carol@example.com", bcc=["Secret <secret@example.com>"], text="x")
    raw = email.to_bytes()
    parse_independently(raw)  # asserts there is no Bcc header
    assert b"secret" not in raw.lower()
    assert "secret@example.com" in email.envelope_recipients


def test_bcc_only_email_gets_an_empty_group_as_to(parse_independently: Parse) -> None:
    email = Email(from_="a@example.com", bcc="b@example.com", text="x")
    message = parse_independently(email.to_bytes())
    assert message["To"] == "undisclosed-recipients:;"
    assert message["To"].addresses == ()


def test_all_header_fields(parse_independently: Parse) -> None:
    email = simple(
        cc="Carol <carol@example.com>",
        reply_to=["help@example.com", "Desk <desk@example.com>"],
        read_receipt="ana@example.com",
        headers={"X-Campaign": "welcome", "List-Unsubscribe": "<mailto:u@example.com>"},
        text="x",
    )
    message = parse_independently(email.to_bytes())
    assert message["Cc"] == "Carol <carol@example.com>"
    assert [a.addr_spec for a in message["Reply-To"].addresses] == [
        "help@example.com",
        "desk@example.com",
    ]
    assert message["Disposition-Notification-To"] == "ana@example.com"
    assert message["X-Campaign"] == "welcome"
    assert message["List-Unsubscribe"] == "<mailto:u@example.com>"
    assert message["Message-ID"] == email.message_id
    assert message["Date"].datetime == email.date
    assert message["MIME-Version"] == "1.0"


def test_non_ascii_custom_header_is_encoded(parse_independently: Parse) -> None:
    message = parse_independently(simple(headers={"X-Note": "café ☕"}, text="x").to_bytes())
    assert message["X-Note"] == "café ☕"


def test_long_headers_are_folded(parse_independently: Parse) -> None:
    subject = "A rather long subject line " * 10
    many = [f"Person {i} <person{i}@example.com>" for i in range(30)]
    raw = simple(subject=subject.strip(), to=many, text="x").to_bytes()
    message = parse_independently(raw)
    assert all(len(line) <= 78 for line in head(raw).split("\r\n"))
    assert message["Subject"] == subject.strip()
    assert [a.addr_spec for a in message["To"].addresses] == [
        f"person{i}@example.com" for i in range(30)
    ]


def test_unfoldable_subject_is_encoded_within_the_hard_limit(parse_independently: Parse) -> None:
    subject = "x" * 3000
    message = parse_independently(simple(subject=subject, text="x").to_bytes())
    assert message["Subject"] == subject


def test_subject_whitespace_survives(parse_independently: Parse) -> None:
    for subject in ["  leading", "trailing  ", "double  space", "tab\there", ""]:
        message = parse_independently(simple(subject=subject, text="x").to_bytes())
        assert message["Subject"] == subject


def test_smtputf8_writes_utf8_headers(parse_independently: Parse) -> None:
    email = Email(
        from_="Jörg <jörg@exämple.com>",
        to="Zoë <zoë@example.com>",
        subject="Grüße",
        text="x",
        smtputf8=True,
    )
    raw = email.to_bytes()
    message = parse_independently(raw, ascii_only=False)
    assert "Subject: Grüße" in head(raw)
    assert 'From: "Jörg" <jörg@xn--exmple-cua.com>' in head(raw)
    assert "=?utf-8?" not in head(raw)
    assert message["Subject"] == "Grüße"


# -- attachment names ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filename",
    [
        "report.csv",
        "Überweisung März.pdf",
        "日本語のファイル名.txt",
        "a" * 150 + ".bin",
        'Quote "and" back\\slash.txt',
        "très " * 40 + "long.pdf",
    ],
)
def test_attachment_file_names_survive(parse_independently: Parse, filename: str) -> None:
    email = simple(text="x")
    email.attach(b"data", filename)
    raw = email.to_bytes()
    message = parse_independently(raw)
    part = list(message.iter_parts())[1]
    assert part.get_filename() == filename
    assert part.get_param("name") == filename
    if not filename.isascii():
        assert "filename*" in head(raw.split(b"--=_", 2)[2])  # RFC 2231, not RFC 2047


def test_content_type_parameters_are_kept(parse_independently: Parse) -> None:
    email = simple(text="x")
    email.attach(b"BEGIN:VCALENDAR", "invite.ics", "text/calendar; method=REQUEST; charset=UTF-8")
    part = list(parse_independently(email.to_bytes()).iter_parts())[1]
    assert part.get_content_type() == "text/calendar"
    assert part.get_param("method") == "REQUEST"
    assert part.get_content_charset() == "utf-8"


def test_forwarded_message_is_not_base64_encoded(parse_independently: Parse) -> None:
    inner = b"From: a@example.com\nTo: b@example.com\nSubject: inner\n\nhello\n"
    email = simple(text="fwd")
    email.attach(inner, "fwd.eml", "message/rfc822")
    message = parse_independently(email.to_bytes())
    part = list(message.iter_parts())[1]
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "7bit"
    forwarded = part.get_payload(0)
    assert forwarded["Subject"] == "inner"


def test_eight_bit_forwarded_message_is_sent_as_octet_stream(parse_independently: Parse) -> None:
    inner = "Subject: grüße\n\nbody\n".encode()
    email = simple(text="fwd")
    email.attach(inner, "fwd.eml", "message/rfc822")
    part = list(parse_independently(email.to_bytes()).iter_parts())[1]
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_payload(decode=True) == inner


def test_very_long_names_and_values_stay_within_the_line_limit(parse_independently: Parse) -> None:
    ascii_name = "a" * 2000
    unicode_name = "名" * 700
    email = Email(
        from_=f"{ascii_name} <a@example.com>",
        to=[f"{unicode_name} <b@example.com>", f'"{"x, " * 300}" <c@example.com>'],
        subject="word " * 400 + "ü" * 500,
        headers={"X-Long": "y" * 5000, "X-Words": "z " * 2000},
        text="x",
    )
    email.attach(b"x", "名" * 300 + ".txt", content_id="c" * 900)
    raw = email.to_bytes()
    message = parse_independently(raw)  # asserts every line <= 998 octets
    # the standard library keeps the space between adjacent encoded-words in a display name,
    # against RFC 2047 section 6.2; postroom's parser drops it
    assert message["From"].addresses[0].display_name.replace(" ", "") == ascii_name
    parsed = Email.from_bytes(raw)
    assert parsed.from_ == f"{ascii_name} <a@example.com>"
    assert parsed.to[0] == f"{unicode_name} <b@example.com>"
    assert parsed.subject == email.subject
    assert message["X-Long"] == "y" * 5000
    assert list(message.iter_parts())[1].get_filename() == "名" * 300 + ".txt"


def test_duplicate_content_ids_are_refused() -> None:
    email = simple(html="<img src='cid:x'>")
    email.attach(PNG, "a.png", inline=True, content_id="x")
    email.attach(PNG, "b.png", inline=True, content_id="x")
    with pytest.raises(MessageError, match="used twice"):
        email.to_bytes()


def test_date_is_written_in_its_own_zone_even_for_the_same_instant() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    instant = datetime(2026, 11, 30, 9, 15, 42, 123456, tzinfo=UTC)
    paris = instant.astimezone(timezone(timedelta(hours=1)))
    dates = [
        head(simple(date=d).to_bytes()).split("Date: ")[1].split("\r\n")[0]
        for d in (instant, paris, instant.replace(microsecond=999))
    ]
    assert dates == [
        "Mon, 30 Nov 2026 09:15:42 +0000",
        "Mon, 30 Nov 2026 10:15:42 +0100",
        "Mon, 30 Nov 2026 09:15:42 +0000",
    ]
