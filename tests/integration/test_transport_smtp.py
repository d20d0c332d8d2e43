"""SmtpTransport against real aiosmtpd servers: every outcome rule, pooling, TLS and AUTH."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from postroom.errors import ConfigError
from postroom.transport.base import DeliveryResult, Outcome, Reply
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode
from tests.smtp_servers import DROP, SmtpServer, make_self_signed_cert, server_tls_context

SENDER = "sender@example.com"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.org"

MakeTransport = Callable[..., SmtpTransport]


def message(message_id: str = "<m1@example.com>", body: str = "Hello.") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {ALICE}\r\nSubject: test\r\nMessage-ID: {message_id}\r\n"
        f"\r\n{body}\r\n"
    ).encode()


@pytest.fixture(params=[False, True], ids=["lock-step", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """Every conversation test runs twice: command by command, and with RFC 2920 PIPELINING."""
    with SmtpServer(pipelining=request.param) as running:
        yield running


@pytest.fixture
def make_transport() -> Iterator[MakeTransport]:
    """Build transports (plain text by default) that are closed after the test."""
    made: list[SmtpTransport] = []

    def make(port: int, **kwargs: Any) -> SmtpTransport:
        kwargs.setdefault("tls", TlsMode.NONE)
        kwargs.setdefault("helo", "client.test")
        transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, **kwargs))
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def transport(server: SmtpServer, make_transport: MakeTransport) -> SmtpTransport:
    return make_transport(server.port, command_timeout_s=5, data_timeout_s=5)


def deliver(
    transport: SmtpTransport, mail_from: str, recipients: Any, content: bytes
) -> DeliveryResult:
    """One job through ``deliver_batch``."""
    [result] = transport.deliver_batch([(mail_from, recipients, content)])
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- success and per-recipient results ---------------------------------------------------------


def test_sent_to_every_recipient(server: SmtpServer, transport: SmtpTransport) -> None:
    result = deliver(transport, SENDER, [ALICE, BOB], message())

    assert result.outcome is Outcome.SENT
    assert result.reply == Reply(250, "OK", "2.0.0")
    assert result.accepted == (ALICE, BOB)
    assert result.refused == {}
    assert result.duration_s > 0
    [received] = server.messages
    assert (received.mail_from, received.rcpt_tos) == (SENDER, (ALICE, BOB))
    assert received.content == message()


def test_message_is_dot_stuffed_and_line_endings_normalised(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    raw = b"Subject: dots\n\n.starts with a dot\r\n..two dots\n.\nlast line without newline"
    assert deliver(transport, SENDER, [ALICE], raw).outcome is Outcome.SENT

    expected = (
        b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\n"
        b"last line without newline\r\n"
    )
    assert server.messages[0].content == expected


def test_duplicate_recipients_are_sent_once(server: SmtpServer, transport: SmtpTransport) -> None:
    result = deliver(transport, SENDER, [ALICE, BOB, ALICE], message())
    assert result.accepted == (ALICE, BOB)
    assert server.messages[0].rcpt_tos == (ALICE, BOB)


def test_refused_recipients_are_reported_one_by_one(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    server.on_rcpt(BOB, "550 5.1.1 no such user")
    server.on_rcpt(CAROL, "452 4.2.2 mailbox full")

    result = deliver(transport, SENDER, [ALICE, BOB, CAROL], message())

    assert result.outcome is Outcome.SENT
    assert result.accepted == (ALICE,)
    assert result.refused == {
        BOB: Reply(550, "no such user", "5.1.1"),
        CAROL: Reply(452, "mailbox full", "4.2.2"),
    }
    assert server.messages[0].rcpt_tos == (ALICE,)


def test_all_recipients_refused_permanently(server: SmtpServer, transport: SmtpTransport) -> None:
    server.on_rcpt(None, "550 5.1.1 no such user", times=2)

    result = deliver(transport, SENDER, [ALICE, BOB], message())

    assert result.outcome is Outcome.PERMANENT
    assert result.reply == Reply(550, "no such user", "5.1.1")
    assert result.accepted == ()
    assert set(result.refused) == {ALICE, BOB}
    assert server.messages == []


def test_all_recipients_refused_with_one_temporary_is_temporary(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    server.on_rcpt(ALICE, "550 5.1.1 no such user")
    server.on_rcpt(BOB, "451 4.3.0 greylisted")

    result = deliver(transport, SENDER, [ALICE, BOB], message())

    assert result.outcome is Outcome.TEMPORARY
    assert result.reply == Reply(451, "greylisted", "4.3.0")
    assert result.refused[ALICE].is_permanent
    assert result.refused[BOB].is_temporary


# -- replies to MAIL, DATA and the final dot ------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "reply", "outcome"),
    [
        ("mail", "451 4.3.0 try again later", Outcome.TEMPORARY),
        ("mail", "553 5.1.8 sender rejected", Outcome.PERMANENT),
        ("data", "452 4.3.1 insufficient storage", Outcome.TEMPORARY),
        ("data", "554 5.5.1 no valid recipients", Outcome.PERMANENT),
        ("dot", "451 4.7.1 content scan failed", Outcome.TEMPORARY),
        ("dot", "554 5.6.0 message rejected", Outcome.PERMANENT),
    ],
)
def test_failure_replies_decide_the_outcome_and_keep_the_connection(
    server: SmtpServer, transport: SmtpTransport, step: str, reply: str, outcome: Outcome
) -> None:
    getattr(server, f"on_{step}")(reply, times=1)

    result = deliver(transport, SENDER, [ALICE], message("<first@example.com>"))

    code, enhanced, text = reply.split(" ", 2)
    assert result.outcome is outcome
    assert result.reply == Reply(int(code), text, enhanced)
    assert result.accepted == ()
    # The connection was reset, not thrown away: the next message goes over it.
    again = deliver(transport, SENDER, [ALICE], message("<second@example.com>"))
    assert again.outcome is Outcome.SENT
    assert server.connections_total == 1
    assert server.count("<second@example.com>") == 1
    assert server.count("<first@example.com>") == 0


@pytest.mark.parametrize("step", ["rcpt", "data", "dot"])
def test_421_is_temporary_and_discards_the_connection(
    server: SmtpServer, transport: SmtpTransport, step: str
) -> None:
    if step == "rcpt":
        server.on_rcpt(None, "421 4.3.2 shutting down", times=1)
    else:
        getattr(server, f"on_{step}")("421 4.3.2 shutting down", times=1)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.TEMPORARY
    assert result.reply == Reply(421, "shutting down", "4.3.2")
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert server.connections_total == 2


def test_421_at_mail_on_a_fresh_connection_is_temporary(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    server.on_mail("421 4.3.2 too busy", times=1)
    result = deliver(transport, SENDER, [ALICE], message())
    assert result.outcome is Outcome.TEMPORARY
    assert result.reply.code == 421


# -- dropped connections and timeouts ------------------------------------------------------------


@pytest.mark.parametrize("step", ["mail", "rcpt", "data"])
def test_drop_before_the_final_dot_is_temporary(
    server: SmtpServer, transport: SmtpTransport, step: str
) -> None:
    if step == "rcpt":
        server.on_rcpt(None, DROP, times=1)
    else:
        getattr(server, f"on_{step}")(DROP, times=1)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.TEMPORARY
    assert result.reply.code == 0
    assert "connection lost" in result.reply.text
    assert step.upper() in result.reply.text.upper()
    assert server.messages == []


def test_drop_after_the_final_dot_is_maybe_delivered(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    server.on_dot(DROP, times=1)

    result = deliver(transport, SENDER, [ALICE], message("<maybe@example.com>"))

    assert result.outcome is Outcome.MAYBE_DELIVERED
    assert result.reply.code == 0
    assert "final dot" in result.reply.text
    assert server.count("<maybe@example.com>", accepted_only=False) == 1


def test_timeout_after_the_final_dot_is_maybe_delivered(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, command_timeout_s=0.5, data_timeout_s=0.5)
    server.on_dot("250 2.0.0 OK at last", delay_s=2.0, times=1)

    started = time.monotonic()
    result = deliver(transport, SENDER, [ALICE], message("<slow@example.com>"))

    assert result.outcome is Outcome.MAYBE_DELIVERED
    assert "timed out after 0.5 s" in result.reply.text
    assert time.monotonic() - started < 1.9
    assert server.count("<slow@example.com>") == 1  # the server has it
    # The timed-out connection is not reused: its late reply would answer the next command.
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert server.connections_total == 2


def test_timeout_before_the_final_dot_is_temporary(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, command_timeout_s=0.5, data_timeout_s=5)
    server.on_mail("250 OK", delay_s=2.0, times=1)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.TEMPORARY
    assert result.reply.code == 0
    assert "timed out after 0.5 s waiting for the reply to MAIL FROM" in result.reply.text


def test_the_data_timeout_not_the_command_timeout_applies_after_the_dot(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, command_timeout_s=0.3, data_timeout_s=5)
    server.on_dot("250 2.0.0 queued", delay_s=0.6, times=1)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.SENT
    assert result.reply.text == "queued"


def test_connection_refused_is_deferred(make_transport: MakeTransport) -> None:
    transport = make_transport(free_port(), connect_timeout_s=2)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.DEFERRED
    assert result.reply.code == 0
    assert result.reply.text.startswith("cannot connect to 127.0.0.1:")
    assert "refused" in result.reply.text.lower()


def test_unknown_host_is_deferred() -> None:
    settings = SmtpSettings(host="no-such-host.invalid", tls=TlsMode.NONE, connect_timeout_s=5)
    transport = SmtpTransport(settings)
    try:
        result = deliver(transport, SENDER, [ALICE], message())
    finally:
        transport.close()
    assert result.outcome is Outcome.DEFERRED
    assert result.reply.text.startswith("cannot connect to no-such-host.invalid:25")


# -- chunks of 100 recipients ---------------------------------------------------------------------


def test_250_recipients_go_in_three_transactions(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    recipients = [f"user{i}@example.com" for i in range(250)]

    result = deliver(transport, SENDER, recipients, message())

    assert result.outcome is Outcome.SENT
    assert result.accepted == tuple(recipients)
    assert [len(m.rcpt_tos) for m in server.messages] == [100, 100, 50]
    assert [r for m in server.messages for r in m.rcpt_tos] == recipients
    assert server.connections_total == 1


def test_a_failed_chunk_lists_its_recipients_as_refused(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    recipients = [f"user{i}@example.com" for i in range(250)]
    server.on_dot("451 4.3.0 queue full", times=1)  # the first chunk only

    result = deliver(transport, SENDER, recipients, message())

    assert result.outcome is Outcome.SENT
    assert result.accepted == tuple(recipients[100:])
    assert result.refused == {r: Reply(451, "queue full", "4.3.0") for r in recipients[:100]}


def test_a_lost_connection_leaves_later_chunks_unattempted(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    recipients = [f"user{i}@example.com" for i in range(250)]
    server.on_dot("250 2.0.0 OK", times=1)
    server.on_dot(DROP, times=1)  # newest rule first: the first chunk's dot is dropped

    result = deliver(transport, SENDER, recipients, message())

    assert result.outcome is Outcome.MAYBE_DELIVERED
    assert result.accepted == ()
    assert len(server.messages) == 1  # chunks 2 and 3 were never sent
    assert set(result.refused) == set(recipients[100:])
    assert all(r.code == 0 and "not attempted" in r.text for r in result.refused.values())


# -- PIPELINING (RFC 2920) -----------------------------------------------------------------------


class _StrictPipeliningServer:
    """One SMTP session on a raw socket that answers no envelope command before DATA arrived.

    A client that waits for the reply to MAIL FROM before sending RCPT TO never gets one and
    times out, so a delivery only succeeds when the whole envelope came in one go.
    ``data_reply`` answers DATA; a reply other than 354 ends the session after RSET.
    """

    def __init__(self, rcpt_replies: list[str], data_reply: str = "354 go ahead") -> None:
        self.rcpt_replies, self.data_reply = rcpt_replies, data_reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._session, daemon=True)
        self.thread.start()

    def _session(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.sendall(b"220 strict ready\r\n")
            lines.readline()  # EHLO
            conn.sendall(b"250-strict\r\n250 PIPELINING\r\n")
            envelope: list[bytes] = []
            while not envelope or envelope[-1] != b"DATA\r\n":
                envelope.append(lines.readline())
            self.received.extend(envelope)
            replies = ["250 sender ok", *self.rcpt_replies, self.data_reply]
            conn.sendall("".join(f"{r}\r\n" for r in replies).encode())
            if self.data_reply.startswith("354"):
                while (line := lines.readline()) not in (b".\r\n", b""):
                    self.received.append(line)
                conn.sendall(b"250 2.0.0 queued\r\n")
            command = lines.readline()  # QUIT or RSET
            self.received.append(command)
            conn.sendall(b"250 bye\r\n" if command.startswith(b"RSET") else b"221 bye\r\n")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_pipelining_sends_the_envelope_in_one_write(make_transport: MakeTransport) -> None:
    strict = _StrictPipeliningServer(["250 ok", "550 5.1.1 no such user", "250 ok"])
    transport = make_transport(strict.port, command_timeout_s=2)

    result = deliver(transport, SENDER, [ALICE, BOB, CAROL], message())
    transport.close()
    strict.close()

    assert result.outcome is Outcome.SENT
    assert result.accepted == (ALICE, CAROL)
    assert result.refused == {BOB: Reply(550, "no such user", "5.1.1")}
    assert strict.received[:5] == [
        f"MAIL FROM:<{SENDER}>\r\n".encode(),
        f"RCPT TO:<{ALICE}>\r\n".encode(),
        f"RCPT TO:<{BOB}>\r\n".encode(),
        f"RCPT TO:<{CAROL}>\r\n".encode(),
        b"DATA\r\n",
    ]
    assert b"Subject: test\r\n" in strict.received


def test_the_next_envelope_goes_out_with_the_data_before_the_reply(
    make_transport: MakeTransport,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    seen_before_reply: list[bytes] = []

    def session() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.sendall(b"220 ready\r\n")
            lines.readline()
            conn.sendall(b"250-strict\r\n250 PIPELINING\r\n")
            for _ in range(3):
                lines.readline()  # MAIL, RCPT, DATA of the first message
            conn.sendall(b"250 ok\r\n250 ok\r\n354 go\r\n")
            while lines.readline() != b".\r\n":
                pass
            # no reply to the dot yet: the next envelope must come anyway
            seen_before_reply.extend(lines.readline() for _ in range(3))
            conn.sendall(b"250 first queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
            while lines.readline() != b".\r\n":
                pass
            conn.sendall(b"250 second queued\r\n")
            lines.readline()
            conn.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=session, daemon=True)
    thread.start()
    transport = make_transport(listener.getsockname()[1], connections=1, command_timeout_s=3)
    jobs = [(SENDER, [ALICE], message("<a@example.com>")), (SENDER, [BOB], message("<b@x.org>"))]

    results = transport.deliver_batch(jobs)
    transport.close()
    thread.join(5)
    listener.close()

    assert [r.reply.text for r in results] == ["first queued", "second queued"]
    assert seen_before_reply == [
        f"MAIL FROM:<{SENDER}>\r\n".encode(),
        f"RCPT TO:<{BOB}>\r\n".encode(),
        b"DATA\r\n",
    ]


def test_pipelined_data_accepted_without_a_valid_recipient_sends_nothing(
    make_transport: MakeTransport,
) -> None:
    strict = _StrictPipeliningServer(["550 5.1.1 no such user"], data_reply="354 go ahead")
    transport = make_transport(strict.port, command_timeout_s=2)

    result = deliver(transport, SENDER, [ALICE], message())
    strict.close()

    assert result.outcome is Outcome.TEMPORARY
    assert "accepted DATA with no valid recipient" in result.reply.text
    assert b"Subject: test\r\n" not in strict.received  # the connection was dropped instead


# -- several deliveries from one thread ----------------------------------------------------------


def test_a_batch_overlaps_its_conversations_one_per_connection(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=4)
    server.on_dot("250 2.0.0 OK", delay_s=0.3)
    jobs = [(SENDER, [ALICE], message(f"<b{i}@example.com>")) for i in range(4)]

    started = time.monotonic()
    results = transport.deliver_batch(jobs)
    took = time.monotonic() - started

    assert [r.outcome for r in results] == [Outcome.SENT] * 4
    assert took < 0.9  # one after the other would take 1.2 s
    assert server.connections_peak == 4
    assert sorted(m.message_id or "" for m in server.accepted) == [
        f"<b{i}@example.com>" for i in range(4)
    ]


def test_a_slow_reply_holds_up_only_its_own_connection(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=4)
    server.on_dot("250 2.0.0 OK", delay_s=1.5, times=1)  # the first message to end its data
    jobs = [(SENDER, [ALICE], message(f"<s{i}@example.com>")) for i in range(12)]

    results = transport.deliver_batch(jobs)

    durations = sorted(r.duration_s for r in results)
    assert [r.outcome for r in results] == [Outcome.SENT] * 12
    assert durations[-1] >= 1.5
    # with PIPELINING the next message's envelope went out behind the slow one's data: that
    # one message waits for the slow reply too, and no other
    behind = 1 if server.pipelining else 0
    assert durations[-2 - behind] < 0.5, "other conversations waited behind the slow reply"


def test_a_batch_works_with_descriptors_numbered_over_1024(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        transport = make_transport(server.port, connections=2)
        server.on_dot("250 2.0.0 OK", delay_s=0.05)  # the conversations wait, so they poll
        jobs = [(SENDER, [ALICE], message(f"<fd{i}@example.com>")) for i in range(4)]
        results = transport.deliver_batch(jobs)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [r.outcome for r in results] == [Outcome.SENT] * 4


@pytest.mark.parametrize(
    ("dot_reply", "first", "connections"),
    [
        ("550 5.7.1 rejected", Outcome.PERMANENT, 1),
        ("451 4.3.0 try later", Outcome.TEMPORARY, 1),
        ("421 4.3.2 closing", Outcome.TEMPORARY, 2),
        (DROP, Outcome.MAYBE_DELIVERED, 2),
    ],
)
def test_the_message_behind_a_failed_one_is_sent_once(
    server: SmtpServer,
    make_transport: MakeTransport,
    dot_reply: str,
    first: Outcome,
    connections: int,
) -> None:
    transport = make_transport(server.port, connections=1)
    server.on_dot(dot_reply, times=1)
    jobs = [(SENDER, [ALICE], message(f"<f{i}@example.com>")) for i in range(3)]

    results = transport.deliver_batch(jobs)

    assert [r.outcome for r in results] == [first, Outcome.SENT, Outcome.SENT]
    assert [server.count(f"<f{i}@example.com>") for i in (1, 2)] == [1, 1]
    assert server.connections_total == connections  # a closed connection is replaced once


def test_a_batch_reports_every_message_on_its_own(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=2)
    server.on_rcpt(BOB, "550 5.1.1 no such user")
    jobs = [
        (SENDER, [ALICE], message("<ok@example.com>")),
        (SENDER, ["not <an> address"], message("<bad@example.com>")),
        (SENDER, [BOB], message("<refused@example.com>")),
        (SENDER, [CAROL], message("<also-ok@example.com>")),
        (SENDER, [], message("<nobody@example.com>")),
    ]

    results = transport.deliver_batch(jobs)

    assert [r.outcome for r in results] == [
        Outcome.SENT,
        Outcome.PERMANENT,
        Outcome.PERMANENT,
        Outcome.SENT,
        Outcome.PERMANENT,
    ]
    assert "cannot be used in an SMTP command" in results[1].reply.text
    assert results[2].refused == {BOB: Reply(550, "no such user", "5.1.1")}
    assert "at least one recipient" in results[4].reply.text
    assert server.count("<ok@example.com>") == server.count("<also-ok@example.com>") == 1


def test_a_batch_larger_than_the_pool_goes_in_rounds(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=3)
    jobs = [(SENDER, [ALICE], message(f"<r{i}@example.com>")) for i in range(10)]

    results = transport.deliver_batch(jobs)

    assert [r.outcome for r in results] == [Outcome.SENT] * 10
    assert server.connections_peak <= 3
    assert len(server.accepted) == 10


def test_a_lost_connection_in_a_batch_leaves_the_other_conversations_alone(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=4)
    server.on_mail(DROP, times=1)
    jobs = [(SENDER, [ALICE], message(f"<d{i}@example.com>")) for i in range(4)]

    results = transport.deliver_batch(jobs)

    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["sent", "sent", "sent", "temporary"]
    assert len(server.accepted) == 3
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT


# -- connection reuse ----------------------------------------------------------------------------


def test_a_connection_closed_by_the_server_while_idle_is_replaced_transparently(
    make_transport: MakeTransport,
) -> None:
    with SmtpServer(idle_timeout_s=0.3) as server:
        transport = make_transport(server.port)
        assert deliver(transport, SENDER, [ALICE], message("<one@example.com>")).outcome is (
            Outcome.SENT
        )
        wait_until(lambda: server.connections_open == 0)  # the server hung up

        result = deliver(transport, SENDER, [ALICE], message("<two@example.com>"))

        assert result.outcome is Outcome.SENT
        assert server.count("<two@example.com>") == 1
        assert server.connections_total == 2


def test_421_at_mail_on_a_reused_connection_is_retried_once(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    deliver(transport, SENDER, [ALICE], message("<one@example.com>"))
    server.on_mail("421 4.4.2 idle too long", times=1)

    result = deliver(transport, SENDER, [ALICE], message("<two@example.com>"))

    assert result.outcome is Outcome.SENT
    assert server.count("<two@example.com>") == 1


def test_a_stale_connection_is_retried_only_once(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    deliver(transport, SENDER, [ALICE], message())
    server.on_mail(DROP, times=2)

    result = deliver(transport, SENDER, [ALICE], message("<two@example.com>"))

    assert result.outcome is Outcome.TEMPORARY
    assert "connection lost at MAIL FROM" in result.reply.text
    assert server.connections_total == 2


def test_connections_idle_too_long_are_closed_when_borrowing(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, idle_timeout_s=0.1)
    deliver(transport, SENDER, [ALICE], message())
    time.sleep(0.2)

    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT

    assert server.connections_total == 2
    wait_until(lambda: server.connections_open == 1)  # the old one said QUIT


def test_never_more_connections_than_configured(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, connections=2)
    server.on_dot("250 2.0.0 OK", delay_s=0.05)
    results: list[DeliveryResult] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        result = deliver(transport, SENDER, [ALICE], message(f"<{n}@example.com>"))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.outcome for r in results] == [Outcome.SENT] * 8
    # the first connection proves the relay before others are set up, so the second one may
    # not be needed at all; never is there a third
    assert 1 <= server.connections_peak <= 2
    assert server.connections_total <= 2
    assert len(server.accepted) == 8


def test_close_quits_idle_connections_and_the_transport_stays_usable(
    server: SmtpServer, transport: SmtpTransport
) -> None:
    deliver(transport, SENDER, [ALICE], message())
    assert server.connections_open == 1

    transport.close()

    wait_until(lambda: server.connections_open == 0)
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert server.connections_total == 2


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    made = make_self_signed_cert(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    return made


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    with SmtpServer(tls_context=server_tls_context(*certificate), users={"u": "pw"}) as running:
        yield running


def test_starttls_refuses_an_untrusted_certificate(
    tls_server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(tls_server.port, tls=TlsMode.STARTTLS)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.DEFERRED
    assert result.reply.code == 0
    assert "not trusted" in result.reply.text
    assert tls_server.messages == []


def test_starttls_without_verification_accepts_a_self_signed_certificate(
    tls_server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(tls_server.port, tls=TlsMode.STARTTLS, verify=False)

    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert tls_server.messages[0].tls


def test_starttls_verifies_against_a_given_context(
    tls_server: SmtpServer, make_transport: MakeTransport, certificate: tuple[Path, Path]
) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    transport = make_transport(tls_server.port, tls=TlsMode.AUTO, ssl_context=context)

    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert tls_server.messages[0].tls


def test_auth_after_starttls(tls_server: SmtpServer, make_transport: MakeTransport) -> None:
    transport = make_transport(
        tls_server.port, tls=TlsMode.AUTO, verify=False, username="u", password="pw"
    )

    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    received = tls_server.messages[0]
    assert (received.tls, received.login) == (True, "u")


def test_starttls_required_but_not_offered(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, tls=TlsMode.STARTTLS)

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.DEFERRED
    assert "does not offer STARTTLS" in result.reply.text
    assert server.messages == []


def test_auto_never_sends_a_password_in_clear(make_transport: MakeTransport) -> None:
    with SmtpServer(users={"u": "pw"}, auth_require_tls=False) as server:
        transport = make_transport(server.port, tls=TlsMode.AUTO, username="u", password="pw")

        result = deliver(transport, SENDER, [ALICE], message())

        assert result.outcome is Outcome.DEFERRED
        assert "refusing to send the password in clear" in result.reply.text
        assert server.logins == []


def test_auto_without_auth_falls_back_to_plain_text(
    server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.port, tls=TlsMode.AUTO)
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert not server.messages[0].tls


def test_implicit_tls(certificate: tuple[Path, Path], make_transport: MakeTransport) -> None:
    with SmtpServer(implicit_tls_context=server_tls_context(*certificate)) as server:
        strict = make_transport(server.port, tls=TlsMode.IMPLICIT)
        refused = deliver(strict, SENDER, [ALICE], message())
        lenient = make_transport(server.port, tls=TlsMode.IMPLICIT, verify=False)
        accepted = deliver(lenient, SENDER, [ALICE], message())

        assert refused.outcome is Outcome.DEFERRED
        assert "not trusted" in refused.reply.text
        assert accepted.outcome is Outcome.SENT
        assert [m.tls for m in server.messages] == [True]


# -- AUTH ----------------------------------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[SmtpServer]:
    with SmtpServer(users={"jordan": "s3cret"}, auth_require_tls=False) as running:
        yield running


def test_auth_plain(auth_server: SmtpServer, make_transport: MakeTransport) -> None:
    transport = make_transport(auth_server.port, username="jordan", password="s3cret")

    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    [attempt] = auth_server.logins
    assert (attempt.mechanism, attempt.login, attempt.success) == ("PLAIN", "jordan", True)
    assert auth_server.messages[0].login == "jordan"


def test_auth_plain_sends_the_identity(
    auth_server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(
        auth_server.port, username="jordan", password="s3cret", identity="boss"
    )
    assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    assert auth_server.logins[0].identity == "boss"


def test_auth_login(make_transport: MakeTransport) -> None:
    with SmtpServer(
        users={"jordan": "s3cret"}, auth_require_tls=False, auth_exclude=["PLAIN"]
    ) as server:
        transport = make_transport(server.port, username="jordan", password="s3cret")

        assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
        assert [(a.mechanism, a.success) for a in server.logins] == [("LOGIN", True)]


def test_auth_failure_is_deferred_with_the_reply(
    auth_server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(auth_server.port, username="jordan", password="wrong")

    result = deliver(transport, SENDER, [ALICE], message())

    assert result.outcome is Outcome.DEFERRED
    assert result.reply.code == 535
    assert result.reply.enhanced == "5.7.8"
    assert result.reply.text.startswith("authentication failed")
    assert auth_server.messages == []


def test_auth_not_offered(server: SmtpServer, make_transport: MakeTransport) -> None:
    transport = make_transport(server.port, username="jordan", password="s3cret")
    result = deliver(transport, SENDER, [ALICE], message())
    assert result.outcome is Outcome.DEFERRED
    assert "does not offer AUTH" in result.reply.text


# -- configuration and bad input -------------------------------------------------------------------


def test_from_config(auth_server: SmtpServer) -> None:
    from postroom.config import AuthConfig, Secret, SmtpConfig

    config = SmtpConfig(
        host="127.0.0.1",
        port=auth_server.port,
        tls="none",
        auth=AuthConfig(username="jordan", password=Secret("s3cret"), host="127.0.0.1"),
        connections=1,
        command_timeout=timedelta(seconds=5),
        helo="client.test",
    )
    transport = SmtpTransport.from_config(config)
    try:
        assert deliver(transport, SENDER, [ALICE], message()).outcome is Outcome.SENT
    finally:
        transport.close()
    assert auth_server.logins[0].login == "jordan"
    assert "s3cret" not in repr(transport)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"tls": "sometimes"}, "email.server.smtp.tls"),
        ({"connections": 0}, "email.server.smtp.connections"),
        ({"data_timeout_s": 0}, "email.server.smtp.data-timeout"),
        ({"password": "pw"}, "email.server.smtp.auth.username"),
        ({"username": "u", "password": "p", "auth_host": "other"}, "email.server.smtp.auth.host"),
        ({"port": 0}, "email.server.smtp.port"),
        ({"host": ""}, "email.server.smtp.host"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SmtpSettings(**{"host": "smtp.example.com", "port": 587, **kwargs})
    assert caught.value.key_path == key


@pytest.mark.parametrize(
    ("recipients", "problem"),
    [
        ([], "at least one recipient"),
        (["alice@example.com\r\nDATA"], "cannot be used in an SMTP command"),
        (["<alice@example.com>"], "cannot be used in an SMTP command"),
        ("alice@example.com", "not one string"),
    ],
)
def test_unsendable_jobs_are_permanent_and_the_others_still_go(
    server: SmtpServer, transport: SmtpTransport, recipients: Any, problem: str
) -> None:
    jobs = [(SENDER, recipients, message()), (SENDER, [ALICE], message("<m2@example.com>"))]

    bad, good = transport.deliver_batch(jobs)

    assert bad.outcome is Outcome.PERMANENT
    assert problem in bad.reply.text
    assert good.outcome is Outcome.SENT
    assert [m.message_id for m in server.messages] == ["<m2@example.com>"]


# -- large messages: non-blocking writes in pieces ------------------------------------------------


def large_message(size: int) -> bytes:
    line = b"0123456789" * 7 + b"\r\n"
    return b"Subject: large\r\nMessage-ID: <large@example.com>\r\n\r\n" + line * (size // len(line))


def test_a_large_message_goes_out_whole(server: SmtpServer, transport: SmtpTransport) -> None:
    content = large_message(4_000_000)

    results = transport.deliver_batch(
        [(SENDER, [ALICE], content), (SENDER, [BOB], message("<small@example.com>"))]
    )

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    [received] = [m for m in server.messages if m.message_id == "<large@example.com>"]
    assert received.content == content


def test_a_large_message_goes_out_whole_over_tls(
    tls_server: SmtpServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(tls_server.port, tls=TlsMode.STARTTLS, verify=False)
    content = large_message(2_000_000)

    assert deliver(transport, SENDER, [ALICE], content).outcome is Outcome.SENT
    assert tls_server.messages[0].tls
    assert tls_server.messages[0].content == content
