"""Isolation benchmark: does one slow connection hold up the others?

A small SMTP server (asyncio, in its own process, PIPELINING offered) answers every command at
once, except that on one connection (the first accepted) the reply to each final dot comes
``--slow-s`` late. The SMTP transport sends ``--messages`` messages over ``--connections``
connections in one batch, twice in the same run:

1. baseline: every connection fast;
2. one slow connection.

For each message it measures the time from the moment the transport read the job to its result
(the server names the connection in its reply, so the messages of the slow connection are set
apart). The figure is how much later the other connections' messages finish than in the
baseline (p50 and p99 of the difference; the goal is under 50 ms), with the ratios to the
baseline.

    python benchmarks/bench_isolation.py [--messages 3000] [--connections 4] [--slow-s 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from postroom.transport.base import DeliveryResult, Job, Outcome
from postroom.transport.smtp import SmtpSettings, SmtpTransport, TlsMode

SENDER = "bench@example.com"


# -- the server (run in its own process) ---------------------------------------------------------


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int, slow_s: float
) -> None:
    writer.write(b"220 bench ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"EHLO":
            writer.write(b"250-bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            if slow_s and index == 0:
                await writer.drain()
                await asyncio.sleep(slow_s)
            writer.write(f"250 2.0.0 queued on c{index}\r\n".encode())
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 OK\r\n")
        await writer.drain()
    writer.close()


async def _serve(slow_s: float) -> None:
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        index, accepted = accepted, accepted + 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await _serve_one(reader, writer, index, slow_s)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def start_server(slow_s: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--slow-s", str(slow_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


# -- the client ------------------------------------------------------------------------------------


def message(n: int) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: user{n}@example.net\r\nSubject: isolation {n}\r\n"
        f"Message-ID: <iso-{n}@example.com>\r\n\r\nA small benchmark email.\r\n"
    ).encode()


def latencies(port: int, count: int, connections: int) -> dict[str, list[float]]:
    """Seconds from reading each job to its result, by the connection that carried it."""
    settings = SmtpSettings(
        host="127.0.0.1", port=port, tls=TlsMode.NONE, connections=connections, helo="bench"
    )
    transport = SmtpTransport(settings)
    read_at: list[float] = []
    by_connection: dict[str, list[float]] = {}

    def jobs() -> Iterator[Job]:
        for n in range(count):
            read_at.append(time.perf_counter())
            yield SENDER, [f"user{n}@example.net"], message(n)

    def done(position: int, result: DeliveryResult) -> None:
        assert result.outcome is Outcome.SENT, result
        connection = result.reply.text.rsplit(" ", 1)[-1]
        by_connection.setdefault(connection, []).append(time.perf_counter() - read_at[position])

    try:
        transport.deliver_batch(jobs(), on_result=done)
    finally:
        transport.close()
    return by_connection


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(count: int, connections: int, slow_s: float) -> dict[str, list[float]]:
    proc, port = start_server(slow_s)
    try:
        latencies(port, 50, connections)  # warm up; the next run opens new connections
        proc.terminate()
        proc.wait(timeout=10)
        proc, port = start_server(slow_s)  # fresh connection numbers: c0 is the slow one
        return latencies(port, count, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(messages: int = 3000, connections: int = 4, slow_s: float = 1.0) -> list[dict[str, object]]:
    base = measure(messages, connections, 0.0)
    slow = measure(messages, connections, slow_s)
    base_all = [t for values in base.values() for t in values]
    others = [t for name, values in slow.items() if name != "c0" for t in values]
    row: dict[str, object] = {
        "bench": "isolation: one slow connection among others",
        "connections": connections,
        "slow_reply_s": slow_s,
        "messages": messages,
        "slow_conn_messages": len(slow.get("c0", [])),
        "base_p50_ms": round(statistics.median(base_all) * 1000, 2),
        "base_p99_ms": round(percentile(base_all, 0.99) * 1000, 2),
        "others_p50_ms": round(statistics.median(others) * 1000, 2),
        "others_p99_ms": round(percentile(others, 0.99) * 1000, 2),
        "delay_p50_ms": round((statistics.median(others) - statistics.median(base_all)) * 1000, 2),
        "delay_p99_ms": round((percentile(others, 0.99) - percentile(base_all, 0.99)) * 1000, 2),
        "ratio_p99": round(percentile(others, 0.99) / percentile(base_all, 0.99), 2),
    }
    print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--slow-s", type=float, default=1.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.slow_s))
    else:
        run(args.messages, args.connections, args.slow_s)


if __name__ == "__main__":
    main()
