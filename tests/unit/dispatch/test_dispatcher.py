"""The dispatcher driven step by step with a fake clock.

Real SQLite store (a file in tmp_path), the in-process queue engine and the memory transport;
Each step delivers in the test's thread, so timing is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from postroom.dispatch.dispatcher import Dispatcher
from postroom.dispatch.ingest import Ingestor
from postroom.dispatch.parsed import ParsedEmails, render_payload
from postroom.dispatch.policy import RetryPolicy
from postroom.errors import StoreError
from postroom.message import Email
from postroom.payload import encode, new_message_id
from postroom.queue.memory import MemoryQueue
from postroom.store import Store, open_store
from postroom.transport.base import DeliveryResult, Outcome, RelayState, Reply
from postroom.transport.memory import MemoryTransport

START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_fails=3, initial_s=60, max_s=3600, multiplier=2, jitter=0.0)


@dataclass
class FakeClock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Script:
    """Answers deliveries from a list of results, then succeeds."""

    results: list[DeliveryResult] = field(default_factory=list)

    def __call__(self, mail_from: str, recipients: object, message: bytes) -> DeliveryResult:
        if self.results:
            return self.results.pop(0)
        return DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=tuple(recipients))  # type: ignore[arg-type]


@dataclass
class Rig:
    store: Store
    queue: MemoryQueue
    clock: FakeClock
    script: Script
    transport: MemoryTransport
    dispatcher: Dispatcher
    ingestor: Ingestor

    def enqueue(self, email: Email, send_after: datetime | None = None) -> str:
        email.ensure_identity()
        msg_id = new_message_id()
        self.queue.push([encode(msg_id, email.to_dict(), send_after or self.clock(), self.clock())])
        self.ingestor.run_once(0)
        return msg_id

    def step(self, seconds: float = 0) -> None:
        self.clock.advance(seconds)
        self.dispatcher.step()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = open_store(f"sqlite:///{tmp_path / 'postroom.db'}")
    store.migrate()
    clock = FakeClock()
    script = Script()
    transport = MemoryTransport(responder=script)
    queue = MemoryQueue()
    dispatcher = Dispatcher(store, transport, owner="test", policy=POLICY, clock=clock)
    ingestor = Ingestor(queue, store, max_time=timedelta(hours=1), clock=clock)
    yield Rig(store, queue, clock, script, transport, dispatcher, ingestor)
    store.close()


def email(**extra: object) -> Email:
    fields: dict[str, object] = {
        "from_": "app@example.com",
        "to": ["alice@example.org"],
        "subject": "Hello",
        "text": "Hi",
    }
    fields.update(extra)
    return Email(**fields)  # type: ignore[arg-type]


def test_a_queued_message_is_sent_and_recorded(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    rig.step()
    info = rig.store.get(msg_id)
    assert (info.status, info.sent_at) == ("sent", START)
    attempts = rig.store.attempts(msg_id)
    assert [(a.outcome, a.code, a.dispatcher) for a in attempts] == [("sent", 250, "test")]
    assert rig.transport.deliveries[0].recipients == ("alice@example.org",)
    assert rig.queue.size() == 0


def test_temporary_failure_is_retried_after_backoff_with_the_same_message_id(rig: Rig) -> None:
    rig.script.results.append(DeliveryResult(Outcome.TEMPORARY, Reply(451, "later", "4.3.0")))
    msg_id = rig.enqueue(email())
    rig.step()
    info = rig.store.get(msg_id)
    assert (info.status, info.num_fails) == ("queued", 1)
    assert info.next_attempt_at == START + timedelta(seconds=60)
    rig.step(59)
    assert len(rig.transport.deliveries) == 1  # not due yet
    rig.step(1)
    assert rig.store.get(msg_id).status == "sent"
    first, second = (d.message for d in rig.transport.deliveries)
    header = [line for line in first.split(b"\r\n") if line.lower().startswith(b"message-id:")]
    assert header and header[0] in second.split(b"\r\n")
    outcomes = [(a.outcome, a.code, a.enhanced_code) for a in rig.store.attempts(msg_id)]
    assert outcomes == [("temporary", 451, "4.3.0"), ("sent", 250, None)]


def test_permanent_failure_is_not_retried(rig: Rig) -> None:
    rig.script.results.append(DeliveryResult(Outcome.PERMANENT, Reply(550, "no", "5.1.1")))
    msg_id = rig.enqueue(email())
    rig.step()
    rig.step(3600)
    info = rig.store.get(msg_id)
    assert info.status == "failed" and info.failure is not None and "550 5.1.1" in info.failure
    assert len(rig.transport.deliveries) == 1


def test_gives_up_after_max_fails(rig: Rig) -> None:
    rig.script.results.extend([DeliveryResult(Outcome.TEMPORARY, Reply(421, "busy"))] * 5)
    msg_id = rig.enqueue(email())
    rig.step()
    rig.step(60)
    rig.step(120)
    rig.step(3600)
    info = rig.store.get(msg_id)
    assert (info.status, info.num_fails) == ("failed", 3)
    assert len(rig.transport.deliveries) == 3


def test_scheduled_message_waits_for_its_time(rig: Rig) -> None:
    msg_id = rig.enqueue(email(), send_after=START + timedelta(minutes=5))
    rig.step()
    rig.step(299)
    assert rig.transport.deliveries == []
    assert rig.store.next_due_at() == START + timedelta(minutes=5)
    rig.step(1)
    assert rig.store.get(msg_id).status == "sent"


def test_message_not_sent_within_max_time_expires(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    rig.clock.advance(3601)  # the dispatcher was down for over an hour
    rig.step()
    info = rig.store.get(msg_id)
    assert info.status == "expired" and rig.transport.deliveries == []


def test_retry_that_would_land_after_expiry_expires(rig: Rig) -> None:
    policy = RetryPolicy(max_fails=10, initial_s=1800, max_s=7200, multiplier=2, jitter=0.0)
    rig.dispatcher.policy = policy
    rig.script.results.extend([DeliveryResult(Outcome.TEMPORARY, Reply(451, "later"))] * 3)
    msg_id = rig.enqueue(email())
    rig.step()
    rig.step(1800)
    assert rig.store.get(msg_id).status == "expired"


def test_retry_goes_only_to_recipients_not_yet_accepted(rig: Rig) -> None:
    refused = {
        "bob@example.org": Reply(452, "mailbox busy"),
        "carol@example.org": Reply(550, "no such user"),
    }
    rig.script.results.append(
        DeliveryResult(
            Outcome.SENT, Reply(250, "OK"), accepted=("alice@example.org",), refused=refused
        )
    )
    msg_id = rig.enqueue(
        email(to=["alice@example.org", "bob@example.org"], bcc="carol@example.org")
    )
    rig.step()
    info = rig.store.get(msg_id)
    assert (info.status, info.pending_recipients) == ("queued", ["bob@example.org"])
    rig.step(60)
    assert rig.transport.deliveries[-1].recipients == ("bob@example.org",)
    assert rig.store.get(msg_id).status == "sent"


def test_higher_priority_goes_first(rig: Rig) -> None:
    low = rig.enqueue(email(subject="low"))
    high = rig.enqueue(email(subject="high", priority=5))
    rig.dispatcher.batch = 1
    rig.step()
    assert [_subject(d.message) for d in rig.transport.deliveries] == ["high", "low"]
    assert {rig.store.get(high).status, rig.store.get(low).status} == {"sent"}


def test_poison_payload_is_stored_failed_and_acknowledged(rig: Rig) -> None:
    rig.queue.push([b"\xff not json", b'{"v": 99, "id": "x"}'])
    good = rig.enqueue(email())
    assert rig.queue.size() == 0
    rig.step()
    assert rig.store.get(good).status == "sent"
    stats = rig.store.stats(None, rig.clock())
    assert stats.counts["failed"] == 2
    reasons = " ".join(reason for reason, _ in stats.top_failures)
    assert "not UTF-8 JSON" in reasons and "version 99" in reasons


def test_poison_payload_with_a_readable_id_is_stored_under_that_id(rig: Rig) -> None:
    rig.queue.push([b'{"v": 1, "id": "01READABLE", "email": {}}', b'{"v": 1, "id": "\\n"}'])
    rig.ingestor.run_once(0)
    info = rig.store.get("01READABLE")
    assert info.status == "failed"
    assert info.failure is not None and "queued_at" in info.failure
    stats = rig.store.stats(None, rig.clock())
    assert stats.counts["failed"] == 2  # the unprintable id got a hash id instead


def test_email_without_recipient_in_payload_is_failed_at_ingest(rig: Rig) -> None:
    data = email().to_dict()
    data["to"] = []
    rig.queue.push([encode("bad-1", data, START, START)])
    rig.ingestor.run_once(0)
    info = rig.store.get("bad-1")
    assert info.status == "failed" and info.failure is not None


def test_redelivered_payload_is_inserted_once(rig: Rig) -> None:
    e = email()
    e.ensure_identity()
    payload = encode("same-id", e.to_dict(), START, START)
    rig.queue.push([payload, payload])
    rig.ingestor.run_once(0)
    rig.queue.push([payload])
    rig.ingestor.run_once(0)
    rig.step()
    assert len(rig.transport.deliveries) == 1


def test_transport_exception_becomes_a_temporary_failure(rig: Rig) -> None:
    def explode(mail_from: str, recipients: object, message: bytes) -> DeliveryResult:
        raise RuntimeError("socket exploded")

    rig.dispatcher.transport = MemoryTransport(responder=explode)
    msg_id = rig.enqueue(email())
    rig.step()
    info = rig.store.get(msg_id)
    assert info.status == "queued" and info.failure is not None
    assert "socket exploded" in info.failure


def test_stop_during_a_batch_releases_the_rows_not_yet_started(rig: Rig) -> None:
    ids = [rig.enqueue(email(subject=f"m{i}")) for i in range(5)]
    delivered: list[str] = []

    def stop_after_two(mail_from: str, recipients: object, message: bytes) -> DeliveryResult:
        delivered.append("x")
        if len(delivered) == 2:
            rig.dispatcher.stop()
        return DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=tuple(recipients))  # type: ignore[arg-type]

    rig.dispatcher.transport = MemoryTransport(responder=stop_after_two)
    rig.step()
    statuses = [rig.store.get(i).status for i in ids]
    assert statuses == ["sent", "sent", "queued", "queued", "queued"]
    assert all(rig.store.get(i).num_fails == 0 for i in ids[2:])
    assert rig.store.claim_due("other", 10, 60, rig.clock()) != []  # released, not leased


def test_results_a_database_error_kept_are_written_by_the_next_step(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg_id = rig.enqueue(email())
    real_finish = rig.store.finish
    locked = [True]

    def flaky_finish(owner: str, results: object, now: datetime, **kwargs: object) -> int:
        if locked[0]:
            raise StoreError("database is locked")
        return real_finish(owner, results, now, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.store, "finish", flaky_finish)
    rig.step()  # every write fails; the result stays owed
    assert rig.store.get(msg_id).status == "sending"
    locked[0] = False
    rig.step()
    assert rig.store.get(msg_id).status == "sent"
    assert len(rig.transport.deliveries) == 1  # written, not sent again


def test_delivery_uses_the_email_ingest_parsed(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kept.db'}")
    store.migrate()
    parsed = ParsedEmails()
    queue, clock, transport = MemoryQueue(), FakeClock(), MemoryTransport()
    dispatcher = Dispatcher(
        store, transport, owner="test", policy=POLICY, clock=clock, parsed=parsed
    )
    ingestor = Ingestor(queue, store, max_time=timedelta(hours=1), clock=clock, parsed=parsed)
    e = email()
    e.ensure_identity()
    payload = encode("kept-1", e.to_dict(), START, START)
    queue.push([payload])
    ingestor.run_once(0)
    assert len(parsed) == 1
    dispatcher.step()
    assert len(parsed) == 0  # taken by the delivery
    assert transport.deliveries[0].message == render_payload(payload)
    assert store.get("kept-1").status == "sent"
    store.close()


# -- leases, heartbeats and takeovers ----------------------------------------------------------


def other_dispatcher(rig: Rig, owner: str, host: str = "host-b") -> Dispatcher:
    return Dispatcher(
        rig.store,
        MemoryTransport(),
        owner=owner,
        policy=POLICY,
        clock=rig.clock,
        host=host,
        lease_s=60,
        heartbeat_s=2,
    )


def strand(rig: Rig, owner: str, msg_id: str, *, started: bool) -> None:
    """``owner`` claims the message, beats once, maybe starts it, and then dies silently."""
    dead = other_dispatcher(rig, owner, host="host-dead")
    dead.keeper.tick()
    [row] = rig.store.claim_due(owner, 1, 60, rig.clock())
    assert row.id == msg_id
    if started:
        rig.store.mark_started(owner, [msg_id], rig.clock())


def test_rows_of_a_silent_dispatcher_are_taken_over_as_an_abandoned_attempt(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    strand(rig, "dead", msg_id, started=False)
    rig.step(5)  # 5 s of silence: not dead yet
    assert rig.store.get(msg_id).lease_owner == "dead"
    assert rig.transport.deliveries == []
    rig.step(6)  # 11 s: dead; taken over, recorded, and sent in the next step
    attempts = rig.store.attempts(msg_id)
    assert (attempts[0].outcome, attempts[0].dispatcher) == ("abandoned", "dead")
    rig.step(1)
    info = rig.store.get(msg_id)
    assert (info.status, info.num_fails) == ("sent", 1)
    assert len(rig.transport.deliveries) == 1


def test_a_takeover_of_a_started_delivery_is_maybe_delivered(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    strand(rig, "dead", msg_id, started=True)
    rig.step(11)
    [attempt] = rig.store.attempts(msg_id)[:1]
    assert attempt.outcome == "maybe_delivered"
    assert attempt.started_at == START


def test_a_message_that_kills_every_dispatcher_ends_failed(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    for n in range(POLICY.max_fails):
        strand(rig, f"dead-{n}", msg_id, started=True)
        rig.clock.advance(11)
        rig.dispatcher._maintain(rig.clock())  # take over, without sending it again
        rig.dispatcher.keeper.tick()
    info = rig.store.get(msg_id)
    assert (info.status, info.num_fails) == ("failed", 3)
    assert info.failure is not None and info.failure.startswith("gave up after 3 attempts")
    assert "dispatcher dead-2 stopped while holding it" in info.failure
    assert rig.transport.deliveries == []


def test_a_row_taken_over_after_its_max_time_expires_instead_of_being_sent(rig: Rig) -> None:
    msg_id = rig.enqueue(email())  # max-time: 1 h
    strand(rig, "dead", msg_id, started=False)
    rig.step(3601)
    info = rig.store.get(msg_id)
    assert info.status == "expired"
    assert info.failure is not None and "not sent within max-time" in info.failure
    assert rig.transport.deliveries == []


def test_a_gone_process_on_this_host_is_taken_over_at_once(rig: Rig) -> None:
    msg_id = rig.enqueue(email())
    gone = other_dispatcher(rig, "same-host-gone", host=rig.dispatcher.host)
    gone.keeper.tick()
    rig.store.claim_due("same-host-gone", 1, 60, rig.clock())
    rig.dispatcher._process_exists = lambda pid: False
    rig.step(0.5)  # no waiting for its heartbeat to age
    rig.step(0)
    assert rig.store.get(msg_id).status == "sent"
    assert [d.id for d in rig.store.dispatchers()] == ["test"]


def test_own_leftovers_of_a_previous_run_are_taken_over_before_the_first_claim(
    rig: Rig,
) -> None:
    msg_id = rig.enqueue(email())
    rig.store.claim_due("test", 1, 60, rig.clock())  # the same configured id, a run ago
    rig.dispatcher.take_over_leftovers()
    rig.step()
    assert [a.outcome for a in rig.store.attempts(msg_id)] == ["abandoned", "sent"]


def test_no_delivery_starts_when_the_leases_cannot_be_vouched_for(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg_id = rig.enqueue(email())
    rig.step()  # a first heartbeat
    second = rig.enqueue(email(subject="second"))
    assert rig.store.get(msg_id).status == "sent"

    def unreachable(*args: object, **kwargs: object) -> int:
        raise StoreError("database unreachable")

    monkeypatch.setattr(rig.store, "heartbeat", unreachable)
    rig.step(7)  # the last heartbeat is 7 s old: 3 s before others may think us dead
    assert rig.store.get(second).status == "queued"
    assert len(rig.transport.deliveries) == 1
    monkeypatch.undo()
    rig.step(0)
    assert rig.store.get(second).status == "sent"


def test_results_are_written_as_they_come_not_at_the_end_of_the_batch(rig: Rig) -> None:
    ids = [rig.enqueue(email(subject=f"m{i}")) for i in range(3)]
    seen: list[list[str]] = []

    def look(mail_from: str, recipients: object, message: bytes) -> DeliveryResult:
        rig.dispatcher.keeper.tick()  # what the keeper's thread does meanwhile
        seen.append([rig.store.get(i).status for i in ids])
        return DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=tuple(recipients))  # type: ignore[arg-type]

    rig.dispatcher.transport = MemoryTransport(responder=look)
    rig.step()
    assert seen[2][:2] == ["sent", "sent"]  # before the third delivery, mid-batch
    assert rig.store.get(ids[2]).attempt_started_at is None


def test_a_relay_failure_waits_without_charging_an_attempt(rig: Rig) -> None:
    down = RelayState(
        up=False,
        down_since=START,
        reason="535 5.7.8 authentication failed",
        retry_at=START + timedelta(seconds=30),
    )

    class DownRelay(MemoryTransport):
        state = RelayState()

        @property
        def relay(self) -> RelayState:
            return self.state

    transport = DownRelay(
        responder=lambda *a: DeliveryResult(Outcome.DEFERRED, Reply(535, "auth failed"))
    )
    rig.dispatcher.transport = transport
    msg_id = rig.enqueue(email())
    transport.state = down
    rig.step()  # relay down, probe not due: nothing claimed
    assert transport.deliveries == []
    transport.state = RelayState()  # the relay looks up; the attempt says otherwise
    rig.step()
    info = rig.store.get(msg_id)
    assert (info.status, info.num_fails) == ("queued", 0)
    assert info.failure == "relay unavailable: 535 auth failed"
    assert rig.store.attempts(msg_id) == []
    transport.state = down
    rig.step(3600)  # past max-time while the relay stays down
    info = rig.store.get(msg_id)
    assert info.status == "expired"


# -- per-recipient outcomes -------------------------------------------------------------------


def test_every_recipients_reply_is_kept_and_refusals_outlive_the_retry(rig: Rig) -> None:
    first = DeliveryResult(
        Outcome.SENT,
        Reply(250, "queued as 1", "2.0.0"),
        accepted=("ok@example.org",),
        refused={
            "t4@example.org": Reply(451, "greylisted", "4.7.1"),
            "p5@example.org": Reply(550, "no such user", "5.1.1"),
        },
    )
    rig.script.results.append(first)
    msg_id = rig.enqueue(email(to=["ok@example.org", "t4@example.org", "p5@example.org"]))
    rig.step()
    info = rig.store.get(msg_id)
    assert (info.status, info.pending_recipients) == ("queued", ["t4@example.org"])
    rig.step(60)  # the retry goes to t4@ only, and it accepts
    assert rig.transport.deliveries[1].recipients == ("t4@example.org",)
    info = rig.store.get(msg_id)
    assert info.status == "sent"
    assert info.failure == "refused by the server: p5@example.org: 550 5.1.1 no such user"
    assert info.refused == ["p5@example.org: 550 5.1.1 no such user"]
    replies = [[(r.recipient, r.code) for r in a.replies] for a in rig.store.attempts(msg_id)]
    assert replies == [
        [("ok@example.org", 250), ("t4@example.org", 451), ("p5@example.org", 550)],
        [("t4@example.org", 250)],
    ]


def test_a_failed_message_never_goes_again_to_a_recipient_that_accepted(rig: Rig) -> None:
    rig.script.results += [
        DeliveryResult(
            Outcome.SENT,
            Reply(250, "OK"),
            accepted=("ok@example.org",),
            refused={"t4@example.org": Reply(451, "later")},
        ),
        DeliveryResult(
            Outcome.PERMANENT, Reply(550, "gone"), refused={"t4@example.org": Reply(550, "gone")}
        ),
    ]
    msg_id = rig.enqueue(email(to=["ok@example.org", "t4@example.org"]))
    rig.step()
    rig.step(60)
    info = rig.store.get(msg_id)
    assert (info.status, info.pending_recipients) == ("failed", ["t4@example.org"])
    rig.store.retry(msg_id, rig.clock(), rig.clock() + timedelta(hours=1))
    rig.step()
    assert [d.recipients for d in rig.transport.deliveries] == [
        ("ok@example.org", "t4@example.org"),
        ("t4@example.org",),
        ("t4@example.org",),
    ]


def test_rows_taken_over_while_this_dispatcher_was_frozen_are_never_sent_from_here(
    rig: Rig,
) -> None:
    ids = [rig.enqueue(email(subject=f"m{i}")) for i in range(3)]
    rig.dispatcher.keeper.tick()  # a first heartbeat
    rows = rig.store.claim_due("test", 3, 60, rig.clock())
    rig.dispatcher.ledger.hold(r.id for r in rows)
    rig.clock.advance(11)  # frozen: no heartbeat for 11 s, and another dispatcher took over
    other = other_dispatcher(rig, "other")
    other._take_over(rig.clock())
    other.keeper.tick()
    rig.dispatcher.keeper.tick()  # thawed: the heartbeat finds none of the rows its own
    rig.dispatcher._refill = lambda waiting: False  # type: ignore[method-assign]  # those rows only
    rig.dispatcher._deliver_stream(rows)
    assert rig.transport.deliveries == []
    assert all(rig.store.get(i).status == "queued" for i in ids)  # as the takeover left them


def _subject(message: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(message)["Subject"])
