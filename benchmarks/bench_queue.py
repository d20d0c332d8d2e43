"""Queue engine benchmark: push rate and take+ack rate, batches of 100 payloads of 2 KB.

For each engine (SQLite in a temporary file, Redis at ``$POSTROOM_BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379/0``, on a stream of its own that is deleted afterwards) it pushes
``--messages`` payloads in batches of 100, then takes and acknowledges them in batches of 100,
and prints messages per second for both phases. An engine whose server is unreachable is
reported and skipped. Absolute numbers on a shared machine vary; compare rows of one run.

    python benchmarks/bench_queue.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from postroom.errors import QueueError
from postroom.queue.base import QueueEngine
from postroom.queue.sqlite import SqliteQueue

REDIS_URL = os.environ.get("POSTROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100
PAYLOAD_BYTES = 2048


@contextmanager
def sqlite_queue() -> Iterator[QueueEngine]:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        queue = SqliteQueue(os.path.join(tmp, "queue.db"))
        try:
            yield queue
        finally:
            queue.close()


@contextmanager
def redis_queue() -> Iterator[QueueEngine]:
    import redis

    from postroom.queue.redis import RedisQueue

    name = f"postroom-bench-{uuid.uuid4().hex[:12]}"
    queue = RedisQueue(REDIS_URL, name=name)
    try:
        yield queue
    finally:
        queue.close()
        admin = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            admin.delete(name)
        except redis.RedisError:
            pass
        finally:
            admin.close()


def measure(queue: QueueEngine, messages: int) -> dict[str, float]:
    """Push ``messages`` in batches, then take and ack them all; rates in messages per second."""
    batch = [os.urandom(PAYLOAD_BYTES // 2).hex().encode() for _ in range(BATCH)]
    start = time.perf_counter()
    for _ in range(messages // BATCH):
        queue.push(batch)
    push_s = time.perf_counter() - start
    start, done = time.perf_counter(), 0
    while done < messages:
        items = queue.take(BATCH, timeout_s=1.0)
        if not items:
            raise RuntimeError(f"queue ran dry after {done} of {messages} messages")
        queue.ack([item.tag for item in items])
        done += len(items)
    take_s = time.perf_counter() - start
    return {"push_per_s": round(messages / push_s), "take_ack_per_s": round(messages / take_s)}


def run(messages: int = 20_000) -> list[dict[str, object]]:
    """Measure every engine; one row per engine, printed as it completes."""
    messages = max(BATCH, messages - messages % BATCH)
    rows: list[dict[str, object]] = []
    openers: dict[str, Callable[[], AbstractContextManager[QueueEngine]]] = {
        "sqlite": sqlite_queue,
        "redis": redis_queue,
    }
    for engine, opener in openers.items():
        row: dict[str, object] = {
            "engine": engine,
            "messages": messages,
            "batch": BATCH,
            "payload_bytes": PAYLOAD_BYTES,
        }
        try:
            with opener() as queue:
                row.update(measure(queue, messages))
        except (QueueError, ImportError) as exc:
            row["skipped"] = str(exc)
        rows.append(row)
        print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    run(parser.parse_args().messages)


if __name__ == "__main__":
    main()
