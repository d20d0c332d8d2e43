"""The small parts of the SMTP transport on their own: reply reader, breaker, envelope."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from postroom.config import SmtpConfig, TlsMode
from postroom.transport.base import Reply
from postroom.transport.smtp.breaker import Admission, RelayBreaker
from postroom.transport.smtp.channel import Channel
from postroom.transport.smtp.envelope import mail_command, prepare, refusal
from postroom.transport.smtp.replies import Answer, ProtocolError, take_answer
from postroom.transport.smtp.session import Session

# -- the reply reader ------------------------------------------------------------------------------


def test_a_multiline_reply_is_one_answer_and_the_rest_stays() -> None:
    buffer = bytearray(b"250-first\r\n250-8BITMIME\r\n250 SIZE 10\r\n354 next")

    answer = take_answer(buffer)

    assert answer == Answer(250, ("first", "8BITMIME", "SIZE 10"))
    assert buffer == bytearray(b"354 next")
    assert take_answer(buffer) is None  # incomplete until its line ends


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"2x0-weird\r\n550 no\r\n", "malformed"),
        (b"250-ok\r\n550 no\r\n", "different codes"),
        (b"hello\r\n", "malformed"),
        (b"150 not smtp\r\n", "malformed"),
        (b"250_ok\r\n", "malformed"),
        (b"2" * 5000, "longer than"),
    ],
)
def test_what_is_not_a_reply_is_a_protocol_error(raw: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        take_answer(bytearray(raw))


def test_a_bare_code_and_bare_lf_are_replies() -> None:
    buffer = bytearray(b"250\n221 bye\n")
    assert take_answer(buffer) == Answer(250, ("",))
    assert take_answer(buffer) == Answer(221, ("bye",))


def test_the_enhanced_code_is_taken_once_and_must_match_the_class() -> None:
    answer = Answer(550, ("5.1.1 no such user", "5.1.1 really"))
    assert answer.reply() == Reply(550, "no such user really", "5.1.1")
    assert answer.reply("RCPT") == Reply(550, "RCPT: no such user really", "5.1.1")
    assert Answer(250, ("5.0.0 odd",)).reply() == Reply(250, "5.0.0 odd")


# -- the breaker -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime(2026, 1, 1, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> RelayBreaker:
    return RelayBreaker(
        "relay:25", 5.0, 20.0, clock=lambda: clock.now, wall_clock=lambda: clock.wall,
        jitter=lambda: 0.5,  # no spread
    )  # fmt: skip


def test_an_unproven_relay_is_set_up_one_connection_at_a_time(breaker: RelayBreaker) -> None:
    assert breaker.admit() is Admission.OPEN
    assert breaker.admit() is Admission.WAIT
    breaker.opened()
    assert [breaker.admit() for _ in range(3)] == [Admission.OPEN] * 3


def test_a_failure_rests_the_relay_then_one_probe_goes(
    breaker: RelayBreaker, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.transport")
    breaker.admit()
    breaker.failed("535 bad password")

    state = breaker.state
    assert (state.up, state.reason, state.down_since) == (False, "535 bad password", clock.wall)
    assert state.retry_at == clock.wall + timedelta(seconds=5)
    assert breaker.admit() is Admission.DEFER
    clock.advance(5)
    assert breaker.admit() is Admission.OPEN  # the probe
    assert breaker.admit() is Admission.WAIT  # the others wait for it
    breaker.failed("535 bad password")
    assert breaker.state.retry_at == clock.wall + timedelta(seconds=10)
    assert breaker.state.down_since == clock.wall - timedelta(seconds=5)
    clock.advance(10)
    assert breaker.admit() is Admission.OPEN
    breaker.opened()
    assert breaker.state.up and breaker.state.reason is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "is down" in warnings[0] and "up again" in warnings[1]


def test_the_rest_doubles_up_to_the_maximum(breaker: RelayBreaker, clock: Clock) -> None:
    rests = []
    for _ in range(5):
        assert breaker.admit() is Admission.OPEN
        breaker.failed("refused")
        assert breaker.state.retry_at is not None
        rests.append((breaker.state.retry_at - clock.wall).total_seconds())
        clock.advance(rests[-1])
    assert rests == [5, 10, 20, 20, 20]


def test_an_abandoned_admission_frees_the_probe(breaker: RelayBreaker) -> None:
    assert breaker.admit() is Admission.OPEN
    breaker.abandon()
    assert breaker.admit() is Admission.OPEN


# -- the envelope --------------------------------------------------------------------------------


MakeSession = Callable[..., Session]


@pytest.fixture
def session() -> Iterator[MakeSession]:
    """Sessions over a socket pair (no traffic), offering the given extensions."""
    made: list[socket.socket] = []

    def make(*extensions: str) -> Session:
        left, right = socket.socketpair()
        made.extend((left, right))
        found = dict(e.partition(" ")[::2] for e in extensions)
        return Session(Channel(left), {k.upper(): v for k, v in found.items()})

    yield make
    for sock in made:
        sock.close()


ASCII = b"Subject: hi\r\n\r\nhello\r\n"


@pytest.mark.parametrize(
    ("recipient", "content", "extensions", "command"),
    [
        ("a@example.com", ASCII, (), "MAIL FROM:<s@example.com>"),
        ("a@example.com", ASCII, ("SIZE 0",), "MAIL FROM:<s@example.com> SIZE=25"),
        ("ä@example.com", ASCII, ("SMTPUTF8",), "MAIL FROM:<s@example.com> SMTPUTF8"),
        ("a@example.com", "Subject: ä\r\n\r\nx\r\n".encode(), ("SMTPUTF8", "8BITMIME"),
         "MAIL FROM:<s@example.com> SMTPUTF8"),
        ("a@example.com", "S: a\r\n\r\nä\r\n".encode(), ("8BITMIME",),
         "MAIL FROM:<s@example.com> BODY=8BITMIME"),
        ("ä@example.com", "S: a\r\n\r\nä\r\n".encode(), ("8BITMIME", "SMTPUTF8"),
         "MAIL FROM:<s@example.com> SMTPUTF8 BODY=8BITMIME"),
    ],
)  # fmt: skip
def test_mail_from_carries_what_the_message_needs(
    session: MakeSession, recipient: str, content: bytes, extensions: tuple[str, ...], command: str
) -> None:
    prepared = prepare(("s@example.com", [recipient], content))
    assert not isinstance(prepared, str)
    assert mail_command(prepared, session(*extensions)) == command


@pytest.mark.parametrize(
    ("recipient", "content", "extensions", "named"),
    [
        ("ä@example.com", ASCII, ("8BITMIME",), "SMTPUTF8"),
        ("a@example.com", "S: a\r\n\r\nä\r\n".encode(), (), "8BITMIME"),
        ("a@example.com", ASCII, ("SIZE 10",), "at most 10"),
    ],
)
def test_a_message_the_server_cannot_take_is_refused_naming_why(
    session: MakeSession, recipient: str, content: bytes, extensions: tuple[str, ...], named: str
) -> None:
    prepared = prepare(("s@example.com", [recipient], content))
    assert not isinstance(prepared, str)
    offered = session(*extensions)
    assert mail_command(prepared, offered) is None
    assert named in refusal(prepared, offered)


def test_config_and_transport_share_one_tls_mode() -> None:
    from typing import get_args, get_type_hints

    hint = get_type_hints(SmtpConfig)["tls"]
    assert set(get_args(hint)) == {mode.value for mode in TlsMode}
