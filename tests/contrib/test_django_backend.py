"""The Django backend: every Django send path, settings, transactions, message attributes and
Django's own test runs. Emails are captured with the ``postroom_outbox`` fixture unless a test
checks the real queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import (
    EmailMessage,
    EmailMultiAlternatives,
    get_connection,
    mail_admins,
    mail_managers,
    send_mail,
    send_mass_mail,
)
from django.db import transaction
from django.test import Client, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

from postroom.config import load_config
from postroom.errors import HeaderError, MessageError
from postroom.payload import decode, keyed_message_id
from postroom.queue import open_queue
from postroom.testing import Capture
from tests.contrib.django_compat import HAS_MAILERS, backend_settings, legacy_mail_api

pytestmark = legacy_mail_api()


def test_send_mail_queues_one_email_and_returns_one(postroom_outbox: Capture) -> None:
    assert send_mail("Hi", "Hello", "app@example.com", ["ana@example.org"]) == 1
    sent = postroom_outbox.assert_sent(to="ana@example.org", subject="Hi")
    assert sent.text == "Hello" and sent.html is None and sent.from_ == "app@example.com"


def test_send_mail_with_html_message_and_the_default_from(postroom_outbox: Capture) -> None:
    send_mail("Hi", "Plain", None, ["ana@example.org"], html_message="<p>Rich</p>")
    sent = postroom_outbox.assert_sent(to="ana@example.org")
    assert (sent.text, sent.html) == ("Plain", "<p>Rich</p>")
    assert sent.from_ == "Webmaster <webmaster@example.com>"  # DEFAULT_FROM_EMAIL


def test_send_mass_mail_returns_the_number_queued(postroom_outbox: Capture) -> None:
    datatuple = [
        (f"Subject {n}", f"Body {n}", "app@example.com", [f"user{n}@example.org"]) for n in range(5)
    ]
    assert send_mass_mail(datatuple) == 5
    assert postroom_outbox.subjects == [f"Subject {n}" for n in range(5)]
    assert postroom_outbox.recipients == [f"user{n}@example.org" for n in range(5)]


def test_mail_admins_and_mail_managers(postroom_outbox: Capture) -> None:
    mail_admins("Broken", "Traceback", html_message="<pre>Traceback</pre>")
    mail_managers("Report", "Numbers")
    admins = postroom_outbox.assert_sent(to="admin@example.com")
    assert admins.subject == "[Django] Broken" and admins.from_ == "server@example.com"
    assert admins.html == "<pre>Traceback</pre>"
    assert postroom_outbox.assert_sent(to="manager@example.com").subject == "[Django] Report"


def test_email_message_send_with_every_field(tmp_path: Path, postroom_outbox: Capture) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4")
    message = EmailMultiAlternatives(
        "Everything",
        "text body",
        "Shop <shop@example.com>",
        ["to@example.org"],
        bcc=["bcc@example.org"],
        cc=["cc@example.org"],
        reply_to=["help@example.com"],
        headers={"X-Tag": "t1"},
    )
    message.attach_alternative("<p>html body</p>", "text/html")
    message.attach("notes.txt", "some notes", "text/plain")
    message.attach_file(report)
    assert message.send() == 1
    sent = postroom_outbox.assert_sent(attachment="report.pdf")
    assert sent.recipients == ["to@example.org", "cc@example.org", "bcc@example.org"]
    assert sent.email.reply_to == ["help@example.com"]
    assert sent.headers == {"X-Tag": "t1"}
    assert sent.attachment("notes.txt").content == b"some notes"
    assert sent.attachment("notes.txt").content_type == "text/plain; charset=utf-8"
    assert sent.attachment("report.pdf").content_type == "application/pdf"
    assert b"Bcc" not in sent.to_bytes() and b"bcc@example.org" not in sent.to_bytes()


def test_an_unnamed_mime_part_gets_a_name(postroom_outbox: Capture) -> None:
    """postroom names every part: a part Django would send without a file name gets one."""
    from email.mime.image import MIMEImage

    message = EmailMessage("Logo", "see", "a@example.com", ["b@example.org"])
    image = MIMEImage(b"\x89PNG\r\n\x1a\n", "png")
    image.add_header("Content-ID", "<logo@example.com>")
    message.attach(image)
    message.attach(None, "no name", "text/plain")
    message.send()
    image_part, text_part = postroom_outbox.assert_sent(to="b@example.org").attachments
    assert (image_part.filename, image_part.inline, image_part.content_id) == (
        "logo.png",
        True,
        "logo@example.com",
    )
    assert (text_part.filename, text_part.inline, text_part.content) == (
        "attachment.txt",
        False,
        b"no name",
    )


def test_connections_open_close_and_send_several(postroom_outbox: Capture) -> None:
    connection = get_connection()
    assert connection.open() is None  # nothing to open: queueing needs no connection
    messages = [EmailMessage(f"n{n}", "b", "a@example.com", ["b@example.org"]) for n in range(3)]
    assert connection.send_messages(messages) == 3
    assert connection.send_messages([]) == 0
    connection.close()
    with get_connection() as again:
        assert again.send_messages(messages[:1]) == 1
    postroom_outbox.assert_count(4)
    assert all(m.postroom_id for m in messages)  # type: ignore[attr-defined]


def test_a_bad_message_raises_unless_fail_silently(postroom_outbox: Capture) -> None:
    bad = EmailMessage("s", "b", "a@example.com", ["b@example.org"], headers={"Subject": "x"})
    bad.extra_headers = {"X-Bad": "line\nbreak"}
    with pytest.raises(HeaderError, match="line break"):
        get_connection().send_messages([bad])
    good = EmailMessage("s", "b", "a@example.com", ["b@example.org"])
    assert get_connection(fail_silently=True).send_messages([bad, good]) == 1
    assert send_mail("s", "b", "a@example.com", ["not an address"], fail_silently=True) == 0
    postroom_outbox.assert_count(1)


def test_an_unsupported_alternative_is_refused_by_name(postroom_outbox: Capture) -> None:
    message = EmailMultiAlternatives("s", "b", "a@example.com", ["b@example.org"])
    message.attach_alternative("BEGIN:VCALENDAR", "text/calendar")
    with pytest.raises(MessageError, match="text/calendar"):
        message.send()
    postroom_outbox.assert_nothing_sent()


def test_schedule_priority_and_idempotency_through_attributes(postroom_outbox: Capture) -> None:
    at = EmailMessage("at", "b", "a@example.com", ["b@example.org"])
    at.send_at = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)  # type: ignore[attr-defined]
    at.priority = 7  # type: ignore[attr-defined]
    later = EmailMessage("later", "b", "a@example.com", ["b@example.org"])
    later.send_later = "1h"  # type: ignore[attr-defined]
    keyed = [EmailMessage("keyed", "b", "a@example.com", ["b@example.org"]) for _ in range(2)]
    for message in keyed:
        message.idempotency_key = "order-1/receipt"  # type: ignore[attr-defined]
    assert get_connection().send_messages([at, later, *keyed]) == 4
    assert postroom_outbox.subjects == ["at", "later", "keyed"]  # one email per key
    first, second, third = postroom_outbox
    assert first.send_after == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert first.email.priority == 7
    assert second.send_after is not None
    assert second.send_after - datetime.now(UTC) > timedelta(minutes=59)
    assert third.id == keyed_message_id("order-1/receipt")
    assert keyed[0].postroom_id == keyed[1].postroom_id == third.id  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("attribute", "value", "problem"),
    [
        ("send_at", "tomorrow", "send_at must be a datetime"),
        ("send_later", 5, "send_later must be a duration"),
        ("idempotency_key", 42, "idempotency_key must be a string"),
        ("priority", 2**40, "out of range"),
    ],
)
def test_bad_attributes_are_refused_by_name(
    postroom_outbox: Capture, attribute: str, value: object, problem: str
) -> None:
    message = EmailMessage("s", "b", "a@example.com", ["b@example.org"])
    setattr(message, attribute, value)
    with pytest.raises(MessageError, match=problem):
        message.send()
    postroom_outbox.assert_nothing_sent()


# -- transactions ---------------------------------------------------------------------------------


def test_inside_atomic_the_email_leaves_only_on_commit(postroom_outbox: Capture) -> None:
    with transaction.atomic():
        assert send_mail("Welcome", "b", "a@example.com", ["ana@example.org"]) == 1
        postroom_outbox.assert_nothing_sent()
    postroom_outbox.assert_sent(subject="Welcome")


def test_a_rolled_back_signup_sends_no_welcome_email(postroom_outbox: Capture) -> None:
    client = Client()
    assert client.get("/signup", {"email": "ana@example.org", "fail": "1"}).status_code == 200
    postroom_outbox.assert_nothing_sent()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_mail("Welcome", "b", "a@example.com", ["bo@example.org"])
        raise RuntimeError("the sign-up failed")
    postroom_outbox.assert_nothing_sent()
    assert client.get("/signup", {"email": "cy@example.org"}).status_code == 200
    postroom_outbox.assert_sent(to="cy@example.org", subject="Welcome")


def test_on_commit_can_be_turned_off(postroom_outbox: Capture) -> None:
    with override_settings(POSTROOM_ON_COMMIT=False), transaction.atomic():
        send_mail("Now", "b", "a@example.com", ["ana@example.org"])
        postroom_outbox.assert_sent(subject="Now")
    with transaction.atomic():
        get_connection(on_commit=False).send_messages(
            [EmailMessage("Also now", "b", "a@example.com", ["b@example.org"])]
        )
        postroom_outbox.assert_sent(subject="Also now")


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS OPTIONS are Django 6.1's")
def test_mailers_options_reach_the_backend(postroom_outbox: Capture) -> None:
    with override_settings(**backend_settings(on_commit=False)), transaction.atomic():
        message = EmailMessage("Options", "b", "a@example.com", ["b@example.org"])
        assert mail.mailers.default.send_messages([message]) == 1
        postroom_outbox.assert_sent(subject="Options")


# -- settings and the real queue --------------------------------------------------------------


def queued_subjects(config: dict[str, Any]) -> list[str]:
    queue = open_queue(load_config(config).email.queue["default"])
    try:
        return [decode(item.payload).email["subject"] for item in queue.take(100, 0)]
    finally:
        queue.close()


def test_postroom_setting_configures_the_queue(postroom_settings: dict[str, Any]) -> None:
    import postroom

    send_mail("Real", "b", "a@example.com", ["ana@example.org"])
    assert postroom.flush(10) == 0
    assert queued_subjects(postroom_settings) == ["Real"]


def test_postroom_config_setting_names_a_file(tmp_path: Path) -> None:
    import postroom

    config = {"email": {"queue": {"default": {"engine": "sqlite", "path": str(tmp_path / "q.db")}}}}
    path = tmp_path / "postroom.yaml"
    path.write_text(yaml.safe_dump(config))
    with override_settings(POSTROOM_CONFIG=str(path)):
        send_mail("From a file", "b", "a@example.com", ["ana@example.org"])
        assert postroom.flush(10) == 0
    assert queued_subjects(config) == ["From a file"]


def test_both_settings_at_once_are_refused(tmp_path: Path) -> None:
    both = override_settings(POSTROOM={"email": {}}, POSTROOM_CONFIG="x.yaml")
    with both, pytest.raises(ImproperlyConfigured, match="not both"):
        send_mail("s", "b", "a@example.com", ["ana@example.org"])


# -- Django's own test runs -------------------------------------------------------------------


@pytest.fixture
def django_test_environment() -> Any:
    setup_test_environment()
    try:
        with override_settings(**backend_settings()):
            yield
    finally:
        teardown_test_environment()


@pytest.mark.usefixtures("django_test_environment")
def test_in_a_django_test_run_messages_go_to_mail_outbox(postroom_settings: dict[str, Any]) -> None:
    message = EmailMessage("Test run", "b", "a@example.com", ["ana@example.org"])
    assert message.send() == 1
    assert [m.subject for m in mail.outbox] == ["Test run"]
    assert mail.outbox[0] is not message  # a copy, as Django's locmem backend keeps
    assert queued_subjects(postroom_settings) == []  # nothing reached a queue


@pytest.mark.usefixtures("django_test_environment")
def test_in_a_django_test_run_the_capture_sees_them_too(postroom_outbox: Capture) -> None:
    send_mail("Both", "b", "a@example.com", ["ana@example.org"])
    assert len(mail.outbox) == 1
    postroom_outbox.assert_sent(subject="Both")


@pytest.mark.usefixtures("django_test_environment")
def test_in_a_django_test_run_a_bad_message_still_fails() -> None:
    with pytest.raises(MessageError):
        send_mail("s", "b", "a@example.com", ["<broken"])
    assert mail.outbox == []
