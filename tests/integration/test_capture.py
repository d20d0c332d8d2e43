"""The capture SMTP server of ``postroom serve --dev``: one .eml file per message."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest

from postroom.transport.base import DeliveryResult, Outcome
from postroom.transport.capture import RCPT_TO_HEADER, CaptureServer
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode

SENDER = "sender@example.com"


def raw_message(subject: str, body: str = "Hello.\r\n.a line with a leading dot\r\n") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.com>\r\n\r\n{body}"
    ).encode()


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[CaptureServer]:
    with CaptureServer(tmp_path / "mailbox" / "dev", port=0) as server:
        yield server


@pytest.fixture
def transport(capture: CaptureServer) -> Iterator[SmtpTransport]:
    settings = SmtpSettings(
        host="127.0.0.1", port=capture.port, tls=TlsMode.NONE, helo="client.test"
    )
    smtp = SmtpTransport(settings)
    yield smtp
    smtp.close()


def deliver(
    transport: SmtpTransport, mail_from: str, recipients: list[str], raw: bytes
) -> DeliveryResult:
    [result] = transport.deliver_batch([(mail_from, recipients, raw)])
    return result


def parsed(path: Path) -> Message:
    return message_from_bytes(path.read_bytes())


def test_port_zero_gets_a_real_port_and_creates_the_mailbox(
    capture: CaptureServer, tmp_path: Path
) -> None:
    assert capture.port > 0
    assert capture.running
    assert (tmp_path / "mailbox" / "dev").is_dir()
    assert capture.messages() == []


def test_each_message_is_stored_as_received_plus_the_envelope_recipients(
    capture: CaptureServer, transport: SmtpTransport
) -> None:
    raw = raw_message("first")
    result = deliver(transport, SENDER, ["alice@example.com", "hidden@example.org"], raw)

    assert result.outcome is Outcome.SENT
    [path] = capture.messages()
    assert path.suffix == ".eml"
    assert result.reply.text == f"OK stored as {path.name}"
    expected = f"{RCPT_TO_HEADER}: alice@example.com, hidden@example.org\r\n".encode() + raw
    assert path.read_bytes() == expected
    stored = parsed(path)
    assert stored["Subject"] == "first"
    assert "hidden@example.org" not in stored["To"]  # only the added header shows the Bcc


def test_files_sort_in_arrival_order_and_no_temporary_file_is_left(
    capture: CaptureServer, transport: SmtpTransport
) -> None:
    subjects = [f"message-{n}" for n in range(5)]
    for subject in subjects:
        assert deliver(transport, SENDER, ["a@example.com"], raw_message(subject)).outcome is (
            Outcome.SENT
        )

    assert [parsed(p)["Subject"] for p in capture.messages()] == subjects
    assert len({p.name for p in capture.messages()}) == 5
    assert sorted(p.name for p in capture.mailbox_dir.iterdir()) == [
        p.name for p in capture.messages()
    ]


def test_a_long_recipient_list_is_folded(capture: CaptureServer, transport: SmtpTransport) -> None:
    recipients = [f"recipient-number-{n}@example.com" for n in range(30)]

    deliver(transport, SENDER, recipients, raw_message("many"))

    [path] = capture.messages()
    header_block = path.read_bytes().split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 78
    value = parsed(path)[RCPT_TO_HEADER]
    assert [r.strip() for r in " ".join(value.split()).split(",")] == recipients


def test_plain_smtplib_client(capture: CaptureServer) -> None:
    with smtplib.SMTP("127.0.0.1", capture.port, local_hostname="client.test") as client:
        refused = client.sendmail(SENDER, ["x@example.com"], raw_message("plain"))
    assert refused == {}
    assert parsed(capture.messages()[0])[RCPT_TO_HEADER] == "x@example.com"


def test_stop_with_a_pooled_client_connection_open_then_start_again(
    tmp_path: Path,
) -> None:
    capture = CaptureServer(tmp_path / "box", port=0)
    capture.start()
    transport = SmtpTransport(
        SmtpSettings(host="127.0.0.1", port=capture.port, tls=TlsMode.NONE, connect_timeout_s=2)
    )
    try:
        assert deliver(transport, SENDER, ["a@example.com"], raw_message("one")).outcome is (
            Outcome.SENT
        )
        port = capture.port
        capture.stop()  # the transport still holds its connection in the pool
        assert not capture.running
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        # The pooled connection is dead; the retry on a new connection is refused too: the
        # relay is down, and the message is deferred (nothing of it was sent).
        result = deliver(transport, SENDER, ["a@example.com"], raw_message("two"))
        assert result.outcome is Outcome.DEFERRED
        assert result.reply.text.startswith("cannot connect")
        assert not transport.relay.up

        capture.start()
        retry = SmtpTransport(SmtpSettings(host="127.0.0.1", port=capture.port, tls=TlsMode.NONE))
        try:
            assert deliver(retry, SENDER, ["a@example.com"], raw_message("three")).outcome is (
                Outcome.SENT
            )
        finally:
            retry.close()
    finally:
        transport.close()
        capture.stop()
    assert [parsed(p)["Subject"] for p in capture.messages()] == ["one", "three"]


def test_starting_twice_is_an_error(capture: CaptureServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        capture.start()


def test_a_taken_port_fails_at_once_with_the_address(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        capture = CaptureServer(tmp_path / "box", port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            capture.start()
        assert not capture.running
