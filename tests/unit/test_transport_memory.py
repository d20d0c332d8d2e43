"""MemoryTransport: the in-memory transport that unit tests deliver to."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from postroom.transport.base import DeliveryResult, Outcome, Reply, Transport
from postroom.transport.memory import Delivery, MemoryTransport

RAW = b"Subject: hi\r\n\r\nhello\r\n"


def deliver(
    transport: MemoryTransport, mail_from: str, recipients: list[str], message: bytes
) -> DeliveryResult:
    [result] = transport.deliver_batch([(mail_from, recipients, message)])
    return result


def test_is_a_transport() -> None:
    assert isinstance(MemoryTransport(), Transport)


def test_default_sends_to_every_recipient_and_records_the_delivery() -> None:
    transport = MemoryTransport()

    result = deliver(transport, "a@example.com", ["b@example.com", "c@example.com"], RAW)

    assert result.outcome is Outcome.SENT
    assert result.reply == Reply(250, "OK")
    assert result.accepted == ("b@example.com", "c@example.com")
    assert set(result.replies) == {"b@example.com", "c@example.com"}
    [delivery] = transport.deliveries
    mail_from, recipients, message = delivery
    assert (mail_from, recipients, message) == (
        "a@example.com",
        ("b@example.com", "c@example.com"),
        RAW,
    )
    assert transport.results == [result]


def test_responder_scripts_the_outcome_and_sees_the_arguments() -> None:
    seen: list[tuple[str, tuple[str, ...], bytes]] = []

    def greylist(mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        seen.append((mail_from, tuple(recipients), message))
        if len(seen) == 1:
            return DeliveryResult(Outcome.TEMPORARY, Reply(451, "greylisted", "4.7.1"))
        return DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=tuple(recipients))

    transport = MemoryTransport(responder=greylist)
    first = deliver(transport, "a@example.com", ["b@example.com"], RAW)
    second = deliver(transport, "a@example.com", ["b@example.com"], RAW)

    assert (first.outcome, first.reply.code) == (Outcome.TEMPORARY, 451)
    assert second.outcome is Outcome.SENT
    assert seen == [("a@example.com", ("b@example.com",), RAW)] * 2
    assert len(transport.deliveries) == 2
    assert [r.outcome for r in transport.results] == [Outcome.TEMPORARY, Outcome.SENT]


def test_a_responder_that_raises_propagates_but_the_attempt_is_recorded() -> None:
    def broken(mail_from: str, recipients: Sequence[str], message: bytes) -> DeliveryResult:
        raise ConnectionError("boom")

    transport = MemoryTransport(responder=broken)
    with pytest.raises(ConnectionError):
        deliver(transport, "a@example.com", ["b@example.com"], RAW)
    assert len(transport.deliveries) == 1
    assert transport.results == []


def test_a_responder_must_return_a_delivery_result() -> None:
    transport = MemoryTransport(responder=lambda f, r, m: "250 OK")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not a DeliveryResult"):
        deliver(transport, "a@example.com", ["b@example.com"], RAW)


def test_recipients_and_message_are_copied() -> None:
    transport = MemoryTransport()
    recipients = ["b@example.com"]
    message = bytearray(RAW)
    deliver(transport, "a@example.com", recipients, bytes(message))
    recipients.append("late@example.com")
    message[:] = b"changed"

    assert transport.deliveries[0] == Delivery("a@example.com", ("b@example.com",), RAW)


def test_deliveries_is_a_snapshot_and_clear_forgets() -> None:
    transport = MemoryTransport()
    deliver(transport, "a@example.com", ["b@example.com"], RAW)
    snapshot = transport.deliveries
    snapshot.clear()
    assert len(transport.deliveries) == 1

    transport.clear()
    assert transport.deliveries == []
    assert transport.results == []


def test_close_marks_closed() -> None:
    transport = MemoryTransport()
    assert not transport.closed
    transport.close()
    assert transport.closed


def test_many_threads_lose_nothing() -> None:
    transport = MemoryTransport()

    def send(thread: int) -> None:
        for n in range(50):
            deliver(transport, "a@example.com", [f"t{thread}-{n}@example.com"], RAW)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    recipients = {d.recipients[0] for d in transport.deliveries}
    assert len(recipients) == 400
    assert len(transport.results) == 400
