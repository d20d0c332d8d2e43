"""Client-side benchmark: what ``Email.enqueue()`` costs the caller, and how fast one process
fills a queue.

1. call cost: the time one ``enqueue()`` call takes in the caller's thread (validate, id,
   snapshot, buffer append) for a small text email, median and p99 over many calls, with the
   pusher running in the background; the buffer is large enough that no call waits for room.
   Rows with ``kind=email`` call ``Email.enqueue(outbox=...)`` on real emails; rows with
   ``kind=prepared`` hand the outbox an email whose checks are already done, which shows the
   outbox's own share. Target: median <= 30 µs. For scale, the same run times the Email's own
   share of a call (validate, ensure_identity, to_json) without an outbox.
2. sustained rate: N emails enqueued from one thread with the default buffer (250), then
   ``flush()``; emails per second from the first call until the engine confirmed the last push.
   Target: >= 20,000 emails/s into Redis.

Each is measured with the memory, SQLite and Redis engines. Redis comes from
``POSTROOM_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), on a stream of its own that is
deleted afterwards. Absolute figures on a shared machine vary from run to run.

    python benchmarks/bench_enqueue.py [--calls 5000] [--messages 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from postroom.client import Outbox, Submittable
from postroom.config import default_config
from postroom.errors import PostroomError
from postroom.message import Email
from postroom.queue.base import QueueEngine
from postroom.queue.memory import MemoryQueue

REDIS_URL = os.environ.get("POSTROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TARGET_MEDIAN_US = 30.0
TARGET_REDIS_PER_S = 20_000.0

EngineFactory = Callable[[], QueueEngine]


def small_emails(count: int) -> list[Email]:
    """Distinct small text emails, built before the clock starts (building is not enqueueing)."""
    return [
        Email(
            from_="Shop <shop@example.com>",
            to=[f"customer{n}@example.org"],
            subject=f"Your order {n} has shipped",
            text=f"Hello,\n\nyour order {n} is on its way.\n\nThanks,\nthe shop\n",
        )
        for n in range(count)
    ]


class PreparedEmail:
    """An email whose checks are already done: ``validate()`` and ``ensure_identity()`` do
    nothing and ``to_json()`` returns a ready text. Timing it shows what the outbox itself
    costs, apart from the Email's own work."""

    def __init__(self, email: Email) -> None:
        email.validate()
        self._json = email.to_json()
        self._bytes = email.to_bytes()
        self.to, self.cc, self.bcc = email.to, email.cc, email.bcc
        self.envelope_recipients = email.envelope_recipients

    def to_bytes(self) -> bytes:
        return self._bytes

    def validate(self) -> None:
        pass

    def ensure_identity(self) -> None:
        pass

    def to_json(self) -> str:
        return self._json


def prepared_emails(count: int) -> list[PreparedEmail]:
    return [PreparedEmail(email) for email in small_emails(count)]


@contextmanager
def memory_engine() -> Iterator[EngineFactory]:
    yield MemoryQueue


@contextmanager
def sqlite_engine() -> Iterator[EngineFactory]:
    from postroom.queue.sqlite import SqliteQueue

    workdir = tempfile.mkdtemp(prefix="postroom-bench-")
    try:
        yield lambda: SqliteQueue(os.path.join(workdir, "queue.db"), name="bench")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_engine() -> Iterator[EngineFactory]:
    import redis

    from postroom.queue.redis import RedisQueue

    name = f"postroom-bench-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise PostroomError(f"no Redis at {REDIS_URL}: {exc}") from exc
    try:
        yield lambda: RedisQueue(REDIS_URL, name=name)
    finally:
        client.delete(name)
        client.close()


def call_cost(factory: EngineFactory, emails: Sequence[Submittable]) -> dict[str, object]:
    """Median and p99 of one enqueue() call in the caller's thread (200 warm-up calls)."""
    calls = len(emails) - 200
    with Outbox(default_config(), queue=factory, buffer=calls + 200, flush_timeout_s=60) as box:
        for email in emails[:200]:  # warm up: pusher thread started, engine opened
            box.enqueue(email)
        box.flush()
        gc.collect()
        timings_ns = []
        clock = time.perf_counter_ns
        for email in emails[200:]:
            if isinstance(email, Email):
                t0 = clock()
                email.enqueue(outbox=box)
            else:
                t0 = clock()
                box.enqueue(email)
            timings_ns.append(clock() - t0)
        left = box.flush()
    timings_us = sorted(t / 1000 for t in timings_ns)
    median_us = statistics.median(timings_us)
    return {
        "calls": calls,
        "median_us": round(median_us, 1),
        "p99_us": round(timings_us[int(len(timings_us) * 0.99) - 1], 1),
        "mean_us": round(statistics.fmean(timings_us), 1),
        "median_ok": median_us <= TARGET_MEDIAN_US,
        "left_after_flush": left,
    }


def email_work(calls: int) -> dict[str, object]:
    """The Email's own share of a call, without any outbox: validate(), ensure_identity(),
    to_json() on fresh emails. ``enqueue_call`` minus this is what the outbox adds."""
    emails = small_emails(calls)
    gc.collect()
    timings_ns = []
    clock = time.perf_counter_ns
    for email in emails:
        t0 = clock()
        email.validate()
        email.ensure_identity()
        email.to_json()
        timings_ns.append(clock() - t0)
    timings_us = sorted(t / 1000 for t in timings_ns)
    return {
        "calls": calls,
        "median_us": round(statistics.median(timings_us), 1),
        "p99_us": round(timings_us[int(len(timings_us) * 0.99) - 1], 1),
    }


def sustained_rate(factory: EngineFactory, emails: Sequence[Submittable]) -> dict[str, object]:
    """Emails per second from one thread with the default buffer, until flush() returns."""
    messages = len(emails) - 1
    with Outbox(default_config(), queue=factory, flush_timeout_s=120) as box:
        box.enqueue(emails[0])  # start the pusher and open the engine
        box.flush()
        gc.collect()
        start = time.perf_counter()
        for email in emails[1:]:
            if isinstance(email, Email):
                email.enqueue(outbox=box)
            else:
                box.enqueue(email)
        left = box.flush()
        elapsed_s = time.perf_counter() - start
    return {
        "messages": messages,
        "buffer": default_config().email.buffer,
        "seconds": round(elapsed_s, 3),
        "emails_per_s": round(messages / elapsed_s),
        "left_after_flush": left,
    }


def _measure(
    benchmark: str, engine: str, kind: str, factory: EngineFactory, calls: int, messages: int
) -> dict[str, object]:
    make: Callable[[int], Sequence[Submittable]] = (
        small_emails if kind == "email" else prepared_emails
    )
    if benchmark == "enqueue_call":
        return call_cost(factory, make(calls + 200))
    row = sustained_rate(factory, make(messages + 1))
    if engine == "redis":
        rate = row["emails_per_s"]
        row["rate_ok"] = isinstance(rate, int) and rate >= TARGET_REDIS_PER_S
    return row


def run(calls: int = 5000, messages: int = 20_000) -> list[dict[str, object]]:
    """Both measurements for every engine; one row each, printed as it completes."""
    engines = {"memory": memory_engine, "sqlite": sqlite_engine, "redis": redis_engine}
    rows: list[dict[str, object]] = [{"benchmark": "email_work", "engine": "-"}]
    rows[0].update(email_work(calls))
    print("  ".join(f"{key}={value}" for key, value in rows[0].items()), flush=True)
    for engine, opener in engines.items():
        for benchmark in ("enqueue_call", "sustained"):
            for kind in ("email", "prepared"):
                row: dict[str, object] = {"benchmark": benchmark, "engine": engine, "kind": kind}
                try:
                    with opener() as factory:
                        row.update(_measure(benchmark, engine, kind, factory, calls, messages))
                except (PostroomError, ImportError) as exc:
                    row["skipped"] = str(exc)
                rows.append(row)
                print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed enqueue() calls")
    parser.add_argument("--messages", type=int, default=20_000, help="emails for the rate")
    args = parser.parse_args()
    run(calls=args.calls, messages=args.messages)


if __name__ == "__main__":
    main()
