"""Keeping every connection busy: throughput against a relay that takes 100 ms per message.

A relay in its own process (aiosmtpd on 127.0.0.1, PIPELINING offered) answers each final dot
after ``--delay`` seconds, so one dispatcher can send at most ``connections / delay`` messages a
second: the bound. For each number of connections a dispatcher (one process, batch 50, SQLite)
sends ``--messages`` messages that are already due; the time runs from the first claim to the
last recorded result, connection set-up included.

Reported per row: messages/s and the fraction of the bound (the target: >= 0.9 at 32
connections, >= 0.8 at 128).

    python benchmarks/bench_window.py [--messages 2000] [--delay 0.1] [--connections 4 32 128]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from postroom.dispatch.dispatcher import Dispatcher
from postroom.dispatch.ingest import Ingestor
from postroom.dispatch.policy import RetryPolicy
from postroom.message import Email
from postroom.payload import encode, new_message_id
from postroom.queue.memory import MemoryQueue
from postroom.store import Store, open_store
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode

POLICY = RetryPolicy(max_fails=3, initial_s=60, max_s=3600, multiplier=2, jitter=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _SlowHandler:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay_s)
        return "250 2.0.0 OK"


def _serve_relay(port: int, delay_s: float, ready: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_SlowHandler(delay_s), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


class Relay:
    """The slow relay in a process of its own (so that it does not share the dispatcher's GIL)."""

    def __init__(self, delay_s: float) -> None:
        self.port = free_port()
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(
            target=_serve_relay, args=(self.port, delay_s, ready), daemon=True
        )
        self.process.start()
        if not ready.wait(10):
            raise RuntimeError("the relay did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def filled_store(folder: Path, count: int) -> Store:
    """A SQLite store with ``count`` messages due now."""
    store = open_store(f"sqlite:///{folder / 'postroom.db'}")
    store.migrate()
    now = datetime.now(UTC)
    queue = MemoryQueue()
    for i in range(count):
        email = Email(
            from_="shop@example.com",
            to=[f"customer{i}@example.org"],
            subject=f"Your order {i}",
            text="Thank you for your order. It ships today.",
        )
        email.ensure_identity()
        queue.push([encode(new_message_id(), email.to_dict(), now, now)])
    ingestor = Ingestor(queue, store, max_time=timedelta(hours=1), clock=lambda: now)
    while queue.size():
        ingestor.run_once(0)
    return store


def run_row(relay: Relay, connections: int, count: int, batch: int) -> float:
    """Messages per second of one dispatcher with ``connections`` connections."""
    with tempfile.TemporaryDirectory() as folder:
        store = filled_store(Path(folder), count)
        settings = SmtpSettings(
            host="127.0.0.1",
            port=relay.port,
            tls=TlsMode.NONE,
            helo="bench.test",
            connections=connections,
        )
        transport = SmtpTransport(settings)
        dispatcher = Dispatcher(store, transport, owner="bench", policy=POLICY, batch=batch)
        started = time.perf_counter()
        while dispatcher.step():
            pass
        took = time.perf_counter() - started
        sent = store.stats(None, datetime.now(UTC)).counts
        transport.close()
        store.close()
    if sum(v for k, v in sent.items() if k.value == "sent") != count:
        raise RuntimeError(f"not every message was sent: {sent}")
    return count / took


def run(
    messages: int = 2000,
    delay_s: float = 0.1,
    connections: tuple[int, ...] = (4, 32, 128),
    batch: int = 50,
) -> list[dict[str, float]]:
    """Print and return one row per number of connections."""
    print(f"   relay answering each message after {delay_s * 1000:.0f} ms, batch {batch}")
    print(f"   {'connections':>11}  {'msg/s':>7}  {'bound':>7}  {'of bound':>8}", flush=True)
    relay = Relay(delay_s)
    rows = []
    try:
        for conns in connections:
            rate = run_row(relay, conns, messages, batch)
            bound = conns / delay_s
            rows.append({"connections": conns, "rate": rate, "of_bound": rate / bound})
            print(f"   {conns:>11}  {rate:>7.0f}  {bound:>7.0f}  {rate / bound:>8.2f}", flush=True)
    finally:
        relay.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 32, 128])
    args = parser.parse_args()
    run(args.messages, args.delay, tuple(args.connections), args.batch)


if __name__ == "__main__":
    main()
