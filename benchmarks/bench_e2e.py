"""End-to-end benchmark: enqueue -> queue -> ``postroom serve`` -> SMTP (Postfix smtp-sink).

For each configuration (Redis queue + SQLite database, SQLite queue + SQLite database):

1. throughput: N small emails are enqueued first, then a ``postroom serve`` process is started and
   timed until every message is ``sent`` in the database;
2. latency: with the server running, emails are enqueued at a steady rate and the
   enqueue-to-accepted latency (``sent_at - created_at``) is read back from the database.

In the same run it measures the ceiling: Python ``smtplib`` with 4 threads, each on one reused
connection, sending straight to the same sink: the median of three runs just before and three just
after each throughput measurement (their range is printed too). Figures are reported as ratios to
that ceiling; absolute numbers on a shared machine vary from run to run.

    python benchmarks/bench_e2e.py [--messages 20000] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from postroom.client import Outbox
from postroom.config import load_config
from postroom.message import Email
from postroom.store import open_store

#: (queue engine, dispatcher processes) of each row; POSTROOM_BENCH_PROCESSES=N runs only the
#: two queue engines with N processes
CONFIGURATIONS = (
    [
        ("redis", int(os.environ["POSTROOM_BENCH_PROCESSES"])),
        ("sqlite", int(os.environ["POSTROOM_BENCH_PROCESSES"])),
    ]
    if os.environ.get("POSTROOM_BENCH_PROCESSES")
    else [("redis", 1), ("sqlite", 1), ("redis", 2), ("sqlite", 2)]
)
REDIS_URL = os.environ.get("POSTROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_smtp_sink() -> str | None:
    """smtp-sink from PATH or /usr/sbin; as root on Debian, install Postfix without starting it."""
    found = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
    )
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing postfix (for smtp-sink) ...", file=sys.stderr)
    subprocess.run(
        "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"
        " && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
        " --no-install-recommends postfix",
        shell=True,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    return shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
    )


class Sink:
    """A running smtp-sink on 127.0.0.1 (counts nothing; the database is the ground truth)."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [binary, *user, f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def small_email(i: int) -> Email:
    return Email(
        from_="Bench <bench@example.com>",
        to=[f"user{i}@example.net"],
        subject=f"Benchmark message {i}",
        text="Hello,\n\nthis is a small benchmark email.\n",
        html="<p>Hello,</p><p>this is a small benchmark email.</p>",
    )


def ceiling_runs(port: int, count: int, runs: int = 3) -> list[float]:
    """``runs`` runs of :func:`smtplib_rate`."""
    return [smtplib_rate(port, count) for _ in range(runs)]


def smtplib_rate(port: int, count: int, threads: int = 4) -> float:
    """messages/s of smtplib with ``threads`` reused connections, straight to the sink."""
    message = small_email(0).to_bytes()
    per = count // threads

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port) as conn:
            for _ in range(per):
                conn.sendmail("bench@example.com", ["user@example.net"], message)

    workers = [threading.Thread(target=send) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - start)


def write_config(folder: Path, queue: str, smtp_port: int, processes: int = 1) -> Path:
    if queue == "redis":
        queue_yaml = (
            f"engine: redis\n      url: {REDIS_URL}\n      name: bench-{uuid.uuid4().hex[:8]}"
        )
    else:
        queue_yaml = f"engine: sqlite\n      path: {folder / 'queue.db'}"
    path = folder / "postroom.yaml"
    path.write_text(
        "email:\n  buffer: 5000\n  queue:\n    default:\n"
        f"      {queue_yaml}\n"
        f"  server:\n    processes: {processes}\n"
        f"    database:\n      engine: sqlite3\n      path: {folder / 'postroom.db'}\n"
        f"    smtp:\n      host: 127.0.0.1\n      port: {smtp_port}\n      tls: none\n"
        "      connections: 4\n"
    )
    return path


def wait_for_sent(db_path: Path, target: int, timeout_s: float) -> float:
    """Poll the database until ``target`` messages are sent; return the moment it happened.

    The count goes through the partial index of sent rows, so polling costs the server (which
    shares the machine's cores) next to nothing; ``Store.stats`` would also compute percentiles.
    """
    with open_store(f"sqlite:///{db_path}") as store:
        store.migrate()  # the server may not have created the schema yet
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.perf_counter() + timeout_s
        sent = 0
        while time.perf_counter() < deadline:
            (sent,) = db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()
            if sent >= target:
                return time.perf_counter()
            time.sleep(0.02)
    finally:
        db.close()
    raise TimeoutError(f"only {sent} of {target} sent after {timeout_s:.0f}s")


def start_server(config_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postroom", "serve", "-c", str(config_path)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / "serve.log", "wb"),
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def throughput(queue: str, processes: int, sink_port: int, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        folder = Path(tmp)
        config_path = write_config(folder, queue, sink_port, processes)
        config = load_config(config_path)
        with Outbox(config) as outbox:
            for i in range(count):
                small_email(i).enqueue(outbox=outbox)
            left = outbox.flush(60)
        assert left == 0, f"{left} emails not pushed"
        start = time.perf_counter()
        proc = start_server(config_path, folder)
        try:
            done = wait_for_sent(folder / "postroom.db", count, timeout_s=300)
        finally:
            stop_server(proc)
        return {"messages": count, "seconds": done - start, "rate": count / (done - start)}


def latency(
    queue: str, processes: int, sink_port: int, rate: float, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        folder = Path(tmp)
        config_path = write_config(folder, queue, sink_port, processes)
        config = load_config(config_path)
        db_url = config.email.server.database.sqlalchemy_url()
        proc = start_server(config_path, folder)
        try:
            time.sleep(1.5)  # let the server open the database and the queue
            since = datetime.now(UTC)
            total = int(rate * seconds)
            with Outbox(config) as outbox:
                start = time.perf_counter()
                for i in range(total):
                    target = start + i / rate
                    delay = target - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    small_email(i).enqueue(outbox=outbox)
                outbox.flush(30)
            wait_for_sent(folder / "postroom.db", total, timeout_s=120)
        finally:
            stop_server(proc)
        store = open_store(db_url)
        try:
            stats = store.stats(since, datetime.now(UTC))
        finally:
            store.close()
        return {
            "p50_ms": (stats.latency_p50_s or 0) * 1000,
            "p95_ms": (stats.latency_p95_s or 0) * 1000,
            "p99_ms": (stats.latency_p99_s or 0) * 1000,
        }


def run(
    messages: int = 20000, rate: float = 200.0, seconds: float = 10.0
) -> list[dict[str, object]]:
    binary = find_smtp_sink()
    if binary is None:
        print("smtp-sink not found (install Postfix): end-to-end benchmark skipped")
        return []
    sink = Sink(binary)
    rows: list[dict[str, object]] = []
    try:
        for queue, processes in CONFIGURATIONS:
            # the best of the smtplib runs just before and just after: a run slowed by something
            # else on the machine must not flatter the ratio, and the machine's speed drifts
            # three smtplib runs just before and three just after: the machine's speed drifts,
            # and the median is not swayed by one run that something else slowed or sped up
            before = ceiling_runs(sink.port, messages)
            result = throughput(queue, processes, sink.port, messages)
            runs = before + ceiling_runs(sink.port, messages)
            base = statistics.median(runs)
            lat = latency(queue, processes, sink.port, rate, seconds)
            row: dict[str, object] = {
                "bench": f"e2e {queue} queue + sqlite db",
                "processes": processes,
                "messages": messages,
                "postroom_msgs_per_s": round(result["rate"]),
                "smtplib_4_threads_msgs_per_s": round(base),
                "smtplib_runs": f"{min(runs):.0f}-{max(runs):.0f}",
                "ratio": round(result["rate"] / base, 3),
                "latency_p50_ms": round(lat["p50_ms"], 1),
                "latency_p99_ms": round(lat["p99_ms"], 1),
            }
            rows.append(row)
            print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    finally:
        sink.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    run(args.messages, args.rate, args.seconds)


if __name__ == "__main__":
    main()
