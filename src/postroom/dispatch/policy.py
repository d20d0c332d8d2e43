"""What to do after a delivery attempt: pure functions, no I/O, no clock.

The decision for one message after one attempt (``decide``)::

    result            recipients left to try     fails so far + 1    ->  new status
    ---------------   ------------------------   ----------------        --------------------------
    SENT              none                       -                       sent
    PERMANENT         -                          -                       failed
    any               none accepted, all 5yz     -                       failed
    SENT (partial),   some (4yz refusals)        < max_fails             queued, retry those only
    TEMPORARY,        all still pending          < max_fails             queued, retry after backoff
    MAYBE_DELIVERED                              >= max_fails            failed
                                                 retry after expiry      expired

Recipients refused with 5yz are never tried again; their refusals are named in ``failure``.

Two more decisions, for attempts that are not the message's own:

* :func:`decide_deferred`: the relay could not be used (``DEFERRED``). Nothing is charged: the
  message waits until the relay's next probe, or expires if that comes after ``expires_at``.
* :func:`decide_takeover`: the dispatcher holding the message died. The takeover counts as a
  failed attempt (a message whose delivery kills its dispatcher ends ``failed`` instead of
  looping) and the message is due again at once, unless it is out of attempts or time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from postroom._quick_init import quick_init
from postroom.transport.base import DeliveryResult, Outcome, Reply

__all__ = [
    "Decision",
    "RetryPolicy",
    "backoff_delay_s",
    "decide",
    "decide_deferred",
    "decide_takeover",
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry. Built from ``email.server`` configuration."""

    max_fails: int = 3
    initial_s: float = 30.0
    max_s: float = 1800.0
    multiplier: float = 2.0
    jitter: float = 0.2


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The new state of a message after one attempt.

    ``pending_recipients``: the recipients still to deliver, never one that accepted (``None``:
    all of them). ``refused``: every permanent refusal so far, ``"address: reply"``, kept across
    attempts (``None``: unchanged).
    """

    status: str
    failure: str | None
    next_attempt_at: datetime | None
    pending_recipients: list[str] | None
    count_fail: bool
    sent_at: datetime | None
    refused: list[str] | None = None


def backoff_delay_s(
    fails: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Delay before the next try after ``fails`` failed attempts (1 for the first failure).

    Exponential (``initial * multiplier ** (fails - 1)``, capped at ``max``), then spread by
    ``±jitter`` so that messages that failed together do not all come back at the same moment.
    """
    base = min(policy.initial_s * policy.multiplier ** max(fails - 1, 0), policy.max_s)
    spread = 1.0 + policy.jitter * (2.0 * rand() - 1.0)
    return max(base * spread, 0.0)


def _describe_refusals(refused: Mapping[str, Reply]) -> str:
    return "; ".join(f"{rcpt}: {reply}" for rcpt, reply in refused.items())


def _failure_text(result: DeliveryResult, refused_before: Sequence[str]) -> str | None:
    """The reason to record: this attempt's, with the refusals of earlier attempts named."""
    earlier = "; ".join(refused_before)
    if result.outcome is Outcome.SENT:
        now_refused = _describe_refusals(result.refused)
        listed = "; ".join(part for part in (earlier, now_refused) if part)
        return f"refused by the server: {listed}" if listed else None
    text = _attempt_text(result)
    return f"{text}; refused before: {earlier}" if earlier else text


def _attempt_text(result: DeliveryResult) -> str:
    text = str(result.reply)
    if result.outcome is Outcome.MAYBE_DELIVERED:
        text = f"maybe delivered (no reply after the final dot): {text}"
    if result.refused:
        text = f"{text} [{_describe_refusals(result.refused)}]"
    return text


def decide(
    result: DeliveryResult,
    *,
    recipients: Sequence[str],
    num_fails: int,
    expires_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
    refused_before: Sequence[str] = (),
) -> Decision:
    """Decide the next state of a message whose ``recipients`` were just attempted;
    ``refused_before`` are the permanent refusals of earlier attempts."""
    accepted = set(result.accepted) if result.outcome is Outcome.SENT else set()
    permanent = {r: reply for r, reply in result.refused.items() if reply.is_permanent}
    remaining = [r for r in recipients if r not in accepted and r not in permanent]
    not_accepted = [r for r in recipients if r not in accepted]
    refused = [*refused_before, *(f"{r}: {reply}" for r, reply in permanent.items())]
    failure = _failure_text(result, refused_before)

    def decision(status: str, why: str | None, next_at: datetime | None = None) -> Decision:
        sent_at = now if status == "sent" else None
        pending = None if status == "sent" else (remaining or not_accepted)
        return Decision(status, why, next_at, pending, status != "sent", sent_at, refused)

    if result.outcome is Outcome.PERMANENT or (not remaining and not accepted):
        return decision("failed", failure)
    if not remaining:
        return decision("sent", failure)
    fails = num_fails + 1
    if fails >= policy.max_fails:
        return decision("failed", f"gave up after {fails} attempts: {failure}")
    next_at = now + timedelta(seconds=backoff_delay_s(fails, policy, rand))
    if next_at >= expires_at:
        return decision("expired", f"not sent before it expired: {failure}")
    return decision("queued", failure, next_at)


def decide_deferred(
    reason: str, *, retry_at: datetime, recipients: Sequence[str], expires_at: datetime
) -> Decision:
    """The relay could not be used: wait for ``retry_at`` without charging an attempt."""
    failure = f"relay unavailable: {reason}"
    if retry_at >= expires_at:
        return Decision(
            status="expired",
            failure=f"not sent before it expired: {failure}",
            next_attempt_at=None,
            pending_recipients=list(recipients),
            count_fail=False,
            sent_at=None,
        )
    return Decision(
        status="queued",
        failure=failure,
        next_attempt_at=retry_at,
        pending_recipients=list(recipients),
        count_fail=False,
        sent_at=None,
    )


def decide_takeover(
    what: str,
    *,
    recipients: Sequence[str],
    num_fails: int,
    expires_at: datetime,
    now: datetime,
    policy: RetryPolicy,
) -> Decision:
    """A dispatcher died holding the message (``what`` says how): one failed attempt."""
    fails = num_fails + 1
    status, failure = "queued", what
    next_at_or_none: datetime | None = now
    if fails >= policy.max_fails:
        status, failure = "failed", f"gave up after {fails} attempts: {what}"
        next_at_or_none = None
    elif now >= expires_at:
        status, failure = "expired", f"not sent within max-time: {what}"
        next_at_or_none = None
    return Decision(
        status=status,
        failure=failure,
        next_attempt_at=next_at_or_none,
        pending_recipients=list(recipients),
        count_fail=True,
        sent_at=None,
    )
