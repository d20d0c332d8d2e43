"""The Email object: fields, eager checks, identity, envelope, attachments, queueing methods."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import postroom.client
from postroom.errors import AddressError, HeaderError, MessageError
from postroom.message import Attachment, Email


def simple(**overrides: Any) -> Email:
    fields: dict[str, Any] = {"from_": "Ana <ana@example.com>", "to": "bo@example.com"}
    fields.update(overrides)
    return Email(**fields)


# -- fields ---------------------------------------------------------------------------------------
def test_constructor_keywords_and_attribute_assignment_give_the_same_email() -> None:
    by_keywords = Email(
        from_="Jordan Wright <jordan@example.com>",
        to=["alice@example.com", "Bob <bob@example.com>"],
        cc="carol@example.com",
        bcc=["audit@example.com"],
        reply_to="help@example.com",
        subject="Awesome subject",
        text="Plain",
        html="<h1>HTML</h1>",
        headers={"X-Campaign": "welcome"},
        sender="bounces@example.com",
        read_receipt="jordan@example.com",
        priority=5,
    )
    by_assignment = Email()
    by_assignment.from_ = "Jordan Wright <jordan@example.com>"
    by_assignment.to = ["alice@example.com", "Bob <bob@example.com>"]
    by_assignment.cc = "carol@example.com"
    by_assignment.bcc = ["audit@example.com"]
    by_assignment.reply_to = "help@example.com"
    by_assignment.subject = "Awesome subject"
    by_assignment.text = "Plain"
    by_assignment.html = "<h1>HTML</h1>"
    by_assignment.headers = {"X-Campaign": "welcome"}
    by_assignment.sender = "bounces@example.com"
    by_assignment.read_receipt = "jordan@example.com"
    by_assignment.priority = 5
    for email in (by_keywords, by_assignment):
        email.message_id = "<fixed@example.com>"
        email.date = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert by_keywords.to_dict() == by_assignment.to_dict()
    assert by_keywords.to == ["alice@example.com", "Bob <bob@example.com>"]
    assert by_keywords.cc == ["carol@example.com"]  # a single string becomes a list
    assert by_keywords.priority == 5


def test_defaults() -> None:
    email = Email()
    assert (email.from_, email.to, email.cc, email.bcc, email.reply_to) == (None, [], [], [], [])
    assert (email.subject, email.text, email.html, email.headers) == ("", None, None, {})
    assert (email.attachments, email.sender, email.read_receipt) == ([], None, [])
    assert (email.priority, email.smtputf8, email.auto_text) == (0, False, True)


def test_a_misspelt_attribute_is_refused() -> None:
    email = simple()
    with pytest.raises(AttributeError):
        email.tos = ["x@example.com"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "a@b.com",
        "Name <a@b.com>",
        '"Doe, John" <j@example.com>',
        "Doe, John <j@example.com>",
        "<a@b.com>",
        "first.last+tag@sub.example.co.uk",
        '"quoted local"@example.com',
        "user@[192.0.2.1]",
        "  padded@example.com  ",
    ],
)
def test_accepted_address_forms(text: str) -> None:
    email = simple(to=text)
    assert email.to == [text.strip()]
    assert len(email.envelope_recipients) == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("plainstring", "expected local@domain"),
        ("foo@", "bad domain"),
        ("@example.com", "expected local@domain"),
        ("a b@example.com", "bad local part"),
        ("a@exa mple.com", "bad domain"),
        ("a@example..com", "bad domain"),
        ("a..b@example.com", "bad local part"),
        ("Name <a@b.com", "unbalanced"),
        ("one@example.com, two@example.com", "several addresses"),
        ("", "empty address"),
        ("x" * 65 + "@example.com", "longer than 64"),
    ],
)
def test_bad_addresses_raise_address_error_naming_them(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        simple(cc=["ok@example.com", text])
    message = str(caught.value)
    assert message.startswith("cc:")
    assert reason in message
    if text:
        assert repr(text) in message


def test_non_string_address_is_refused() -> None:
    with pytest.raises(AddressError, match="to: 42 is not a string"):
        simple(to=[42])
    with pytest.raises(MessageError, match="to must be a string or a list"):
        simple(to=42)


def test_internationalised_domain_is_sent_as_punycode() -> None:
    email = simple(from_="Jörg <jorg@exämple.com>", to="ünï@bücher.example", smtputf8=True)
    assert email.envelope_sender == "jorg@xn--exmple-cua.com"
    assert email.envelope_recipients == ["ünï@xn--bcher-kva.example"]


def test_non_ascii_local_part_needs_smtputf8() -> None:
    with pytest.raises(AddressError, match="SMTPUTF8") as caught:
        simple(to="jörg@example.com")
    assert "jörg@example.com" in str(caught.value)
    email = simple(to="jörg@example.com", smtputf8=True)
    assert email.envelope_recipients == ["jörg@example.com"]
    with pytest.raises(AddressError, match="SMTPUTF8"):
        email.smtputf8 = False
    assert email.smtputf8 is True  # the refused change did not stick


# -- header injection and header names -----------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hello\r\nBcc: victim@example.com"},
        {"subject": "line\nbreak"},
        {"from_": "Evil\r\nBcc: victim@example.com <evil@example.com>"},
        {"to": ["Name\n <a@example.com>"]},
        {"headers": {"X-Tag": "a\r\nBcc: victim@example.com"}},
        {"headers": {"X-Tag": "a\rb"}},
    ],
)
def test_line_breaks_in_header_values_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(HeaderError, match="line break"):
        simple(**overrides)


def test_line_breaks_assigned_later_are_refused_at_once_and_at_render() -> None:
    email = simple()
    with pytest.raises(HeaderError):
        email.subject = "x\r\ny"
    email.headers["X-Late"] = "a\nb"  # an in-place change bypasses the setter
    with pytest.raises(HeaderError, match="X-Late"):
        email.validate()
    with pytest.raises(HeaderError):
        email.to_bytes()


def test_attachment_filename_with_line_break_is_refused() -> None:
    with pytest.raises(HeaderError, match="filename"):
        simple().attach(b"x", "a\r\nContent-Type: text/html")


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "Ümlaut", "X-" + "a" * 300])
def test_invalid_header_names_are_refused(name: str) -> None:
    with pytest.raises(HeaderError, match="invalid header name"):
        simple(headers={name: "value"})


@pytest.mark.parametrize(
    ("name", "field"), [("Subject", "subject"), ("from", "from_"), ("BCC", "bcc")]
)
def test_headers_with_their_own_field_are_refused(name: str, field: str) -> None:
    with pytest.raises(HeaderError, match=repr(field)):
        simple(headers={name: "x@example.com"})


def test_mime_headers_and_duplicate_names_are_refused() -> None:
    with pytest.raises(HeaderError, match="written by postroom"):
        simple(headers={"Content-Type": "text/html"})
    with pytest.raises(HeaderError, match="twice"):
        simple(headers={"X-Tag": "a", "x-tag": "b"})


def test_other_bad_values_are_refused() -> None:
    with pytest.raises(MessageError, match="priority"):
        simple(priority="high")
    with pytest.raises(MessageError, match="priority"):
        simple(priority=True)
    with pytest.raises(MessageError, match="text"):
        simple(text=b"bytes")
    with pytest.raises(MessageError, match="smtputf8"):
        simple(smtputf8="yes")
    with pytest.raises(MessageError, match="attachments"):
        simple(attachments=["file.txt"])
    with pytest.raises(MessageError, match="date"):
        simple(date="yesterday")


# -- validate ------------------------------------------------------------------------------------
def test_validate_needs_a_from_and_a_recipient() -> None:
    with pytest.raises(MessageError, match="no From"):
        Email(to="a@example.com").validate()
    with pytest.raises(MessageError, match="no recipient"):
        Email(from_="a@example.com").validate()
    with pytest.raises(MessageError, match="no From"):
        Email(to="a@example.com").to_bytes()
    Email(from_="a@example.com", bcc="b@example.com").validate()  # bcc alone is enough


def test_validate_checks_lists_changed_in_place() -> None:
    email = simple()
    email.to.append("not an address")
    with pytest.raises(AddressError, match="not an address"):
        email.validate()


def test_validate_catches_in_place_changes_made_after_an_earlier_validate() -> None:
    email = simple(cc="carol@example.com", headers={"X-Tag": "a"})
    email.validate()  # remembers what it checked
    email.to.append("not an address")
    with pytest.raises(AddressError, match="to: 'not an address'"):
        email.validate()
    email.to.pop()
    email.validate()
    email.cc[0] = "Carol <carol@>"  # same length, other contents
    with pytest.raises(AddressError, match="cc"):
        email.validate()
    email.cc[0] = "carol@example.com"
    for field in ("bcc", "reply_to", "read_receipt"):
        getattr(email, field).insert(0, 42)
        with pytest.raises(AddressError, match=f"{field}: 42 is not a string"):
            email.validate()
        getattr(email, field).clear()
    email.validate()
    email.headers["Subject"] = "sneaked in"
    with pytest.raises(HeaderError, match="subject"):
        email.validate()
    del email.headers["Subject"]
    email.validate()


def test_an_address_added_in_place_is_checked_against_smtputf8() -> None:
    email = simple(smtputf8=True)
    email.validate()
    email.to.append("jörg@example.com")
    email.validate()  # fine while smtputf8 is on
    with pytest.raises(AddressError, match="SMTPUTF8"):
        email.smtputf8 = False  # turning it off checks every address again
    assert email.smtputf8 is True
    plain = simple()
    plain.validate()
    plain.cc.append("jörg@example.com")
    with pytest.raises(AddressError, match="SMTPUTF8"):
        plain.validate()


def test_validate_refuses_text_that_is_not_unicode() -> None:
    email = simple(text="broken \udc80 surrogate")
    with pytest.raises(MessageError, match="text is not valid Unicode"):
        email.validate()


def test_validate_rechecks_attachments_changed_in_place() -> None:
    email = simple()
    attachment = email.attach(b"x", "a.txt")
    attachment.filename = "bad\nname"
    with pytest.raises(HeaderError):
        email.validate()


# -- envelope ------------------------------------------------------------------------------------
def test_envelope_recipients_are_bare_deduplicated_and_include_bcc() -> None:
    email = Email(
        from_="a@example.com",
        to=["Bob <Bob@Example.com>", "carol@example.com"],
        cc=["bob@example.com", "Dan <dan@example.com>"],
        bcc=["CAROL@example.com", "audit@example.com"],
    )
    assert email.envelope_recipients == [
        "Bob@Example.com",
        "carol@example.com",
        "dan@example.com",
        "audit@example.com",
    ]


def test_envelope_sender_is_the_sender_override_else_the_from_address() -> None:
    email = simple()
    assert email.envelope_sender == "ana@example.com"
    email.sender = "Bounces <bounces@example.com>"
    assert email.envelope_sender == "bounces@example.com"
    with pytest.raises(MessageError, match="no From"):
        _ = Email(to="x@example.com").envelope_sender


# -- identity ------------------------------------------------------------------------------------
def test_message_id_is_generated_once_from_the_from_domain() -> None:
    email = simple(from_="Ana <ana@exämple.com>")
    first = email.message_id
    assert re.fullmatch(r"<[0-9A-Z]{26}@xn--exmple-cua\.com>", first)
    assert email.message_id == first
    assert email.to_dict()["message_id"] == first
    assert f"Message-ID: {first}".encode() in email.to_bytes()
    assert simple().message_id != simple().message_id


def test_message_id_without_from_uses_a_local_domain() -> None:
    assert Email().message_id.endswith("@postroom.local>")


def test_message_id_takes_the_domain_of_the_from_address_at_that_moment() -> None:
    email = simple()
    email.from_ = "Other <news@other.example>"
    assert email.message_id.endswith("@other.example>")
    cleared = simple()
    cleared.from_ = None
    assert cleared.message_id.endswith("@postroom.local>")


def test_date_is_aware_whole_seconds_and_stable() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    email = simple()
    date = email.date
    assert date.tzinfo is not None and date.microsecond == 0
    assert before <= date <= datetime.now(UTC)
    assert email.date is date


def test_to_bytes_renders_the_same_message_every_time() -> None:
    email = simple(subject="x", html="<p>hi</p>")
    email.attach(b"data", "a.bin")
    assert email.to_bytes() == email.to_bytes()


def _rich_email() -> Email:
    email = Email(
        from_='"Doe, Jörg" <jorg@exämple.com>',
        sender="bounces@example.com",
        to=["ünï@example.com", "Bob <bob@example.com>"],
        cc="carol@example.com",
        bcc=["audit@example.com"],
        reply_to="help@example.com",
        read_receipt="jorg@example.com",
        subject='Grüße ✓ "quoted" \\ back\tslash \x01 😀',
        text="line one\nline two \u2028 naïve",
        html="<p>&amp; </script></p>",
        headers={"X-Campaign": "welcome", "X-Note": 'Ünïcode "quoted"'},
        priority=-7,
        smtputf8=True,
        auto_text=False,
    )
    email.attach(b"\x00\xff", "a.bin")
    email.attach(b"\x89PNG", "logo.png", inline=True)
    return email


@pytest.mark.parametrize(
    "make",
    [simple, Email, _rich_email, lambda: simple(priority=2**31 - 1, html="<b>x</b>", text=None)],
)
def test_to_json_is_exactly_the_json_of_to_dict(make: Any) -> None:
    email = make()
    reference = json.dumps(email.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert email.to_json() == reference
    assert json.loads(email.to_json()) == email.to_dict()


def test_to_json_of_a_list_changed_in_place_into_non_strings_still_matches() -> None:
    email = simple()
    email.to.append(42)  # type: ignore[arg-type]  # validate() would refuse it
    reference = json.dumps(email.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert email.to_json() == reference


def test_ensure_identity_assigns_both() -> None:
    email = simple()
    email.ensure_identity()
    data = email.to_dict()
    assert data["message_id"] == email.message_id
    assert data["date"] == email.date.isoformat()


def test_message_id_and_date_can_be_set() -> None:
    email = simple(message_id="abc@example.com")
    assert email.message_id == "<abc@example.com>"
    with pytest.raises(HeaderError, match="message_id"):
        email.message_id = "<has space@example.com>"
    email.date = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert email.date == datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
    assert email.date.utcoffset() == timedelta(hours=2)  # the writer's offset is kept
    naive = datetime(2026, 5, 1, 12, 0, 0)
    email.date = naive
    assert email.date == naive.astimezone()  # naive means local time


# -- attachments ---------------------------------------------------------------------------------
def test_attach_guesses_the_content_type_and_returns_the_attachment() -> None:
    email = simple()
    csv = email.attach(b"a,b\n", "report.csv")
    pdf = email.attach(b"%PDF", "invoice.pdf")
    unknown = email.attach(b"\0", "blob.unknownext")
    explicit = email.attach(b"{}", "data", content_type="application/json")
    assert [a.content_type for a in email.attachments] == [
        "text/csv",
        "application/pdf",
        "application/octet-stream",
        "application/json",
    ]
    assert email.attachments == [csv, pdf, unknown, explicit]
    assert csv.inline is False and csv.content_id is None
    assert isinstance(csv, Attachment) and csv.content == b"a,b\n"


def test_inline_attachment_gets_a_content_id() -> None:
    email = simple(html='<img src="cid:logo">')
    generated = email.attach(b"\x89PNG", "logo.png", inline=True)
    chosen = email.attach(b"\x89PNG", "logo2.png", inline=True, content_id="<logo>")
    assert generated.content_id and re.fullmatch(
        r"[0-9a-f]{24}@postroom\.local", generated.content_id
    )
    assert chosen.content_id == "logo"
    assert generated.content_type == "image/png"


def test_attach_accepts_text_as_utf8() -> None:
    attachment = simple().attach("naïve,csv\n", "n.csv")
    assert attachment.content == "naïve,csv\n".encode()


def test_attach_file(tmp_path: Path) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"%PDF-1.4")
    email = simple()
    attachment = email.attach_file(path)
    assert (attachment.filename, attachment.content) == ("invoice.pdf", b"%PDF-1.4")
    assert attachment.content_type == "application/pdf"
    renamed = email.attach_file(str(path), filename="Rechnung.pdf")
    assert renamed.filename == "Rechnung.pdf"
    with pytest.raises(MessageError, match="cannot attach") as caught:
        email.attach_file(tmp_path / "missing.pdf")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filename": "", "content": b"x"}, "filename is empty"),
        ({"filename": "a", "content": 5}, "content must be bytes"),
        ({"filename": "a", "content": b"x", "content_type": "nonsense"}, "type/subtype"),
        ({"filename": "a", "content": b"x", "content_id": "has space"}, "content_id"),
        ({"filename": "a", "content": b"x", "inline": "yes"}, "inline"),
    ],
)
def test_bad_attachments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MessageError, match=match):
        Attachment(**kwargs)


# -- no synchronous send; queueing delegates to the client ---------------------------------------
def test_send_is_reported_by_the_interpreter_without_a_misleading_suggestion() -> None:
    code = (
        "from postroom import Email\n"
        "Email(from_='a@example.com', to=['b@example.com'], subject='s', text='t').send()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("AttributeError: Email has no send()")
    assert "Did you mean" not in run.stderr


def test_send_does_not_exist_and_says_what_to_use() -> None:
    email = simple()
    with pytest.raises(AttributeError) as caught:
        email.send()  # type: ignore[attr-defined]
    message = str(caught.value)
    for method in ("enqueue()", "send_later(", "send_at("):
        assert method in message
    assert not hasattr(email, "send")

    with pytest.raises(AttributeError, match="no attribute 'sendd'"):
        email.sendd  # type: ignore[attr-defined]  # noqa: B018


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Email, datetime | None, object]] = []

    def __call__(
        self,
        email: Email,
        *,
        send_after: datetime | None,
        outbox: object,
        idempotency_key: str | None = None,
    ) -> str:
        self.calls.append((email, send_after, outbox))
        return f"id-{len(self.calls)}"


def test_queue_methods_delegate_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(postroom.client, "submit", recorder)
    email = simple()
    marker = object()
    before = datetime.now(UTC)
    assert email.enqueue() == "id-1"
    assert email.send_later("5m", outbox=marker) == "id-2"  # type: ignore[arg-type]
    when = datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    assert email.send_at(when) == "id-3"
    (_, now_after, outbox1), (_, later, outbox2), (_, at, _) = recorder.calls
    assert now_after is None and outbox1 is None and outbox2 is marker
    assert later is not None and later.tzinfo == UTC
    assert timedelta(minutes=5) <= later - before <= timedelta(minutes=5, seconds=5)
    assert at == datetime(2030, 1, 1, 8, 0, tzinfo=UTC) and at.tzinfo == UTC
    assert all(call[0] is email for call in recorder.calls)


def test_send_later_refuses_bad_delays_before_queueing(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(postroom.client, "submit", recorder)
    for bad in ("-5m", "soon", "5", timedelta(seconds=-1)):
        with pytest.raises(ValueError):
            simple().send_later(bad)
    assert recorder.calls == []


def test_repr_names_the_essentials() -> None:
    text = repr(simple(subject="Hi", bcc="x@example.com"))
    assert "ana@example.com" in text and "bo@example.com" in text and "'Hi'" in text


def test_priority_must_fit_in_32_bits() -> None:
    from postroom import Email, MessageError

    Email(from_="a@example.com", to="b@example.com", priority=2**31 - 1)
    with pytest.raises(MessageError, match="out of range"):
        Email(from_="a@example.com", to="b@example.com", priority=2**31)
