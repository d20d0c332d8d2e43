"""``/metrics`` parsed with prometheus_client's own parser, its values checked against the
database, on every engine; dispatcher heartbeats in ``/metrics`` and ``/readyz``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from starlette.testclient import TestClient

from postroom.config import load_config
from postroom.store import DispatcherBeat, Store
from postroom.store.schema import attempts, messages
from postroom.web import create_app
from tests.webdata import add_message, deliver, utc

NOW = utc(2026, 12, 3, 12, 0)
BASE = "http://127.0.0.1:8025"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(store_url: str, store: Store, clock: Clock) -> Iterator[TestClient]:
    engine = "sqlite3" if store_url.startswith("sqlite") else "postgres"
    config = load_config({"email": {"server": {"database": {"engine": engine, "url": store_url}}}})
    with TestClient(create_app(config, now=clock), base_url=BASE) as c:
        yield c


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def in_db(store: Store, query: object) -> list[tuple[object, ...]]:
    with store._connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[call-overload]


def seed(store: Store) -> None:
    for minute, outcome in ((50, "sent"), (40, "failed"), (30, "sent"), (20, "sent")):
        created = NOW - timedelta(minutes=minute)
        message_id = add_message(store, created_at=created)
        deliver(store, message_id, at=created + timedelta(seconds=3), outcome=outcome)
    add_message(store, created_at=NOW - timedelta(minutes=15))  # due, waiting
    add_message(store, created_at=NOW, send_after=NOW + timedelta(hours=1))  # scheduled


def test_metrics_match_the_database(client: TestClient, store: Store) -> None:
    seed(store)
    samples = scrape(client)
    by_status = dict(in_db(store, select(messages.c.status, func.count()).group_by("status")))
    for status in ("queued", "sending", "sent", "failed", "expired", "cancelled"):
        assert samples[("postroom_messages", (("status", status),))] == by_status.get(status, 0)
    outcomes = dict(in_db(store, select(attempts.c.outcome, func.count()).group_by("outcome")))
    assert outcomes == {"sent": 3, "permanent": 1}
    for outcome, count in outcomes.items():
        key = ("postroom_delivery_attempts_total", (("outcome", outcome),))
        assert samples[key] == count
    assert samples[("postroom_backlog_messages", ())] == 1
    assert samples[("postroom_scheduled_messages", ())] == 1
    assert samples[("postroom_oldest_due_age_seconds", ())] == 15 * 60
    # every sent message took 4 s from enqueue to sent (delivered 3 s later, 1 s attempt)
    assert samples[("postroom_delivery_latency_seconds_count", ())] == 3
    assert samples[("postroom_delivery_latency_seconds_sum", ())] == pytest.approx(12.0, abs=0.01)
    assert samples[("postroom_delivery_latency_seconds_bucket", (("le", "2.5"),))] == 0
    assert samples[("postroom_delivery_latency_seconds_bucket", (("le", "5.0"),))] == 3


def test_counters_grow_with_new_rows_and_never_go_down(
    client: TestClient, store: Store, clock: Clock
) -> None:
    seed(store)
    first = scrape(client)
    due = in_db(store, select(messages.c.id).where(messages.c.status == "queued"))
    waiting = [str(row[0]) for row in due]
    deliver(store, waiting[0], at=NOW, outcome="sent")  # the due one
    clock.now = NOW + timedelta(minutes=1)
    second = scrape(client)
    sent_key = ("postroom_delivery_attempts_total", (("outcome", "sent"),))
    assert second[sent_key] == first[sent_key] + 1
    count_key = ("postroom_delivery_latency_seconds_count", ())
    assert second[count_key] == first[count_key] + 1
    assert store.purge(NOW + timedelta(days=1)) == 5  # every finished row goes
    client.app.state.ctx.browser.recount_every_s = 0  # type: ignore[attr-defined]
    third = scrape(client)
    assert third[sent_key] == second[sent_key]
    assert third[count_key] == second[count_key]
    assert third[("postroom_messages", (("status", "sent"),))] == 0


def test_dispatchers_in_metrics_and_readyz(client: TestClient, store: Store, clock: Clock) -> None:
    beat = DispatcherBeat("host-a:11:x", "host-a", 11, NOW - timedelta(minutes=5))
    store.heartbeat(beat, NOW - timedelta(seconds=1), 60)
    down = DispatcherBeat(
        "host-b:12:y",
        "host-b",
        12,
        NOW - timedelta(minutes=5),
        relay_down_since=NOW - timedelta(minutes=2),
        relay_failure="connection refused",
    )
    store.heartbeat(down, NOW - timedelta(seconds=30), 60)  # silent for 30 s: dead
    samples = scrape(client)
    a, b = (
        (("dispatcher", "host-a:11:x"), ("host", "host-a")),
        (
            ("dispatcher", "host-b:12:y"),
            ("host", "host-b"),
        ),
    )
    assert samples[("postroom_relay_up", a)] == 1
    assert samples[("postroom_relay_up", b)] == 0
    assert samples[("postroom_relay_down_since_timestamp_seconds", b)] == (
        (NOW - timedelta(minutes=2)).timestamp()
    )
    assert samples[("postroom_dispatcher_heartbeat_timestamp_seconds", a)] == (
        (NOW - timedelta(seconds=1)).timestamp()
    )
    assert samples[("postroom_dispatchers_alive", ())] == 1
    ready = client.get("/readyz", params={"dispatchers": "1"})
    assert ready.status_code == 200
    body = ready.json()
    assert body["dispatchers_alive"] == 1
    assert [d["alive"] for d in body["dispatchers"]] == [True, False]
    assert body["dispatchers"][1]["relay"] == "down: connection refused"
    assert client.get("/readyz", params={"dispatchers": "2"}).status_code == 503
