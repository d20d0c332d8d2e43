"""Slow relay: two dispatcher processes, a relay slower than the lease, duplicates counted.

A relay (aiosmtpd on 127.0.0.1) answers every final dot after ``--delay`` seconds and records the
Message-ID of every message it accepts. ``postroom serve`` runs 2 processes with 4 connections
each, batch 50, lease 5 s and heartbeat 1 s: one batch (50 messages over 4 connections) takes
longer than the lease, so only lease renewal keeps the two dispatchers apart.

Reported: messages/s against the bound (connections x processes / delay, measured in the same
run as the baseline), duplicates (must be 0), and how long after the relay's reply each result
was recorded (``updated_at - sent_at``, p50 and max).

    python benchmarks/bench_slow_relay.py [--messages 200] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from postroom.client import Outbox
from postroom.config import load_config
from postroom.message import Email
from postroom.store import open_store

PROCESSES, CONNECTIONS = 2, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowRelay:
    """Accepts everything, each final dot answered after ``delay_s``; counts Message-IDs."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=_free_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay_s)
        message_id = BytesHeaderParser().parsebytes(envelope.original_content or b"")
        with self._lock:
            self.received[str(message_id.get("Message-ID"))] += 1
        return "250 2.0.0 OK"

    def __enter__(self) -> SlowRelay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)


def write_config(folder: Path, port: int) -> Path:
    path = folder / "postroom.yaml"
    path.write_text(
        "email:\n  buffer: 5000\n  queue:\n    default:\n"
        f"      engine: sqlite\n      path: {folder / 'queue.db'}\n"
        f"  server:\n    processes: {PROCESSES}\n    batch: 50\n    lease: 5s\n"
        "    heartbeat: 1s\n"
        f"    database:\n      engine: sqlite3\n      path: {folder / 'postroom.db'}\n"
        f"    smtp:\n      host: 127.0.0.1\n      port: {port}\n      tls: none\n"
        f"      connections: {CONNECTIONS}\n"
    )
    return path


def wait_for_sent(db_path: Path, target: int, timeout_s: float) -> float:
    with open_store(f"sqlite:///{db_path}") as store:
        store.migrate()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            (sent,) = db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()
            if sent >= target:
                return time.perf_counter()
            time.sleep(0.05)
    finally:
        db.close()
    raise TimeoutError(f"not all {target} sent after {timeout_s:.0f}s")


def record_delays_s(db_path: Path) -> list[float]:
    """Seconds from each message's acceptance to the write that recorded it."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT (julianday(updated_at) - julianday(sent_at)) * 86400 FROM messages "
            "WHERE status = 'sent'"
        ).fetchall()
    finally:
        db.close()
    return sorted(float(r[0]) for r in rows)


def run(messages: int = 200, delay_s: float = 0.5) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp, SlowRelay(delay_s) as relay:
        folder = Path(tmp)
        config = load_config(write_config(folder, relay.port))
        emails = [
            Email(from_="bench@example.com", to=f"u{i}@example.org", subject="s", text="t")
            for i in range(messages)
        ]
        with Outbox(config) as outbox:
            for e in emails:
                e.enqueue(outbox=outbox)
            assert outbox.flush(60) == 0
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "postroom", "serve", "-c", str(folder / "postroom.yaml")],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "serve.log", "wb"),  # noqa: SIM115 - the child keeps it
        )
        try:
            done = wait_for_sent(folder / "postroom.db", messages, timeout_s=600)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        delays = record_delays_s(folder / "postroom.db")
        rate = messages / (done - start)
        bound = PROCESSES * CONNECTIONS / delay_s
        duplicates = sum(n - 1 for n in relay.received.values())
        row: dict[str, object] = {
            "bench": "slow relay, 2 processes, batch outlives the lease",
            "messages": messages,
            "dot_delay_s": delay_s,
            "msgs_per_s": round(rate, 1),
            "bound_msgs_per_s": round(bound, 1),
            "ratio": round(rate / bound, 3),
            "duplicates": duplicates,
            "recorded_after_reply_p50_ms": round(delays[len(delays) // 2] * 1000, 1),
            "recorded_after_reply_max_ms": round(delays[-1] * 1000, 1),
        }
        print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
        return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    run(args.messages, args.delay)


if __name__ == "__main__":
    main()
