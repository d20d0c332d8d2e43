"""Store benchmark: idempotent insert, then claim + finish, on SQLite and PostgreSQL.

For each engine: insert ``rows`` messages (2 KB payloads) in batches of 100, then claim and
finish them as sent (one attempt row each), the first half in batches of 50 and the second half
in batches of 100. SQLite uses a file in a temporary folder; PostgreSQL a scratch database
created on ``POSTROOM_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``) and dropped afterwards. Figures on a shared machine vary from run to run: compare
rows of one run, not runs.

    python benchmarks/bench_store.py [--rows 20000] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from postroom.errors import StoreError
from postroom.store import AttemptRecord, Finish, NewMessage, Store, open_store

POSTGRES_URL = os.environ.get(
    "POSTROOM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
INSERT_BATCH = 100
CLAIM_BATCHES = (50, 100)
PAYLOAD_BYTES = 2048
LEASE_S = 300.0


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'bench.db'}")
        try:
            yield store
        finally:
            store.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a scratch database on ``POSTROOM_BENCH_POSTGRES_URL``, dropped afterwards."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(f"psycopg is not installed: {exc}") from exc
    name = f"postroom_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise StoreError(f"no PostgreSQL at POSTROOM_BENCH_POSTGRES_URL: {exc}") from exc
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_store() -> Iterator[Store]:
    with postgres_database() as url:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


def new_rows(count: int, now: datetime) -> list[NewMessage]:
    payload = os.urandom(PAYLOAD_BYTES // 2).hex().encode()
    return [
        NewMessage(
            id=f"bench-{i:08d}",
            status="queued",
            priority=0,
            created_at=now,
            send_after=now,
            expires_at=now + timedelta(hours=1),
            mail_from="bench@example.com",
            recipients=["to@example.com"],
            subject="benchmark",
            message_id=f"<bench-{i}@example.com>",
            data=payload,
        )
        for i in range(count)
    ]


def sent(row_id: str, now: datetime) -> Finish:
    attempt = AttemptRecord(
        started_at=now,
        ended_at=now,
        outcome="sent",
        code=250,
        enhanced_code="2.0.0",
        reply="2.0.0 Ok: queued",
        dispatcher="bench",
        recipients=["to@example.com"],
    )
    return Finish(
        id=row_id,
        status="sent",
        attempt=attempt,
        count_fail=False,
        failure=None,
        next_attempt_at=None,
        pending_recipients=None,
        sent_at=now,
    )


def measure_insert(store: Store, rows: list[NewMessage]) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), INSERT_BATCH):
        store.insert_messages(rows[start : start + INSERT_BATCH])
    return time.perf_counter() - started


def measure_claim_finish(store: Store, count: int, batch: int, now: datetime) -> tuple[int, float]:
    done = 0
    started = time.perf_counter()
    while done < count:
        claimed = store.claim_due("bench", min(batch, count - done), LEASE_S, now)
        if not claimed:
            break
        done += store.finish("bench", [sent(c.id, now) for c in claimed])
    return done, time.perf_counter() - started


def result(engine: str, operation: str, batch: int, rows: int, seconds: float) -> dict[str, object]:
    return {
        "engine": engine,
        "operation": operation,
        "batch": batch,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
    }


def measure(engine: str, store: Store, count: int) -> list[dict[str, object]]:
    store.migrate()
    now = datetime.now(UTC)
    out = [
        result(engine, "insert", INSERT_BATCH, count, measure_insert(store, new_rows(count, now)))
    ]
    share = count // len(CLAIM_BATCHES)
    for batch in CLAIM_BATCHES:
        done, seconds = measure_claim_finish(store, share, batch, now + timedelta(seconds=1))
        out.append(result(engine, "claim+finish", batch, done, seconds))
    return out


OPENERS: dict[str, Callable[[], AbstractContextManager[Store]]] = {
    "sqlite": sqlite_store,
    "postgresql": postgres_store,
}


def run(rows: int = 20_000, engines: tuple[str, ...] = tuple(OPENERS)) -> list[dict[str, object]]:
    """Measure ``engines``; one row per engine and operation, printed as it completes."""
    results: list[dict[str, object]] = []
    for engine in engines:
        opener = OPENERS[engine]
        try:
            with opener() as store:
                measured = measure(engine, store, rows)
        except StoreError as exc:
            measured = [{"engine": engine, "skipped": str(exc)}]
        for row in measured:
            print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
        results.extend(measured)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="messages per engine")
    parser.add_argument("--engine", choices=sorted(OPENERS), help="only this engine")
    args = parser.parse_args()
    run(args.rows, (args.engine,) if args.engine else tuple(OPENERS))


if __name__ == "__main__":
    main()
