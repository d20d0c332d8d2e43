"""A backlog of one million due messages: claim time per message stays flat, memory stays low.

One SQLite database gets ``--messages`` rows that are all due (inserted in batches, not timed).
A real :class:`~postroom.dispatch.dispatcher.Dispatcher` then sends the whole backlog through a
transport that accepts every message at once (so that the database and the dispatcher, not
SMTP, are measured). Every claim is timed.

Reported: the claim time per message over the first and the last tenth of the backlog (their
ratio should be about 1: a claim must not get slower as the table fills with sent rows), the
dispatch rate, and the process's peak resident memory while dispatching (target: under 200 MB).

    python benchmarks/bench_backlog.py [--messages 1000000] [--batch 50]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from postroom.dispatch.dispatcher import Dispatcher
from postroom.dispatch.policy import RetryPolicy
from postroom.message import Email
from postroom.payload import encode
from postroom.store import Claimed, NewMessage, Store, open_store
from postroom.transport.base import DeliveryResult, Job, OnResult, Outcome, Reply, Transport

POLICY = RetryPolicy(max_fails=3, initial_s=60, max_s=3600, multiplier=2, jitter=0.0)
INSERT_BATCH = 5000


class AcceptAll(Transport):
    """Accepts every message at once and keeps nothing."""

    @property
    def concurrency(self) -> int:
        return 4

    def deliver_batch(
        self, jobs: Iterable[Job], on_result: OnResult | None = None
    ) -> list[DeliveryResult]:
        results = []
        for position, (_, recipients, _) in enumerate(jobs):
            result = DeliveryResult(Outcome.SENT, Reply(250, "OK"), accepted=tuple(recipients))
            if on_result is not None:
                on_result(position, result)
            results.append(result)
        return results


def fill(store: Store, count: int) -> None:
    now = datetime.now(UTC)
    email = Email(
        from_="shop@example.com", to=["customer@example.org"], subject="Order", text="Shipped."
    )
    email.ensure_identity()
    body = email.to_dict()
    for start in range(0, count, INSERT_BATCH):
        rows = []
        for i in range(start, min(start + INSERT_BATCH, count)):
            msg_id = f"m{i:012d}"
            rows.append(
                NewMessage(
                    id=msg_id,
                    status="queued",
                    priority=0,
                    created_at=now,
                    send_after=now,
                    expires_at=now + timedelta(days=1),
                    mail_from="shop@example.com",
                    recipients=["customer@example.org"],
                    subject="Order",
                    message_id=email.message_id,
                    data=encode(msg_id, body, now, now),
                )
            )
        store.insert_messages(rows, now)


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(messages: int = 1_000_000, batch: int = 50) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="postroom-backlog-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'postroom.db'}")
        store.migrate()
        started = time.perf_counter()
        fill(store, messages)
        print(f"   {messages:,} due messages inserted in {time.perf_counter() - started:.0f} s")
        timings: list[tuple[int, float]] = []  # (rows claimed, seconds) per claim
        claim = store.claim_due

        def timed_claim(owner: str, limit: int, lease_s: float, now: datetime) -> list[Claimed]:
            t0 = time.perf_counter()
            rows = claim(owner, limit, lease_s, now)
            timings.append((len(rows), time.perf_counter() - t0))
            return rows

        store.claim_due = timed_claim  # type: ignore[method-assign]
        dispatcher = Dispatcher(store, AcceptAll(), owner="backlog", policy=POLICY, batch=batch)
        peak_mb, base_mb = 0.0, resident_mb()
        started = time.perf_counter()
        while dispatcher.step():
            peak_mb = max(peak_mb, resident_mb())
        dispatcher.keeper.tick()
        took = time.perf_counter() - started
        peak_mb = max(peak_mb, resident_mb())
        sent = store.stats(None, datetime.now(UTC)).counts
        store.close()
    done = sum(n for status, n in sent.items() if status.value == "sent")
    if done != messages:
        raise RuntimeError(f"{done} of {messages} sent")
    tenths = [per_message_us(timings, i / 10, (i + 1) / 10) for i in range(10)]
    first, last = tenths[0], tenths[-1]
    print(
        "   claim per message by tenth of the backlog (us): " + " ".join(f"{t:.1f}" for t in tenths)
    )
    row = {
        "messages": messages,
        "claim_us_first_tenth": first,
        "claim_us_last_tenth": last,
        "ratio": last / first,
        "msgs_per_s": messages / took,
        "peak_rss_mb": peak_mb,
        "rss_at_start_mb": base_mb,
    }
    print(
        f"   claim per message: first tenth {first:.1f} us, last tenth {last:.1f} us"
        f" (ratio {last / first:.2f}); {messages / took:,.0f} msg/s through the dispatcher;"
        f" resident memory {base_mb:.0f} MB at start, {peak_mb:.0f} MB at most",
        flush=True,
    )
    return row


def per_message_us(timings: list[tuple[int, float]], start: float, end: float) -> float:
    """Claim time per message over the claims that took the rows from ``start`` to ``end`` of
    the backlog (fractions)."""
    total = sum(n for n, _ in timings)
    seen, rows, seconds = 0, 0, 0.0
    for n, s in timings:
        if n and start * total <= seen < end * total:
            rows, seconds = rows + n, seconds + s
        seen += n
    return seconds / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    run(args.messages, args.batch)


if __name__ == "__main__":
    main()
