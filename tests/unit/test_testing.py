"""postroom.testing: capturing what code queues, and the pytest plugin's fixture."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import postroom.client
from postroom.client import Outbox
from postroom.errors import AddressError
from postroom.message import Email
from postroom.payload import keyed_message_id
from postroom.queue.memory import MemoryQueue
from postroom.testing import Capture, active_capture, capture


def welcome(to: str = "ana@example.org") -> Email:
    e = Email(from_="app@example.com", to=to, subject="Welcome", text="Click to activate")
    e.attach(b"id,total\n", "invoice.csv")
    return e


def test_capture_records_copies_without_a_queue() -> None:
    queue = MemoryQueue()
    with Outbox(queue=queue) as outbox, capture() as captured:
        e = welcome()
        message_id = e.enqueue(outbox=outbox)
        e.subject = "changed afterwards"
        Email(from_="app@example.com", to="bo@example.org", html="<p>Hi</p>").send_later("5m")
        assert outbox.flush(1) == 0
    assert queue.take(10, 0) == []  # nothing reached the queue
    assert len(captured) == 2 and captured[0].id == message_id
    first = captured.assert_sent(to="ana@example.org")
    assert first.subject == "Welcome" and first.send_after is None
    assert first.attachment("invoice.csv").content == b"id,total\n"
    later = captured.assert_sent(to="bo@example.org", html="<p>Hi</p>")
    assert later.send_after is not None and later.send_after > datetime.now(UTC)
    assert captured.recipients == ["ana@example.org", "bo@example.org"]


def test_a_bad_email_raises_and_is_not_captured() -> None:
    with capture() as captured, pytest.raises(AddressError):
        Email(from_="app@example.com", to="ana@", text="x").enqueue()
    captured.assert_nothing_sent()


def test_find_and_assertions_name_what_was_captured() -> None:
    with capture() as captured:
        welcome("ana@example.org").enqueue()
        welcome("bo@example.org").send_at(datetime.now(UTC) + timedelta(days=1))
    assert len(captured.find(subject="Welcome")) == 2
    assert len(captured.find(subject=re.compile("^Wel"), text="activate")) == 2
    assert captured.find(attachment="other.pdf") == []
    with pytest.raises(AssertionError, match=r"found 2; captured: .*ana@example\.org"):
        captured.assert_sent(subject="Welcome")
    with pytest.raises(AssertionError, match="expected 3 emails, captured 2"):
        captured.assert_count(3)
    with pytest.raises(AssertionError, match=r"no attachment 'x\.pdf'.*invoice\.csv"):
        captured[0].attachment("x.pdf")
    captured.clear()
    captured.assert_nothing_sent()


def test_an_idempotency_key_is_captured_once() -> None:
    with capture() as captured:
        first = welcome().enqueue(idempotency_key="welcome/ana")
        second = welcome("other@example.org").enqueue(idempotency_key="welcome/ana")
    assert first == second == keyed_message_id("welcome/ana")
    assert captured.assert_sent().recipients == ["ana@example.org"]


def test_emails_from_other_threads_are_captured() -> None:
    with capture() as captured:
        threads = [threading.Thread(target=welcome(f"u{n}@example.org").enqueue) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    captured.assert_count(8)


def test_captures_nest_and_the_real_submit_comes_back() -> None:
    real = postroom.client.submit
    with capture() as outer:
        with capture() as inner:
            assert active_capture() is inner
            welcome().enqueue()
        welcome().enqueue()
    assert (len(outer), len(inner)) == (1, 1)
    assert postroom.client.submit is real and active_capture() is None


def test_the_fixture_is_a_capture(postroom_outbox: Capture) -> None:
    welcome().enqueue()
    assert postroom_outbox.assert_sent().subject == "Welcome"


PLUGIN_TEST = """
from postroom import Email

def test_uses_the_fixture(postroom_outbox):
    Email(from_="a@example.com", to="b@example.org", subject="S", text="T").enqueue()
    assert postroom_outbox.assert_sent(to="b@example.org").text == "T"

def test_fails_on_a_missing_email(postroom_outbox):
    postroom_outbox.assert_sent(to="nobody@example.org")
"""


def test_the_plugin_is_found_through_its_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(PLUGIN_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "expected one email matching to='nobody@example.org', found 0" in done.stdout
    assert not (tmp_path / ".postroom").exists()  # no queue was created
