"""One corpus of Django messages, sent through Django's own SMTP backend and through postroom
(backend, real queue, real dispatcher), each to its own capture server: the parsed results must
carry the same envelope, headers and parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage as ParsedMessage
from email.mime.image import MIMEImage
from email.mime.text import MIMEText
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings
from django.utils import translation
from django.utils.translation import gettext_lazy

from postroom.config import load_config
from postroom.dispatch.server import Server
from tests.contrib.django_compat import django_smtp_backend, legacy_mail_api
from tests.smtp_servers import Received, SmtpServer

pytestmark = [pytest.mark.timeout(120), *legacy_mail_api()]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
# headers both sides generate on their own, and the MIME structure headers (parts are compared)
GENERATED = {"message-id", "date", "mime-version", "content-type", "content-transfer-encoding"}


def corpus(tmp_path: Path) -> list[EmailMessage]:
    """Every case is a Django message with an ``X-Case`` header naming it."""
    report = tmp_path / "Bericht Größe.pdf"
    report.write_bytes(b"%PDF-1.4 " + bytes(range(256)))
    cases: dict[str, EmailMessage] = {}
    cases["plain"] = EmailMessage("Hello", "Just text.\nTwo lines.", to=["alice@example.org"])
    html = EmailMultiAlternatives(
        "Text and HTML", "Plain version", "Shop <shop@example.com>", ["bob@example.org"]
    )
    html.attach_alternative("<p>HTML <b>version</b></p>", "text/html")
    cases["html"] = html
    only_html = EmailMessage("Only HTML", "<h1>Hi</h1>", to=["carol@example.org"])
    only_html.content_subtype = "html"
    cases["only-html"] = only_html
    files = EmailMessage("Files", "See attached.", to=["dan@example.org"])
    files.attach("notes.txt", "Some notes, ünïcode too.\n", "text/plain")
    files.attach("data.bin", b"\x00\x01\x02binary", "application/octet-stream")
    files.attach("guessed.csv", b"id,total\n1,42\n")  # type from the name
    files.attach_file(report)
    part = MIMEText("a MIME part", "plain", "utf-8")
    part.add_header("Content-Disposition", "attachment", filename="part.txt")
    files.attach(part)
    cases["attachments"] = files
    inline = EmailMultiAlternatives("Inline", "Logo below", to=["erin@example.org"])
    inline.attach_alternative('<p>Logo: <img src="cid:logo@example.com"></p>', "text/html")
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo@example.com>")
    image.add_header("Content-Disposition", "inline", filename="logo.png")
    inline.attach(image)
    cases["inline-image"] = inline
    cases["non-ascii"] = EmailMessage(
        "Grüße aus Köln – ☃",
        "Schöne Grüße, 你好",
        "Jürgen Müller <juergen@example.com>",
        ["Zoë Ångström <zoe@example.org>", '"Doe, Jane" <jane@example.org>'],
    )
    cases["non-ascii"].attach("Rechnung März.csv", b"a;b\n", "text/csv")
    cases["cc-bcc"] = EmailMessage(
        "Copies",
        "cc and bcc",
        to=["to@example.org"],
        cc=["Cee <cc1@example.org>", "cc2@example.org"],
        bcc=["hidden@example.org"],
    )
    cases["reply-to"] = EmailMessage(
        "Reply elsewhere", "body", to=["f@example.org"], reply_to=["Support <help@example.com>"]
    )
    cases["headers"] = EmailMessage(
        "Custom headers",
        "body",
        to=["g@example.org"],
        headers={
            "X-Custom": "value",
            "List-Unsubscribe": "<mailto:unsubscribe@example.com>",
            "From": "Display Sender <display@example.com>",
            "Message-ID": "<fixed-id-123@example.com>",
        },
    )
    cases["header-overrides"] = EmailMessage(
        "Overrides",
        "body",
        to=["real-to@example.org"],
        cc=["real-cc@example.org"],
        reply_to=["ignored@example.com"],
        headers={
            "To": "Shown <shown@example.org>",
            "Reply-To": "Answers <answers@example.com>",
            "Date": "Tue, 01 Dec 2026 09:30:00 +0100",
        },
    )
    forwarded = EmailMessage("Forward", "see the attached message", to=["i@example.org"])
    forwarded.attach(
        "original.eml", EmailMessage("Original", "first text", to=["x@example.org"]).message()
    )
    forwarded.attach(
        "inner.eml", EmailMessage("Inner", "second text", to=["y@example.org"]), "message/rfc822"
    )
    cases["forwarded"] = forwarded
    cases["lazy-subject"] = EmailMessage(
        gettext_lazy("This field is required."), "translated", to=["h@example.org"]
    )
    for name, message in cases.items():
        message.extra_headers["X-Case"] = name
    return list(cases.values())


def leaves(parsed: ParsedMessage) -> list[tuple[Any, ...]]:
    """Every part that is not a container: type, disposition, file name, Content-ID and
    decoded content (for an attached message: its subject and text)."""
    out = []
    for part in parsed.iter_parts() if parsed.is_multipart() else [parsed]:
        assert isinstance(part, ParsedMessage)
        if part.get_content_maintype() == "multipart":
            out.extend(leaves(part))
            continue
        content = part.get_content()
        if isinstance(content, str):
            content = content.replace("\r\n", "\n").rstrip("\n")
        elif isinstance(content, ParsedMessage):
            content = (content["Subject"], leaves(content))
        out.append(
            (
                part.get_content_type(),
                part.get_content_disposition(),
                part.get_filename(),
                part["Content-ID"],
                content,
            )
        )
    return sorted(out, key=repr)


def summary(received: Received) -> dict[str, Any]:
    parsed = BytesParser(policy=policy.default).parsebytes(received.content)
    assert isinstance(parsed, ParsedMessage)
    headers: dict[str, Any] = {}
    for name in parsed.keys():  # noqa: SIM118 - keys() lists repeated headers
        lowered = name.lower()
        if lowered in GENERATED:
            continue
        header = parsed[name]
        addresses = getattr(header, "addresses", None)
        if addresses is not None:
            headers[lowered] = [(a.display_name, a.addr_spec) for a in addresses]
        else:
            headers[lowered] = str(header)
    return {
        "message_id": parsed["Message-ID"] if headers["x-case"] == "headers" else "generated",
        "date": parsed["Date"] if headers["x-case"] == "header-overrides" else "generated",
        "mail_from": received.mail_from,
        "rcpt_tos": sorted(received.rcpt_tos),
        "headers": headers,
        "parts": leaves(parsed),
    }


def by_case(server: SmtpServer) -> dict[str, dict[str, Any]]:
    found = {}
    for received in server.accepted:
        item = summary(received)
        found[item["headers"]["x-case"]] = item
    return found


@pytest.fixture
def servers() -> Iterator[tuple[SmtpServer, SmtpServer]]:
    with SmtpServer() as django_side, SmtpServer() as postroom_side:
        yield django_side, postroom_side


def wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def postroom_config(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "email": {
            "queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "queue.db")}},
            "server": {
                "database": {"engine": "sqlite3", "path": str(tmp_path / "postroom.db")},
                "smtp": {"host": "127.0.0.1", "port": port, "tls": "none"},
            },
        }
    }


@contextmanager
def running_dispatcher(config: dict[str, Any]) -> Iterator[None]:
    """A real dispatcher (ingest and delivery) in a thread, as ``postroom serve`` runs it."""
    server = Server(load_config(config))
    server.open()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.stop()
        thread.join(30)


def test_postroom_sends_what_djangos_smtp_backend_sends(
    tmp_path: Path, servers: tuple[SmtpServer, SmtpServer]
) -> None:
    django_side, postroom_side = servers
    count = len(corpus(tmp_path))
    with translation.override("de"):
        backend = django_smtp_backend(django_side.port)
        assert backend.send_messages(corpus(tmp_path)) == count
    config = postroom_config(tmp_path, postroom_side.port)
    with running_dispatcher(config), override_settings(POSTROOM=config):
        with translation.override("de"):
            assert mail.get_connection().send_messages(corpus(tmp_path)) == count
        wait_for(lambda: len(postroom_side.accepted) == count, 60)
    theirs, ours = by_case(django_side), by_case(postroom_side)
    assert sorted(ours) == sorted(theirs)
    assert theirs["lazy-subject"]["headers"]["subject"] == "Dieses Feld ist zwingend erforderlich."
    assert ours["headers"]["message_id"] == "<fixed-id-123@example.com>"
    # A To (or Cc) in extra_headers replaces the header but not the envelope in Django; postroom
    # has one list for both, so the address shown in the header receives the email too.
    assert ours["header-overrides"].pop("rcpt_tos") == sorted(
        [*theirs["header-overrides"].pop("rcpt_tos"), "shown@example.org"]
    )
    differing = {case: (ours[case], theirs[case]) for case in theirs if ours[case] != theirs[case]}
    assert not differing
