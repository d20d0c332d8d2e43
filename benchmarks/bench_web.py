"""Dashboard benchmark: page and /metrics times over a database of one million messages.

For each engine the database is filled directly with ``--rows`` messages (default 1,000,000)
spread over the last 30 days: 95 % sent, 3 % failed, 1 % expired, the rest queued (a few due,
most scheduled) and cancelled, each finished one with one attempt row, small real payloads.
Then every page is requested ``--repeat`` times through Starlette's test client (in process:
no network, the whole application and its queries) and the median is printed; the first
``/metrics`` scrape, which counts the history once, is reported apart. The targets: overview
and search pages under 200 ms at the median, ``/metrics`` under 100 ms. SQLite uses a file in
a temporary folder; PostgreSQL a scratch database on ``POSTROOM_BENCH_POSTGRES_URL`` (skipped
when there is none).

    python benchmarks/bench_web.py [--rows 1000000] [--repeat 15] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from starlette.testclient import TestClient

from bench_store import postgres_store, sqlite_store
from postroom import Email
from postroom.config import load_config
from postroom.errors import StoreError
from postroom.payload import encode
from postroom.store import Store
from postroom.store.schema import attempts, messages
from postroom.web import create_app

CHUNK = 20_000
DAYS = 30
TARGET_PAGE_MS = 200.0
TARGET_METRICS_MS = 100.0
WORDS = ("invoice", "welcome", "receipt", "reset", "digest", "alert", "report", "order")


def fill(store: Store, rows: int, now: datetime) -> list[str]:
    """Insert ``rows`` messages and their attempts; return a few ids to open."""
    email = Email(from_="shop@example.com", to="someone@example.org", subject="x", text="Hi " * 40)
    payload = encode("BENCH", email.to_dict(), now, now)
    rng = random.Random(11)
    span_s = DAYS * 86400
    picked: list[str] = []
    with store._write() as conn:
        for start in range(0, rows, CHUNK):
            batch, tries = [], []
            for n in range(start, min(rows, start + CHUNK)):
                created = now - timedelta(seconds=span_s * (1 - n / rows))
                row, attempt = _row(n, created, now, rng, payload)
                batch.append(row)
                if attempt is not None:
                    tries.append(attempt)
            conn.execute(insert(messages), batch)
            conn.execute(insert(attempts), tries)
            picked.append(batch[len(batch) // 2]["id"])
    return picked


def _row(
    n: int, created: datetime, now: datetime, rng: random.Random, payload: bytes
) -> tuple[dict[str, object], dict[str, object] | None]:
    roll = rng.random()
    status = (
        "sent"
        if roll < 0.95
        else "failed"
        if roll < 0.98
        else "expired"
        if roll < 0.99
        else "cancelled"
        if roll < 0.995
        else "queued"
    )
    latency = timedelta(seconds=rng.expovariate(1 / 2.0))
    finished = min(now, created + latency)
    due = created if rng.random() < 0.1 else now + timedelta(hours=rng.randint(1, 48))
    failure = "refused by the server: x@example.org: 550 5.1.1 no such user" * (
        status == "failed"
    ) or ("not sent within max-time" if status == "expired" else None)
    row: dict[str, object] = {
        "id": f"B{n:025d}",
        "status": status,
        "priority": 0,
        "created_at": created,
        "send_after": created,
        "due_at": due if status == "queued" else created,
        "expires_at": created + timedelta(hours=1),
        "num_fails": 1 if status == "failed" else 0,
        "failure": failure,
        "sent_at": finished if status == "sent" else None,
        "updated_at": finished,
        "mail_from": f"{WORDS[n % 8]}@shop{n % 50}.example.com",
        "recipients": [f"customer{n % 200_000}@example.org"],
        "subject": f"Your {WORDS[n % 8]} number {n}",
        "message_id": f"<B{n:025d}@bench.example.com>",
        "data": payload,
    }
    if status in ("queued", "cancelled", "expired"):
        return row, None
    attempt: dict[str, object] = {
        "message_id": row["id"],
        "started_at": finished - timedelta(milliseconds=200),
        "ended_at": finished,
        "outcome": "sent" if status == "sent" else "permanent",
        "code": 250 if status == "sent" else 550,
        "reply": "ok" if status == "sent" else "no such user",
        "dispatcher": "bench:1",
        "recipients": row["recipients"],
    }
    return row, attempt


def median_ms(client: TestClient, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status_code}: {answer.text[:200]}")
    return statistics.median(times)


def measure(
    store_factory: Callable[[], AbstractContextManager[Store]],
    args: argparse.Namespace,
    engine: str,
) -> Iterator[str]:
    now = datetime.now(UTC)
    with store_factory() as store:
        store.migrate()
        started = time.perf_counter()
        picked = fill(store, args.rows, now)
        yield f"{engine}: filled {args.rows:,} messages in {time.perf_counter() - started:.0f} s"
        with store._connect() as conn:
            autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.exec_driver_sql("VACUUM ANALYZE" if engine == "postgresql" else "ANALYZE")
        url = store._engine.url.render_as_string(hide_password=False)
        url = url.replace("sqlite+pysqlite://", "sqlite://").replace("+psycopg://", "://")
        kind = "sqlite3" if engine == "sqlite" else "postgres"
        config = load_config({"email": {"server": {"database": {"engine": kind, "url": url}}}})
        with TestClient(create_app(config), base_url="http://127.0.0.1:8025") as client:
            for label, path in (("/metrics", "/metrics"), ("overview", "/")):
                started = time.perf_counter()
                client.get(path)
                first = (time.perf_counter() - started) * 1000
                yield f"{engine}: first {label} of a new process (reads history): {first:.0f} ms"
            for label, path, target in _pages(picked):
                ms = median_ms(client, path, args.repeat)
                verdict = "ok" if ms < target else f"over {target:.0f} ms"
                yield f"{engine}: {label:<34} median {ms:7.1f} ms  ({verdict})"
            # what the one request a minute that recounts long-finished rows costs
            client.app.state.ctx.browser.recount_every_s = 0  # type: ignore[attr-defined]
            for label, path, target in _pages(picked)[:1] + _pages(picked)[-1:]:
                ms = median_ms(client, path, args.repeat)
                verdict = "ok" if ms < target else f"over {target:.0f} ms"
                yield f"{engine}: {label + ', recounting':<34} median {ms:7.1f} ms  ({verdict})"


def _pages(picked: list[str]) -> list[tuple[str, str, float]]:
    one = picked[len(picked) // 2]
    page = TARGET_PAGE_MS
    return [
        ("overview /", "/", page),
        ("messages, newest", "/messages", page),
        ("search subject words", "/messages?subject=invoice+number", page),
        ("search recipient", "/messages?to=customer123%40", page),
        ("search sender", "/messages?from=digest%40", page),
        ("search status failed", "/messages?status=failed", page),
        ("search status queued", "/messages?status=queued", page),
        ("search id", f"/messages?q={one}", page),
        ("search Message-ID", f"/messages?q=%3C{one}%40bench.example.com%3E", page),
        ("search time range", "/messages?since=48h&until=24h", page),
        ("api search subject", "/api/messages?subject=welcome", page),
        ("message page", f"/messages/{one}", page),
        ("api stats", "/api/stats", page),
        ("/metrics", "/metrics", TARGET_METRICS_MS),
    ]


def run(
    rows: int = 1_000_000, repeat: int = 15, engines: tuple[str, ...] = ("sqlite", "postgresql")
) -> None:
    args = argparse.Namespace(rows=rows, repeat=repeat)
    factories = {"sqlite": sqlite_store, "postgresql": postgres_store}
    for engine in engines:
        try:
            for line in measure(factories[engine], args, engine):
                print(f"   {line}", flush=True)
        except StoreError as exc:
            print(f"   {engine}: skipped ({exc})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), action="append")
    args = parser.parse_args()
    run(args.rows, args.repeat, tuple(args.engine or ("sqlite", "postgresql")))


if __name__ == "__main__":
    main()
