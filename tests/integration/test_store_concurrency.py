"""Several claimers on one database: every row is claimed exactly once.

SQLite: two OS processes on one file (the store's write lock file and ``BEGIN IMMEDIATE``
serialise them). PostgreSQL: three threads with their own connections (``FOR UPDATE SKIP
LOCKED`` lets them pass each other).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postroom.store import NewMessage, Store, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CLAIMER = """
import json, sys
from datetime import datetime
from postroom.store import open_store

url, owner, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
store = open_store(url)
print("ready", flush=True)
sys.stdin.readline()  # start signal: both processes claim at the same time
claimed = []
while True:
    batch = store.claim_due(owner, 25, 600, now)
    if not batch:
        break
    claimed.extend(row.id for row in batch)
store.close()
print(json.dumps(claimed), flush=True)
"""


WORKER = """
import json, sys
from datetime import UTC, datetime, timedelta
import postroom.store.engine
postroom.store.engine.BUSY_TIMEOUT_MS = 0  # any wait in SQLite's busy handler is an error here
from postroom.errors import StoreError
from postroom.store import AttemptRecord, Finish, NewMessage, open_store

url, owner, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
store = open_store(url)
store.migrate()  # a no-op for both, at the same time
print("ready", flush=True)
sys.stdin.readline()  # start signal: both processes write at the same time


def sent(row_id):
    attempt = AttemptRecord(now, now, "sent", 250, "2.0.0", "ok", owner, ["r@example.com"])
    return Finish(row_id, "sent", attempt, False, None, None, None, now)


claimed, finished, errors = [], 0, []
for start in range(0, count, 50):
    rows = [
        NewMessage(
            id=f"{owner}-{i:05d}", status="queued", priority=i % 3, created_at=now,
            send_after=now, expires_at=now + timedelta(hours=1), mail_from="s@example.com",
            recipients=["r@example.com"], subject="", message_id=None, data=b"x" * 2048,
        )
        for i in range(start, min(start + 50, count))
    ]
    try:
        store.insert_messages(rows)
        batch = store.claim_due(owner, 40, 600, now)
        claimed.extend(row.id for row in batch)
        finished += store.finish(owner, [sent(row.id) for row in batch])
    except StoreError as exc:
        errors.append(str(exc))
while True:
    try:
        batch = store.claim_due(owner, 40, 600, now)
    except StoreError as exc:
        errors.append(str(exc))
        continue
    if not batch:
        break
    claimed.extend(row.id for row in batch)
    finished += store.finish(owner, [sent(row.id) for row in batch])
store.close()
print(json.dumps({"claimed": claimed, "finished": finished, "errors": errors}), flush=True)
"""


def start_together(script: str, args: list[list[str]]) -> list[dict[str, object]]:
    """Run ``script`` in one process per argument list, released at the same moment."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for argv in args
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0
        results.append(json.loads(out))
    return results


def fill(store: Store, count: int) -> list[str]:
    ids = [f"m{i:05d}" for i in range(count)]
    rows = [
        NewMessage(
            id=row_id,
            status="queued",
            priority=i % 3,
            created_at=T0 + timedelta(milliseconds=i),
            send_after=T0,
            expires_at=T0 + timedelta(hours=1),
            mail_from="s@example.com",
            recipients=["r@example.com"],
            subject="",
            message_id=None,
            data=b"x" * 256,
        )
        for i, row_id in enumerate(ids)
    ]
    for start in range(0, count, 500):
        store.insert_messages(rows[start : start + 500])
    return ids


def assert_each_claimed_once(ids: list[str], per_owner: dict[str, list[str]]) -> None:
    counts = Counter(row_id for claimed in per_owner.values() for row_id in claimed)
    assert sorted(counts) == ids
    assert max(counts.values()) == 1


def test_two_processes_claim_each_sqlite_row_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_store(url) as store:
        store.migrate()
        ids = fill(store, 2000)
    now = (T0 + timedelta(seconds=1)).isoformat()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, url, owner, now],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for owner in ("P1", "P2")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = {}
    for owner, proc in zip(("P1", "P2"), procs, strict=True):
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results[owner] = json.loads(out)
    assert_each_claimed_once(ids, results)
    with open_store(url) as store:
        assert store.stats(None, T0).counts["sending"] == 2000


def claim_in_threads(store: Store, owners: list[str], now: datetime) -> dict[str, list[str]]:
    results: dict[str, list[str]] = {owner: [] for owner in owners}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(owners))

    def run(owner: str) -> None:
        barrier.wait()
        try:
            while batch := store.claim_due(owner, 20, 600, now):
                results[owner].extend(row.id for row in batch)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


@pytest.mark.postgres
def test_three_threads_claim_each_postgres_row_once(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        store.migrate()
        ids = fill(store, 3000)
        results = claim_in_threads(store, ["T1", "T2", "T3"], T0 + timedelta(seconds=1))
        assert_each_claimed_once(ids, results)
        assert store.stats(None, T0).counts["sending"] == 3000


def test_threads_share_one_sqlite_store(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'threads.db'}") as store:
        store.migrate()
        ids = fill(store, 600)
        results = claim_in_threads(store, ["T1", "T2", "T3"], T0 + timedelta(seconds=1))
        assert_each_claimed_once(ids, results)


def test_two_processes_insert_claim_and_finish_without_busy_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_store(url) as parent:
        # the file exists in WAL mode and stays open, as it does while a server runs: creating
        # it, or re-reading a WAL nobody holds open, briefly locks out readers too
        parent.migrate()
        results = start_together(WORKER, [[url, "P1", "1500"], [url, "P2", "1500"]])
    assert [r["errors"] for r in results] == [[], []]
    per_owner = {f"P{i + 1}": list(r["claimed"]) for i, r in enumerate(results)}  # type: ignore[call-overload]
    ids = sorted(f"{owner}-{i:05d}" for owner in ("P1", "P2") for i in range(1500))
    assert_each_claimed_once(ids, per_owner)
    assert sum(int(r["finished"]) for r in results) == 3000  # type: ignore[call-overload]
    with open_store(url) as store:
        stats = store.stats(None, T0)
        assert stats.counts["sent"] == 3000 and stats.attempts == 3000
        assert sum(stats.counts.values()) == 3000
