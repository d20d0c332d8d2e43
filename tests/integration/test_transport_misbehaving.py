"""SmtpTransport against servers that misbehave the way real relays do (issue 9).

Each test scripts a real server (:mod:`tests.scripted_smtp`, plain sockets on 127.0.0.1) to
misbehave exactly so, and checks that the client neither stalls nor blames the message for the
relay. Timing bounds are generous (the machine is shared): they compare against the scripted
delays, several times larger than any scheduling noise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from postroom.transport.base import DeliveryResult, Outcome
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode
from tests.scripted_smtp import DROP, NEVER, ScriptedSmtp

SENDER = "sender@example.com"
MakeTransport = Callable[..., SmtpTransport]


def message(n: int = 1, body: str = "Hello.", subject: str = "test") -> bytes:
    return (
        f"From: {SENDER}\r\nSubject: {subject}\r\nMessage-ID: <m{n}@example.com>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def make_transport() -> Iterator[MakeTransport]:
    made: list[SmtpTransport] = []

    def make(server: ScriptedSmtp, **kwargs: Any) -> SmtpTransport:
        kwargs.setdefault("tls", TlsMode.NONE)
        kwargs.setdefault("helo", "client.test")
        kwargs.setdefault("command_timeout_s", 5)
        kwargs.setdefault("data_timeout_s", 5)
        transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=server.port, **kwargs))
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture(params=[True, False], ids=["pipelining", "lock-step"])
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedSmtp]:
    extensions = ["PIPELINING", "8BITMIME"] if request.param else ["8BITMIME"]
    with ScriptedSmtp(extensions=extensions) as running:
        yield running


def deliver(transport: SmtpTransport, recipients: list[str], content: bytes) -> DeliveryResult:
    [result] = transport.deliver_batch([(SENDER, recipients, content)])
    return result


# -- 1. a wrong password ---------------------------------------------------------------------------


def test_a_wrong_password_costs_one_login_per_window_and_defers_every_message(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.transport")
    with ScriptedSmtp(users={"u": "right"}) as server:
        transport = make_transport(
            server, username="u", password="wrong", connections=4, relay_retry_initial_s=1.0
        )
        jobs = [(SENDER, [f"r{n}@example.com"], message(n)) for n in range(20)]

        results = transport.deliver_batch(jobs)

        assert [r.outcome for r in results] == [Outcome.DEFERRED] * 20
        assert server.auth_attempts == 1
        assert server.lines("MAIL") == []
        relay = transport.relay
        assert not relay.up
        assert relay.reason is not None and "535" in relay.reason
        assert relay.down_since is not None and relay.down_since.tzinfo is not None
        assert relay.retry_at is not None and relay.retry_at > relay.down_since
        assert results[0].reply.code == 535  # the one that tried
        assert "is down" in results[1].reply.text and "535" in results[1].reply.text

        # still inside the window: no login at all, every message deferred at once
        again = transport.deliver_batch(jobs[:5])
        assert [r.outcome for r in again] == [Outcome.DEFERRED] * 5
        assert server.auth_attempts == 1

        # after the window, one probe: the password was fixed on the server meanwhile
        server.users["u"] = "wrong"
        time.sleep(max(0.0, (relay.retry_at - datetime.now(UTC)).total_seconds()) + 0.05)
        probe = transport.deliver_batch(jobs[:3])

        assert [r.outcome for r in probe] == [Outcome.SENT] * 3
        assert server.auth_attempts >= 2
        assert transport.relay.up
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "is down" in w]) == 1
    assert len([w for w in warnings if "up again" in w]) == 1


def test_a_failed_probe_doubles_the_rest(make_transport: MakeTransport) -> None:
    with ScriptedSmtp(users={"u": "right"}) as server:
        transport = make_transport(
            server, username="u", password="wrong", relay_retry_initial_s=0.3
        )
        deliver(transport, ["a@example.com"], message())
        first = transport.relay
        assert first.retry_at is not None and first.down_since is not None
        time.sleep(max(0.0, (first.retry_at - datetime.now(UTC)).total_seconds()) + 0.05)

        deliver(transport, ["a@example.com"], message())

        second = transport.relay
        assert server.auth_attempts == 2
        assert second.down_since == first.down_since  # one outage
        assert second.retry_at is not None
        rest = (second.retry_at - datetime.now(UTC)).total_seconds()
        assert rest > 0.3  # 0.6 s ± 20 %, minus the time since


# -- 2. AUTH answered 503 --------------------------------------------------------------------------


def test_auth_answered_503_is_not_a_login(make_transport: MakeTransport) -> None:
    with ScriptedSmtp(users={"u": "pw"}) as server:
        server.on("AUTH", "503 5.5.1 authentication not enabled")
        transport = make_transport(server, username="u", password="pw")

        result = deliver(transport, ["a@example.com"], message())

        assert result.outcome is Outcome.DEFERRED
        assert result.reply.code == 503
        assert server.lines("MAIL") == []
        assert not transport.relay.up


@pytest.mark.parametrize("greeting", ["421 4.3.2 too busy", "554 5.3.2 go away"])
def test_a_refusing_greeting_is_the_relays_failure(
    make_transport: MakeTransport, greeting: str
) -> None:
    with ScriptedSmtp() as server:
        server.on("GREETING", greeting)
        transport = make_transport(server)

        result = deliver(transport, ["a@example.com"], message())

        assert result.outcome is Outcome.DEFERRED
        assert result.reply.code == int(greeting[:3])
        reason = transport.relay.reason
        assert reason is not None and greeting.split(" ", 2)[2] in reason


# -- 3. the loop never blocks ----------------------------------------------------------------------


def test_a_slow_greeting_on_a_new_connection_does_not_delay_another_connections_message(
    make_transport: MakeTransport,
) -> None:
    with ScriptedSmtp() as server:
        transport = make_transport(server, connections=2)
        assert deliver(transport, ["warm@example.com"], message(0)).outcome is Outcome.SENT
        server.on("GREETING", "220 finally", delay_s=3, connection=1)
        started = time.monotonic()
        finished: dict[int, float] = {}

        def record(position: int, result: DeliveryResult) -> None:
            finished[position] = time.monotonic() - started

        jobs = [(SENDER, [f"r{n}@example.com"], message(n)) for n in (1, 2)]
        results = transport.deliver_batch(jobs, on_result=record)

        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
        fast, slow = sorted(finished.values())
        assert fast < 1.0  # the old client made it wait for the 3 s greeting
        assert slow >= 2.5


def test_a_silent_connection_does_not_hold_up_the_others(make_transport: MakeTransport) -> None:
    with ScriptedSmtp() as server:
        transport = make_transport(server, connections=2, command_timeout_s=2)
        assert deliver(transport, ["warm@example.com"], message(0)).outcome is Outcome.SENT
        server.on("RCPT", "250 2.1.5 OK", delay_s=1.5, match="slow@")
        started = time.monotonic()
        finished: dict[int, float] = {}

        def record(position: int, result: DeliveryResult) -> None:
            finished[position] = time.monotonic() - started

        jobs = [
            (SENDER, ["slow@example.com"], message(1)),
            *[(SENDER, [f"r{n}@example.com"], message(n)) for n in range(2, 12)],
        ]
        results = transport.deliver_batch(jobs, on_result=record)

        assert all(r.outcome is Outcome.SENT for r in results)
        assert max(t for p, t in finished.items() if p != 0) < 1.0
        assert finished[0] >= 1.4


def test_a_stalled_tls_handshake_times_out_as_a_relay_failure(
    make_transport: MakeTransport,
) -> None:
    with ScriptedSmtp(extensions=["PIPELINING", "STARTTLS"]) as server:
        server.on("STARTTLS", "220 2.0.0 go ahead")  # then says nothing more
        transport = make_transport(server, tls=TlsMode.STARTTLS, command_timeout_s=1)
        started = time.monotonic()

        result = deliver(transport, ["a@example.com"], message())

        assert result.outcome is Outcome.DEFERRED
        assert "timed out after 1 s in the TLS handshake" in result.reply.text
        assert 0.9 <= time.monotonic() - started < 3.0


def test_a_greeting_that_never_comes_times_out_as_a_relay_failure(
    make_transport: MakeTransport,
) -> None:
    with ScriptedSmtp() as server:
        server.on("GREETING", NEVER)
        transport = make_transport(server, connect_timeout_s=1)

        result = deliver(transport, ["a@example.com"], message())

        assert result.outcome is Outcome.DEFERRED
        assert "timed out after 1 s waiting for the greeting" in result.reply.text


# -- 4. and 5. timeouts per reply ------------------------------------------------------------------


def test_a_drip_fed_final_dot_reply_times_out_per_reply(make_transport: MakeTransport) -> None:
    with ScriptedSmtp() as server:
        server.on("DOT", "250 2.0.0 queued as 1234567890", drip_s=0.4)
        transport = make_transport(server, data_timeout_s=1)
        started = time.monotonic()

        result = deliver(transport, ["a@example.com"], message())

        took = time.monotonic() - started
        assert result.outcome is Outcome.MAYBE_DELIVERED
        assert "timed out after 1 s" in result.reply.text
        assert 0.9 <= took < 3.0  # the old client accepted it after 8.9 s


def test_every_reply_gets_its_own_timeout_and_none_is_left_over(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    """Replies that come late but in time, then a second message on the same connection."""
    server.on("MAIL", "250 2.1.0 OK", delay_s=0.7, times=1)
    server.on("RCPT", "250 2.1.5 OK", delay_s=0.7, times=1)
    server.on("DOT", "250 2.0.0 queued", delay_s=0.7, times=1)
    transport = make_transport(server, command_timeout_s=1.2, data_timeout_s=1.2)

    first = deliver(transport, ["a@example.com"], message(1))
    second = deliver(transport, ["b@example.com"], message(2))

    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert server.connections == 1


# -- 6. strict replies -----------------------------------------------------------------------------


def test_a_malformed_multiline_reply_to_one_rcpt_shifts_nothing(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("RCPT", b"2x0-weird\r\n550 5.1.1 no such user\r\n", match="bad@", times=1)
    transport = make_transport(server)
    recipients = ["ok@example.com", "bad@example.com", "p5@example.com"]

    broken, after = transport.deliver_batch(
        [(SENDER, recipients, message(1)), (SENDER, ["next@example.com"], message(2))]
    )

    assert broken.outcome is Outcome.TEMPORARY
    assert "protocol error" in broken.reply.text
    assert broken.replies["ok@example.com"].code == 250  # still accepted, not refused
    assert "bad@example.com" not in broken.replies
    assert broken.accepted == ()
    assert after.outcome is Outcome.SENT
    assert after.accepted == ("next@example.com",)
    assert [m.rcpts for m in server.messages] == [("RCPT TO:<next@example.com>",)]
    assert server.connections == 2


def test_a_malformed_reply_after_the_final_dot_is_maybe_delivered(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("DOT", b"2x0 weird\r\n", times=1)
    transport = make_transport(server)

    result = deliver(transport, ["a@example.com"], message())

    assert result.outcome is Outcome.MAYBE_DELIVERED
    assert "protocol error" in result.reply.text
    assert deliver(transport, ["a@example.com"], message(2)).outcome is Outcome.SENT
    assert server.connections == 2


def test_inconsistent_codes_in_a_multiline_reply_close_the_connection(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("MAIL", b"250-first\r\n451 second\r\n", times=1)
    transport = make_transport(server)

    result = deliver(transport, ["a@example.com"], message())

    assert result.outcome is Outcome.TEMPORARY
    assert "different codes" in result.reply.text
    assert server.messages == []


def test_354_to_rcpt_closes_the_connection(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("RCPT", "354 go ahead", times=1)
    transport = make_transport(server)

    result = deliver(transport, ["a@example.com"], message(1))

    assert result.outcome is Outcome.TEMPORARY
    assert "does not answer RCPT" in result.reply.text
    assert server.messages == []
    assert deliver(transport, ["a@example.com"], message(2)).outcome is Outcome.SENT
    assert server.connections == 2


@pytest.mark.parametrize("reply", ["250 2.0.0 OK", "334 what"])
def test_a_reply_to_data_that_is_neither_354_nor_a_refusal_is_not_a_go_ahead(
    server: ScriptedSmtp, make_transport: MakeTransport, reply: str
) -> None:
    server.on("DATA", reply, times=1)
    transport = make_transport(server)

    result = deliver(transport, ["a@example.com"], message())

    assert result.outcome is Outcome.TEMPORARY
    assert "does not answer DATA" in result.reply.text
    assert server.messages == []
    assert server.lines("RSET") == []  # the connection is closed, not reset


def test_an_enhanced_code_of_another_subject_after_the_dot_is_only_recorded(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("DOT", "250 2.1.5 odd but fine", times=1)
    server.on("DOT", "250 5.0.0 class does not match", times=1)
    transport = make_transport(server)

    mismatched = deliver(transport, ["a@example.com"], message(1))
    odd = deliver(transport, ["a@example.com"], message(2))

    assert (odd.outcome, odd.reply.enhanced) == (Outcome.SENT, "2.1.5")
    assert mismatched.outcome is Outcome.SENT
    assert mismatched.reply.enhanced is None
    assert "5.0.0" in mismatched.reply.text


def test_a_server_that_drops_at_data_leaves_the_message_unsent(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("DATA", DROP, times=1)
    transport = make_transport(server)

    result = deliver(transport, ["a@example.com"], message())

    assert result.outcome is Outcome.TEMPORARY
    assert "connection lost at DATA" in result.reply.text


# -- 7. per-recipient facts ------------------------------------------------------------------------


def test_every_recipients_reply_is_kept(
    server: ScriptedSmtp, make_transport: MakeTransport
) -> None:
    server.on("RCPT", "451 4.2.1 try later", match="t4@")
    server.on("RCPT", "550 5.1.1 no such user", match="p5@")
    transport = make_transport(server)

    result = deliver(transport, ["ok@example.com", "t4@example.com", "p5@example.com"], message())

    assert result.outcome is Outcome.SENT
    assert result.accepted == ("ok@example.com",)
    assert set(result.refused) == {"t4@example.com", "p5@example.com"}
    codes = {rcpt: (reply.code, reply.enhanced) for rcpt, reply in result.replies.items()}
    assert codes == {
        "ok@example.com": (250, "2.1.5"),
        "t4@example.com": (451, "4.2.1"),
        "p5@example.com": (550, "5.1.1"),
    }


# -- 8. SMTPUTF8, 8BITMIME and SIZE ----------------------------------------------------------------


UTF8_MESSAGE = "From: jörg@example.com\r\nSubject: Grüße\r\n\r\nHallo Jörg\r\n".encode()


def test_smtputf8_is_used_when_offered(make_transport: MakeTransport) -> None:
    with ScriptedSmtp(extensions=["PIPELINING", "8BITMIME", "SMTPUTF8"]) as server:
        transport = make_transport(server)

        result = deliver(transport, ["jörg@exämple.com"], UTF8_MESSAGE)

        assert result.outcome is Outcome.SENT
        [mail] = server.lines("MAIL")
        assert "SMTPUTF8" in mail.split() and "BODY=8BITMIME" in mail.split()
        assert server.messages[0].rcpts == ("RCPT TO:<jörg@exämple.com>",)
        assert server.messages[0].data.startswith(UTF8_MESSAGE[:30])


@pytest.mark.parametrize(
    ("recipient", "content"),
    [
        ("jörg@example.com", message()),  # a non-ASCII address
        ("joerg@example.com", UTF8_MESSAGE),  # UTF-8 headers
    ],
)
def test_smtputf8_not_offered_is_permanent_and_names_it(
    make_transport: MakeTransport, recipient: str, content: bytes
) -> None:
    with ScriptedSmtp(extensions=["PIPELINING", "8BITMIME"]) as server:
        transport = make_transport(server)

        result, other = transport.deliver_batch(
            [(SENDER, [recipient], content), (SENDER, ["plain@example.com"], message(2))]
        )

        assert result.outcome is Outcome.PERMANENT
        assert "SMTPUTF8" in result.reply.text
        assert other.outcome is Outcome.SENT
        assert [line for line in server.lines("MAIL")] == [f"MAIL FROM:<{SENDER}>"]


@pytest.mark.parametrize("offered", [True, False])
def test_an_8bit_body_needs_8bitmime(make_transport: MakeTransport, offered: bool) -> None:
    with ScriptedSmtp(extensions=["PIPELINING", *(["8BITMIME"] if offered else [])]) as server:
        transport = make_transport(server)
        content = "Subject: plain\r\n\r\nGrüße\r\n".encode()

        result = deliver(transport, ["a@example.com"], content)

        if offered:
            assert result.outcome is Outcome.SENT
            assert server.lines("MAIL") == [f"MAIL FROM:<{SENDER}> BODY=8BITMIME"]
        else:
            assert result.outcome is Outcome.PERMANENT
            assert "8BITMIME" in result.reply.text
            assert server.lines("MAIL") == []


def test_a_message_over_the_size_limit_is_refused_before_mail(
    make_transport: MakeTransport,
) -> None:
    with ScriptedSmtp(extensions=["PIPELINING", "SIZE 1000"]) as server:
        transport = make_transport(server)
        small = message(1)
        large = message(2, body="x" * 2000)

        refused, sent = transport.deliver_batch(
            [(SENDER, ["a@example.com"], large), (SENDER, ["a@example.com"], small)]
        )

        assert refused.outcome is Outcome.PERMANENT
        assert "1000" in refused.reply.text and "SIZE" in refused.reply.text
        assert str(len(large) + 3) in refused.reply.text  # the DATA section with its dot
        assert sent.outcome is Outcome.SENT
        assert server.lines("MAIL") == [f"MAIL FROM:<{SENDER}> SIZE={len(small) + 3}"]
