"""The retry policy: backoff shape and the decision table, with no clock and no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.dispatch.policy import Decision, RetryPolicy, backoff_delay_s, decide
from postroom.transport.base import DeliveryResult, Outcome, Reply

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
POLICY = RetryPolicy(max_fails=3, initial_s=30, max_s=600, multiplier=2, jitter=0.2)
OK = Reply(250, "2.0.0 queued as X")


def middle() -> float:
    return 0.5


def decide_now(
    res: DeliveryResult, recipients: list[str], *, num_fails: int = 0, expires_at: datetime = LATER
) -> Decision:
    """``decide`` at NOW with the test policy and jitter pinned to the middle."""
    return decide(
        res,
        recipients=recipients,
        num_fails=num_fails,
        expires_at=expires_at,
        now=NOW,
        policy=POLICY,
        rand=middle,
    )


def result(outcome: Outcome, reply: Reply = OK, accepted=(), refused=None) -> DeliveryResult:
    return DeliveryResult(outcome, reply, tuple(accepted), refused or {})


def test_backoff_grows_exponentially_and_caps() -> None:
    delays = [backoff_delay_s(n, POLICY, middle) for n in range(1, 8)]
    assert delays[:5] == [30, 60, 120, 240, 480]
    assert delays[5:] == [600, 600]


@pytest.mark.parametrize("rand, factor", [(0.0, 0.8), (1.0, 1.2)])
def test_backoff_jitter_bounds(rand: float, factor: float) -> None:
    assert backoff_delay_s(2, POLICY, lambda: rand) == pytest.approx(60 * factor)


def test_sent_to_every_recipient_is_sent() -> None:
    d = decide_now(result(Outcome.SENT, accepted=["a@x.org", "b@x.org"]), ["a@x.org", "b@x.org"])
    assert (d.status, d.sent_at, d.failure, d.count_fail) == ("sent", NOW, None, False)


def test_permanent_reply_fails_at_once() -> None:
    d = decide_now(result(Outcome.PERMANENT, Reply(554, "no", "5.7.1")), ["a@x.org"])
    assert d.status == "failed"
    assert d.failure is not None and "554 5.7.1 no" in d.failure


def test_temporary_reply_retries_after_backoff() -> None:
    d = decide_now(result(Outcome.TEMPORARY, Reply(451, "try later", "4.3.0")), ["a@x.org"])
    assert d.status == "queued"
    assert d.next_attempt_at == NOW + timedelta(seconds=30)
    assert d.count_fail and d.failure is not None and "451" in d.failure


def test_max_fails_gives_up() -> None:
    d = decide_now(result(Outcome.TEMPORARY, Reply(451, "busy")), ["a@x.org"], num_fails=2)
    assert d.status == "failed"
    assert d.failure is not None and d.failure.startswith("gave up after 3 attempts")


def test_retry_after_expiry_expires_now() -> None:
    soon = NOW + timedelta(seconds=10)
    d = decide_now(result(Outcome.TEMPORARY, Reply(451, "busy")), ["a@x.org"], expires_at=soon)
    assert d.status == "expired"


def test_partial_acceptance_retries_only_the_temporarily_refused() -> None:
    refused = {"b@x.org": Reply(452, "mailbox busy"), "c@x.org": Reply(550, "no such user")}
    d = decide_now(
        result(Outcome.SENT, accepted=["a@x.org"], refused=refused),
        ["a@x.org", "b@x.org", "c@x.org"],
    )
    assert d.status == "queued"
    assert d.pending_recipients == ["b@x.org"]
    assert d.failure is not None and "c@x.org: 550" in d.failure


def test_permanently_refused_extra_recipient_still_sent() -> None:
    refused = {"c@x.org": Reply(550, "no such user", "5.1.1")}
    d = decide_now(
        result(Outcome.SENT, accepted=["a@x.org"], refused=refused), ["a@x.org", "c@x.org"]
    )
    assert d.status == "sent"
    assert d.failure is not None and "5.1.1" in d.failure


def test_all_recipients_refused_mixed_keeps_only_temporary_ones() -> None:
    refused = {"a@x.org": Reply(450, "greylisted"), "b@x.org": Reply(550, "unknown")}
    d = decide_now(
        result(Outcome.TEMPORARY, Reply(450, "greylisted"), refused=refused), ["a@x.org", "b@x.org"]
    )
    assert (d.status, d.pending_recipients) == ("queued", ["a@x.org"])


def test_all_recipients_permanently_refused_fails() -> None:
    refused = {"a@x.org": Reply(550, "unknown"), "b@x.org": Reply(550, "unknown")}
    d = decide_now(
        result(Outcome.TEMPORARY, Reply(550, "unknown"), refused=refused), ["a@x.org", "b@x.org"]
    )
    assert d.status == "failed"


def test_maybe_delivered_is_retried_and_named() -> None:
    d = decide_now(
        result(Outcome.MAYBE_DELIVERED, Reply(0, "timed out after the final dot")), ["a@x.org"]
    )
    assert d.status == "queued"
    assert d.failure is not None and d.failure.startswith("maybe delivered")
