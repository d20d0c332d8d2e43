"""The Transport contract, one suite run against every transport.

``deliver_batch`` returns results in job order, reads jobs lazily (only when a connection can
take one), reports each result once through ``on_result`` with its position before it returns,
and answers a job that cannot be sent at all with ``PERMANENT`` while the others still go.
The SMTP transport runs against a real aiosmtpd server in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.transport.base import DeliveryResult, Job, Outcome, Transport
from postroom.transport.memory import MemoryTransport
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode
from tests.smtp_servers import SmtpServer

SENDER = "sender@example.com"


def job(n: int) -> Job:
    content = f"Subject: {n}\r\nMessage-ID: <m{n}@example.com>\r\n\r\nHello {n}.\r\n".encode()
    return SENDER, [f"r{n}@example.com"], content


@pytest.fixture(params=["memory", "smtp"])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    if request.param == "memory":
        yield MemoryTransport()
        return
    with SmtpServer(pipelining=True) as server:
        settings = SmtpSettings(
            host="127.0.0.1", port=server.port, tls=TlsMode.NONE, connections=3, helo="client.test"
        )
        smtp = SmtpTransport(settings)
        try:
            yield smtp
        finally:
            smtp.close()


def test_results_come_in_job_order(transport: Transport) -> None:
    results = transport.deliver_batch([job(n) for n in range(12)])

    assert [r.outcome for r in results] == [Outcome.SENT] * 12
    assert [r.accepted for r in results] == [(f"r{n}@example.com",) for n in range(12)]


def test_jobs_are_read_only_when_a_connection_can_take_them(transport: Transport) -> None:
    reported: list[int] = []
    reported_when_read: list[int] = []

    def jobs() -> Iterator[Job]:
        for n in range(20):
            reported_when_read.append(len(reported))
            yield job(n)

    transport.deliver_batch(jobs(), on_result=lambda position, _: reported.append(position))

    # at most one job per connection in flight, plus one lined up behind each (pipelining)
    in_flight = [n - done for n, done in enumerate(reported_when_read)]
    assert max(in_flight) <= 2 * transport.concurrency


def test_a_caller_stops_a_batch_by_ending_the_iterable(transport: Transport) -> None:
    taken: list[int] = []

    def jobs() -> Iterator[Job]:
        for n in range(100):
            if n == 5:
                return  # the caller decides it has enough
            taken.append(n)
            yield job(n)

    results = transport.deliver_batch(jobs())

    assert len(results) == 5 == len(taken)


def test_on_result_reports_each_job_once_with_its_position_before_returning(
    transport: Transport,
) -> None:
    calls: list[tuple[int, DeliveryResult]] = []

    results = transport.deliver_batch(
        [job(n) for n in range(9)], on_result=lambda position, r: calls.append((position, r))
    )

    assert sorted(position for position, _ in calls) == list(range(9))
    for position, result in calls:
        assert result.outcome is results[position].outcome
        assert result.accepted == results[position].accepted == (f"r{position}@example.com",)


@pytest.mark.parametrize(
    ("recipients", "problem"),
    [
        ([], "at least one recipient"),
        (["bad@example.com\r\nRSET"], "cannot be used in an SMTP command"),
        (["<bad@example.com>"], "cannot be used in an SMTP command"),
        ("r@example.com", "not one string"),
    ],
)
def test_a_job_that_cannot_be_sent_is_permanent_and_the_others_still_go(
    transport: Transport, recipients: object, problem: str
) -> None:
    bad: Job = (SENDER, recipients, job(1)[2])  # type: ignore[assignment]

    results = transport.deliver_batch([job(0), bad, job(2)])

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.PERMANENT, Outcome.SENT]
    assert problem in results[1].reply.text


def test_a_fresh_transport_reports_the_relay_up(transport: Transport) -> None:
    assert transport.relay.up
    assert transport.relay.down_since is None
