"""Keeping every connection busy: throughput against a relay that takes 100 ms per message.

A relay in its own process (aiosmtpd on 127.0.0.1, PIPELINING offered) answers each final dot
after ``--delay`` seconds, so one dispatcher can send at most ``connections / delay`` messages a
second: the bound. For each number of connections a dispatcher (one process, batch 50, SQLite)
sends ``--messages`` messages that are already due; the time runs from the first claim to the
last recorded result, connection set-up included.

Reported per row: messages/s and the fraction of the bound (the target: >= 0.9 at 32
connections, >= 0.8 at 128). Then a relay whose every reply reaches the client 25 ms late (a
proxy in front of Postfix's smtp-sink, or of aiosmtpd when smtp-sink is missing), nothing else
slow: round trips per message at 32 connections, as connections x seconds / round trip /
messages (the target: <= 1.3).

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

from bench_e2e import Sink, find_smtp_sink
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


async def _delayed_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float
) -> None:
    """Forward bytes in order, each chunk ``delay_s`` after it arrived."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await chunks.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    forwarding = asyncio.create_task(forward())
    while data := await reader.read(65536):
        chunks.put_nowait((loop.time() + delay_s, data))
    chunks.put_nowait((loop.time() + delay_s, b""))
    await forwarding


async def _proxy(listen_port: int, target_port: int, delay_s: float) -> None:
    """Every reply of the server at ``target_port`` reaches the client ``delay_s`` late."""

    async def connection(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            _delayed_pipe(client_r, server_w, 0.0),
            _delayed_pipe(server_r, client_w, delay_s),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def _serve_relay(port: int, dot_delay_s: float, ready: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_SlowHandler(dot_delay_s), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


def _serve_proxy(port: int, target_port: int, delay_s: float, ready: Any) -> None:
    loop = asyncio.new_event_loop()
    loop.call_soon(ready.set)
    loop.run_until_complete(_proxy(port, target_port, delay_s))


class Relay:
    """The relay in a process of its own (so that it does not share the dispatcher's GIL):
    each final dot answered after ``dot_delay_s``; with ``reply_delay_s``, a proxy in a second
    process makes every reply reach the client that much late (a round trip on a distant
    network). Behind the proxy, with no dot delay, the relay is Postfix's smtp-sink when it is
    installed: it answers at once, so the time measured is round trips, not the relay's own
    work (aiosmtpd takes about a millisecond of CPU per message)."""

    def __init__(self, dot_delay_s: float, reply_delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.processes: list[multiprocessing.Process] = []
        self.sink: Sink | None = None
        smtp_port = free_port() if reply_delay_s else self.port
        binary = find_smtp_sink() if reply_delay_s and not dot_delay_s else None
        if binary is not None:
            self.sink = Sink(binary)
            smtp_port = self.sink.port
        else:
            self._start(_serve_relay, smtp_port, dot_delay_s)
        if reply_delay_s:
            self._start(_serve_proxy, self.port, smtp_port, reply_delay_s)

    @property
    def kind(self) -> str:
        return "smtp-sink" if self.sink is not None else "aiosmtpd"

    def _start(self, target: Any, *args: Any) -> None:
        ready = multiprocessing.Event()
        process = multiprocessing.Process(target=target, args=(*args, ready), daemon=True)
        process.start()
        self.processes.append(process)
        if not ready.wait(10):
            raise RuntimeError("the relay did not start")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.join(10)
        if self.sink is not None:
            self.sink.stop()


def fill(store: Store, count: int) -> None:
    """``count`` messages due now."""
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


def filled_store(folder: Path, count: int) -> Store:
    """A SQLite store with ``count`` messages due now."""
    store = open_store(f"sqlite:///{folder / 'postroom.db'}")
    store.migrate()
    fill(store, count)
    return store


def dispatch_all(store: Store, port: int, connections: int, batch: int, owner: str) -> None:
    """Send until nothing is due any more (other dispatchers may hold the rest)."""
    settings = SmtpSettings(
        host="127.0.0.1", port=port, tls=TlsMode.NONE, helo="bench.test", connections=connections
    )
    transport = SmtpTransport(settings)
    dispatcher = Dispatcher(store, transport, owner=owner, policy=POLICY, batch=batch)
    try:
        while dispatcher.step() or store.next_due_at() is not None:
            pass
        dispatcher.keeper.tick()
    finally:
        transport.close()


def _dispatcher_process(url: str, port: int, connections: int, batch: int, owner: str) -> None:
    store = open_store(url)
    try:
        dispatch_all(store, port, connections, batch, owner)
    finally:
        store.close()


def run_row(relay: Relay, connections: int, count: int, batch: int) -> float:
    """Messages per second of one dispatcher with ``connections`` connections."""
    with tempfile.TemporaryDirectory() as folder:
        store = filled_store(Path(folder), count)
        started = time.perf_counter()
        dispatch_all(store, relay.port, connections, batch, "bench")
        took = time.perf_counter() - started
        check_all_sent(store, count)
        store.close()
    return count / took


def check_all_sent(store: Store, count: int) -> None:
    counts = store.stats(None, datetime.now(UTC)).counts
    if sum(n for status, n in counts.items() if status.value == "sent") != count:
        raise RuntimeError(f"not every message was sent: {counts}")


def several_dispatchers(relay: Relay, processes: int, count: int, connections: int) -> float:
    """Messages per second of ``processes`` dispatcher processes sharing one PostgreSQL."""
    from bench_store import postgres_database

    with postgres_database() as url:
        store = open_store(url)
        store.migrate()
        fill(store, count)
        workers = [
            multiprocessing.Process(
                target=_dispatcher_process, args=(url, relay.port, connections, 50, f"bench-{i}")
            )
            for i in range(processes)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        took = time.perf_counter() - started
        check_all_sent(store, count)
        store.close()
    return count / took


def run(
    messages: int = 2000,
    delay_s: float = 0.1,
    connections: tuple[int, ...] = (4, 16, 32, 128),
    batch: int = 50,
    round_trip_s: float = 0.025,
) -> list[dict[str, Any]]:
    """Print and return one row per number of connections, then the round-trip row."""
    print(f"   relay answering each message after {delay_s * 1000:.0f} ms, batch {batch}")
    print(f"   {'connections':>11}  {'msg/s':>7}  {'bound':>7}  {'of bound':>8}", flush=True)
    rows = []
    relay = Relay(delay_s)
    try:
        for conns in connections:
            rate = run_row(relay, conns, messages, batch)
            bound = conns / delay_s
            rows.append({"connections": conns, "rate": rate, "of_bound": rate / bound})
            print(f"   {conns:>11}  {rate:>7.0f}  {bound:>7.0f}  {rate / bound:>8.2f}", flush=True)
    finally:
        relay.stop()
    rows.append(round_trips(messages, round_trip_s, 32, batch))
    rows.append(scaling(delay_s))
    return rows


def scaling(delay_s: float, count: int = 600, connections: int = 4) -> dict[str, float]:
    """One dispatcher process, then three, on one PostgreSQL database (target: >= 2.6x)."""
    relay = Relay(delay_s)
    try:
        one = several_dispatchers(relay, 1, count, connections)
        three = several_dispatchers(relay, 3, count, connections)
    finally:
        relay.stop()
    print(
        f"   PostgreSQL, {connections} connections each: 1 dispatcher {one:.0f} msg/s,"
        f" 3 dispatchers {three:.0f} msg/s ({three / one:.2f}x)",
        flush=True,
    )
    return {"one": one, "three": three, "ratio": three / one}


def round_trips(messages: int, round_trip_s: float, connections: int, batch: int) -> dict[str, Any]:
    """Every reply ``round_trip_s`` late, nothing else slow: how many round trips each message
    costs a connection (connections x seconds / round trip / messages; set-up included)."""
    relay = Relay(0.0, round_trip_s)
    try:
        kind = relay.kind
        rate = run_row(relay, connections, messages, batch)
    finally:
        relay.stop()
    per_message = connections / rate / round_trip_s
    print(
        f"   replies {round_trip_s * 1000:.0f} ms late ({kind} behind a delaying proxy),"
        f" PIPELINING, {connections} connections:"
        f" {rate:.0f} msg/s, {per_message:.2f} round trips per message",
        flush=True,
    )
    return {"connections": connections, "rate": rate, "round_trips": per_message, "relay": kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16, 32, 128])
    parser.add_argument("--round-trip", type=float, default=0.025)
    args = parser.parse_args()
    run(args.messages, args.delay, tuple(args.connections), args.batch, args.round_trip)


if __name__ == "__main__":
    main()
