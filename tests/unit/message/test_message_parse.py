"""Parsing existing messages: the corpus in tests/data/messages, checked field by field, and
the rules for what cannot be read."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from postroom.errors import ParseError
from postroom.message import Email


def load(corpus: Path, name: str) -> Email:
    return Email.from_file(corpus / name)


def rerender_keeps_identity(email: Email) -> None:
    """A parsed message renders again with its own Message-ID and Date, and parses back."""
    again = Email.from_bytes(email.to_bytes())
    assert (again.message_id, again.date) == (email.message_id, email.date)
    assert again.subject == email.subject
    assert [a.content for a in again.attachments] == [a.content for a in email.attachments]


# -- the corpus ----------------------------------------------------------------------------------
def test_gmail_related_with_inline_image(corpus: Path) -> None:
    email = load(corpus, "gmail_related_inline_image.eml")
    assert email.from_ == "María García <maria.garcia@gmail.com>"
    assert email.to == ["Team <team@example.org>", '"Doe, John" <john.doe@example.org>']
    assert email.envelope_recipients == ["team@example.org", "john.doe@example.org"]
    assert email.subject == "Fotos del equipo 📸"
    assert email.message_id == "<CAJ8fKp=x7Qm2vN3+Lk9wQeYt0uA5bS@mail.gmail.com>"
    assert email.date == datetime(2024, 11, 12, 10, 14, 51, tzinfo=timezone(timedelta(hours=1)))
    assert email.text is not None and email.text.startswith("Hola a todos,\n\nAquí está")
    assert email.html is not None and 'src="cid:ii_m3dk2f1a0"' in email.html
    assert "lo=\n" not in email.html  # soft line breaks removed
    (logo,) = email.attachments
    assert (logo.filename, logo.content_type, logo.inline) == ("logo.png", "image/png", True)
    assert logo.content_id == "ii_m3dk2f1a0"
    assert logo.content.startswith(b"\x89PNG\r\n\x1a\n") and len(logo.content) == 70
    assert email.headers == {}  # Received, DKIM-Signature and Return-Path are trace headers
    rerender_keeps_identity(email)


def test_outlook_forward_as_attachment(corpus: Path) -> None:
    email = load(corpus, "outlook_forward_as_attachment.eml")
    assert email.from_ == "Sam Porter <sam@example.com>"
    assert email.to == ['"Quinn, Robin" <robin.quinn@example.com>']
    assert email.subject == "FW: Q3 numbers"
    assert email.text == "Robin, see the message below.\n\nSam\n"
    assert email.html is None
    assert email.headers["Thread-Topic"] == "Q3 numbers"
    assert email.headers["X-MS-Has-Attach"] == "yes"
    (forwarded,) = email.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "Q3 numbers.eml"
    assert not forwarded.inline
    inner = Email.from_bytes(forwarded.content)
    assert inner.subject == "Q3 numbers"
    assert inner.from_ == '"Lee, Ana" <ana.lee@partner.example>'
    assert inner.text == "Hi Sam,\n\nthe Q3 numbers are attached to the ticket.\n\nAna\n"
    assert b"\r\n" in forwarded.content and b"\n" not in forwarded.content.replace(b"\r\n", b"")
    rerender_keeps_identity(email)


def test_google_calendar_invite(corpus: Path) -> None:
    email = load(corpus, "google_calendar_invite.eml")
    assert email.from_ == "Priya Natarajan <priya@example.com>"
    assert email.reply_to == ["Priya Natarajan <priya@example.com>"]
    assert email.headers["Sender"] == "Google Calendar <calendar-notification@google.com>"
    assert email.subject.startswith("Invitation: Design review @ Wed Nov 20, 2024")
    assert email.text == (
        "Design review\nWednesday Nov 20, 2024 ⋅ 3pm – 3:30pm\nCoordinated Universal Time\n"
    )
    assert email.html is not None and "<h2>Design review</h2>" in email.html
    calendar, ics = email.attachments
    assert calendar.content_type == "text/calendar; charset=UTF-8; method=REQUEST"
    assert calendar.filename == "attachment-1.ics"
    assert calendar.content.startswith(b"BEGIN:VCALENDAR\r\nPRODID:")
    assert (ics.filename, ics.content_type) == ("invite.ics", "application/ics")
    assert ics.content == calendar.content
    rerender_keeps_identity(email)


def test_latin1_quoted_printable(corpus: Path) -> None:
    email = load(corpus, "latin1_quoted_printable.eml")
    assert email.from_ == "Jürgen Weiß <juergen.weiss@beispiel.de>"
    assert email.to == ["Bärbel Müller <baerbel@beispiel.de>"]
    assert email.subject == "Rechnung für März"
    assert email.text == (
        "Grüß Gott,\n\ndie Rechnung für März liegt bei. Preis: 42 EUR? Nein: 42 £.\n\n"
        "MfG\nJürgen Weiß\n"
    )
    assert email.headers == {"X-Mailer": "Microsoft Outlook Express 6.00.2900.5931"}
    assert email.attachments == []
    rerender_keeps_identity(email)


def test_thunderbird_rfc2231_and_rfc2047_file_names(corpus: Path) -> None:
    email = load(corpus, "thunderbird_rfc2231_filenames.eml")
    assert email.from_ == "Renée Fauré <renee@posteo.de>"
    assert email.to == ["Björn Ångström <bjorn@example.se>", "山田太郎 <yamada@example.jp>"]
    assert email.cc == ['"O\'Brien, Siobhán" <siobhan@example.ie>']
    assert email.subject == "Unterlagen für das Grundstück"
    assert email.text == "Hallo Björn,\n\nanbei die Unterlagen.\n\nRenée\n"
    pdf, csv = email.attachments
    # RFC 2231 continuations, one UTF-8 character split across two of them
    assert pdf.filename == (
        "Überweisungsbestätigung Nr. 2024-11-0042 für Grundstück Åsgårdstraße 7.pdf"
    )
    assert (pdf.content_type, pdf.content) == ("application/pdf", b"%PDF-1.4 fake pdf for tests")
    assert csv.filename == "Kostenübersicht.csv"  # RFC 2047 inside a quoted parameter
    assert csv.content_type == "text/csv; charset=UTF-8"
    assert csv.content == b"Posten;Betrag\nNotar;1200\n"
    assert email.headers == {"User-Agent": "Mozilla Thunderbird", "Content-Language": "de-DE"}
    rerender_keeps_identity(email)


def test_lf_only_plain_message(corpus: Path) -> None:
    raw = (corpus / "lf_only_plain.eml").read_bytes()
    assert b"\r" not in raw
    email = Email.from_bytes(raw)
    assert email.from_ == "cron@build.example.com"
    assert email.to == ["ops@example.com"]
    assert email.cc == ["Dev Team <dev@example.com>", "qa@example.com"]
    assert email.subject == "Nightly build #1337 finished"
    assert email.date == datetime(2024, 11, 14, 7, 0, 7, tzinfo=UTC)
    assert email.text == "Build #1337 finished in 12m31s.\nAll 4,211 tests passed.\n"
    assert email.headers == {"X-Cron-Env": "<SHELL=/bin/sh>"}
    rerender_keeps_identity(email)


def test_slightly_malformed_message_is_read_as_well_as_possible(corpus: Path) -> None:
    email = load(corpus, "malformed_real_world.eml")
    assert email.from_ == "Broken Mailer <noreply@shop.example>"
    assert email.to == ["customer@example.com", "Second <second@example.com>"]  # "foo@" dropped
    assert email.subject == "Your order nº 1042 x"  # no space after the colon, unknown charset
    assert email.message_id == "<order-1042@shop.example>"  # the missing brackets are added
    assert email.html == "<p>Thanks for your order. Total: 30 €</p>"  # unknown charset: UTF-8
    assert email.text == "Gesamt: 30 €"  # us-ascii declared, UTF-8 sent, no closing boundary
    (pdf,) = email.attachments
    assert (pdf.filename, pdf.content_type, pdf.content) == (
        "attachment-1.pdf",
        "application/pdf",
        b"%PDF-1.4\n",
    )
    before = datetime.now(UTC).replace(microsecond=0)
    assert email.date >= before  # an unreadable Date is replaced when first needed
    rerender_keeps_identity(email)


def test_every_corpus_message_renders_back_cleanly(corpus: Path) -> None:
    files = sorted(corpus.glob("*.eml"))
    assert len(files) >= 7
    for path in files:
        email = Email.from_file(path)
        raw = email.to_bytes()
        assert raw.isascii(), path.name
        assert all(len(line) <= 998 for line in raw.split(b"\r\n")), path.name


# -- forms of input ------------------------------------------------------------------------------
def test_from_file_accepts_a_path_a_string_and_a_binary_file(corpus: Path) -> None:
    path = corpus / "lf_only_plain.eml"
    subjects = {
        Email.from_file(path).subject,
        Email.from_file(str(path)).subject,
        Email.from_file(io.BytesIO(path.read_bytes())).subject,
    }
    assert subjects == {"Nightly build #1337 finished"}
    with path.open("rb") as handle:
        assert Email.from_file(handle).subject == "Nightly build #1337 finished"


def test_from_file_refuses_text_mode_and_missing_files(corpus: Path, tmp_path: Path) -> None:
    with (
        (corpus / "lf_only_plain.eml").open("r") as handle,
        pytest.raises(ParseError, match="binary"),
    ):
        Email.from_file(handle)  # type: ignore[arg-type]
    with pytest.raises(ParseError, match="cannot read"):
        Email.from_file(tmp_path / "nope.eml")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty"),
        (b"   \r\n\r\n", "empty"),
        (b"just some words, not a message\n", "no header"),
        (b"\x00\x01\x02\xff", "no header"),
    ],
)
def test_unreadable_input_raises_parse_error(raw: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        Email.from_bytes(raw)


def test_non_bytes_input_raises_parse_error() -> None:
    with pytest.raises(ParseError, match="must be bytes"):
        Email.from_bytes("From: a@example.com\n\nhi")  # type: ignore[arg-type]


def test_headers_only_message_has_an_empty_text_body() -> None:
    email = Email.from_bytes(b"From: a@example.com\nTo: b@example.com\nSubject: s\n")
    assert (email.from_, email.to, email.subject, email.text, email.html) == (
        "a@example.com",
        ["b@example.com"],
        "s",
        "",
        None,
    )


def test_html_only_message_stays_html_only() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nPHA+aMOpPC9wPg==\r\n"
    )
    email = Email.from_bytes(raw)
    assert (email.html, email.text, email.auto_text) == ("<p>hé</p>", None, False)
    assert b"multipart" not in email.to_bytes()


def test_encoded_header_with_a_line_break_inside_is_repaired() -> None:
    raw = b"From: a@example.com\nTo: b@example.com\nSubject: =?utf-8?q?two=0Alines?=\n\nx\n"
    assert Email.from_bytes(raw).subject == "two lines"


def test_bcc_and_read_receipt_headers_are_read() -> None:
    raw = (
        b"From: a@example.com\nTo: b@example.com\nBcc: c@example.com, D <d@example.com>\n"
        b"Disposition-Notification-To: a@example.com\n\nx\n"
    )
    email = Email.from_bytes(raw)
    assert email.bcc == ["c@example.com", "D <d@example.com>"]
    assert email.read_receipt == ["a@example.com"]
    assert b"d@example.com" not in email.to_bytes()


def test_raw_utf8_headers_turn_on_smtputf8() -> None:
    raw = "From: Jörg <jörg@example.com>\nTo: b@example.com\nSubject: Grüße\n\nx\n".encode()
    email = Email.from_bytes(raw)
    assert email.smtputf8 is True
    assert email.from_ == "Jörg <jörg@example.com>"
    assert email.subject == "Grüße"


def test_apple_style_inline_image_without_content_id_is_an_attachment() -> None:
    raw = (
        b"From: a@example.com\nTo: b@example.com\nContent-Type: multipart/mixed; boundary=B\n\n"
        b"--B\nContent-Type: text/plain\n\nbefore\n--B\nContent-Type: image/jpeg; name=p.jpg\n"
        b"Content-Disposition: inline; filename=p.jpg\nContent-Transfer-Encoding: base64\n\n"
        b"/9j/\n--B\nContent-Type: text/plain\n\nafter\n--B--\n"
    )
    email = Email.from_bytes(raw)
    assert email.text == "before\nafter"  # bodies around the image are joined
    (photo,) = email.attachments
    assert (photo.filename, photo.inline, photo.content) == ("p.jpg", False, b"\xff\xd8\xff")


def test_parsed_email_rerenders_byte_for_byte() -> None:
    email = Email(
        from_="Ana <ana@example.com>",
        to=["bo@example.com", '"Doe, John" <j@example.com>'],
        subject="Grüße",
        text="hello\n",
        html="<p>hello</p>",
        headers={"X-Tag": "t"},
    )
    email.attach(b"%PDF", "Rechnung März.pdf")
    raw = email.to_bytes()
    assert Email.from_bytes(raw).to_bytes() == raw


def test_rfc2231_content_type_parameters_are_decoded_and_rendered_again() -> None:
    raw = (
        b"From: a@example.com\nTo: b@example.com\nContent-Type: multipart/mixed; boundary=B\n\n"
        b"--B\nContent-Type: text/plain\n\nx\n--B\nContent-Type: application/x-thing;"
        b" title*=utf-8''%C3%A9t%C3%A9; name=a.bin\nContent-Disposition: attachment\n\nabc\n--B--\n"
    )
    (thing,) = Email.from_bytes(raw).attachments
    assert (thing.filename, thing.content_type) == ("a.bin", 'application/x-thing; title="été"')
    again = Email.from_bytes(Email.from_bytes(raw).to_bytes()).attachments[0]
    assert again.content_type == thing.content_type
