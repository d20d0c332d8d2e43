"""``/metrics``: Prometheus series derived from the database, so every web process that reads
the same database reports the same values, however many dispatchers write it.

* gauges read at each scrape: messages by status, backlog, oldest due age, dispatchers and
  their relays;
* counters kept by following the database: delivery attempts by outcome (``attempts.id``
  ranges) and the enqueue-to-sent latency histogram (messages by ``sent_at``). The first scrape
  counts everything already in the database; later ones add the rows that appeared since, so
  the counters never go down, also when ``postroom purge`` deletes old rows.

A row written more than :data:`SENT_MARGIN_S` after its ``sent_at``, or an attempt committed
more than :data:`ATTEMPT_MARGIN` ids behind the newest one, would be missed by the counters; the
dispatchers write both within a fraction of a second.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from postroom.store.browse import Browser
from postroom.store.records import OUTCOMES, STATUSES, DispatcherInfo

__all__ = ["LATENCY_BUCKETS_S", "DatabaseCollector", "render_metrics"]

#: upper bounds of the latency histogram, seconds
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
SENT_MARGIN_S = 60.0
ATTEMPT_MARGIN = 2_000


class _AttemptCounter:
    """Attempts by outcome, each counted once: ids up to ``floor`` are summed in ``totals``
    at once; the newest :data:`ATTEMPT_MARGIN` ids are read row by row and remembered, so an id
    that commits late is still counted, and one deleted later is not taken back."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.floor: int | None = None
        self.totals: Counter[str] = Counter()
        self.counted: set[int] = set()

    def read(self) -> dict[str, int]:
        if self.floor is None:
            self.floor = max(0, self.browser.last_attempt_id() - ATTEMPT_MARGIN)
            self.totals.update(self.browser.attempt_counts(0, self.floor))
        newest = self.floor
        for attempt_id, outcome in self.browser.attempts_after(self.floor):
            newest = max(newest, attempt_id)
            if attempt_id not in self.counted:
                self.counted.add(attempt_id)
                self.totals[outcome] += 1
        self.floor = max(self.floor, newest - ATTEMPT_MARGIN)
        self.counted = {i for i in self.counted if i > self.floor}
        return dict(self.totals)


class _LatencyHistogram:
    """Latencies of sent messages, each ``(id, sent_at)`` counted once: messages sent before
    ``floor`` are settled (summed in the database once, at the first read); those sent since
    are read row by row and remembered while they are within :data:`SENT_MARGIN_S` of the
    newest."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total_s = 0.0
        self.floor: datetime | None = None
        self.recent: set[tuple[str, datetime]] = set()

    def read(self) -> tuple[list[int], float]:
        if self.floor is None:
            self._settle_history()
        newest = self.floor
        for row_id, sent_at, latency_s in self.browser.sent_latencies(self.floor):
            newest = sent_at if newest is None else max(newest, sent_at)
            if (row_id, sent_at) not in self.recent:
                self.recent.add((row_id, sent_at))
                self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
                self.total_s += latency_s
        if newest is not None:
            floor = newest - timedelta(seconds=SENT_MARGIN_S)
            self.floor = floor if self.floor is None else max(self.floor, floor)
            self.recent = {key for key in self.recent if key[1] >= self.floor}
        return self.bucket_counts, self.total_s

    def _settle_history(self) -> None:
        newest = self.browser.newest_sent_at()
        if newest is None:
            return
        self.floor = newest - timedelta(seconds=SENT_MARGIN_S)
        cumulative, self.total_s = self.browser.latency_histogram(LATENCY_BUCKETS_S, self.floor)
        previous = 0
        for i, running in enumerate(cumulative):
            self.bucket_counts[i] = running - previous
            previous = running


class DatabaseCollector(Collector):
    """A Prometheus collector whose values come from the postroom database.

    ``dead_after_s``: a dispatcher whose heartbeat is older is reported as not alive.
    """

    def __init__(
        self, browser: Browser, now: Callable[[], datetime], *, dead_after_s: float
    ) -> None:
        self.browser, self.now, self.dead_after_s = browser, now, dead_after_s
        self._attempts = _AttemptCounter(browser)
        self._latency = _LatencyHistogram(browser)
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.now()
            counts, backlog, dispatchers = self.browser.gauges(now)
            attempts = self._attempts.read()
            buckets, total_s = self._latency.read()
        yield _by_label(
            "postroom_messages", "Messages in the database by status.", "status", counts, STATUSES
        )
        yield from _backlog(backlog.due, backlog.scheduled, backlog.oldest_due_age_s)
        attempt_family = CounterMetricFamily(
            "postroom_delivery_attempts", "Delivery attempts by outcome.", labels=["outcome"]
        )
        for outcome in sorted(set(OUTCOMES) | set(attempts)):
            attempt_family.add_metric([outcome], attempts.get(outcome, 0))
        yield attempt_family
        yield _histogram(buckets, total_s)
        yield from _dispatcher_families(dispatchers, now, self.dead_after_s)


def render_metrics(collector: DatabaseCollector) -> bytes:
    """The Prometheus text exposition of ``collector``'s series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def _by_label(
    name: str, doc: str, label: str, values: dict[str, int], order: Iterable[str]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key in order:
        family.add_metric([key], values.get(key, 0))
    return family


def _backlog(due: int, scheduled: int, oldest_age_s: float | None) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "postroom_backlog_messages", "Queued messages due now (waiting to be sent).", value=due
    )
    yield GaugeMetricFamily(
        "postroom_scheduled_messages", "Queued messages scheduled for later.", value=scheduled
    )
    yield GaugeMetricFamily(
        "postroom_oldest_due_age_seconds",
        "How long the oldest due message has waited (0 when none is due).",
        value=oldest_age_s or 0.0,
    )


def _histogram(buckets: list[int], total_s: float) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound, count in zip(
        (*map(floatToGoString, LATENCY_BUCKETS_S), "+Inf"), buckets, strict=True
    ):
        running += count
        cumulative.append((bound, float(running)))
    return HistogramMetricFamily(
        "postroom_delivery_latency_seconds",
        "Time from enqueue (created_at) to sent (sent_at) of sent messages.",
        buckets=cumulative,
        sum_value=total_s,
    )


def _dispatcher_families(
    dispatchers: list[DispatcherInfo], now: datetime, dead_after_s: float
) -> Iterable[Metric]:
    labels = ["dispatcher", "host"]
    heartbeat = GaugeMetricFamily(
        "postroom_dispatcher_heartbeat_timestamp_seconds",
        "Unix time of each registered dispatcher's last heartbeat.",
        labels=labels,
    )
    relay_up = GaugeMetricFamily(
        "postroom_relay_up",
        "1 when the dispatcher's SMTP relay works, 0 while it is down.",
        labels=labels,
    )
    down_since = GaugeMetricFamily(
        "postroom_relay_down_since_timestamp_seconds",
        "Unix time since which the dispatcher's relay is down (only while it is).",
        labels=labels,
    )
    alive = 0
    for d in dispatchers:
        key = [d.id, d.host]
        heartbeat.add_metric(key, d.heartbeat_at.timestamp())
        relay_up.add_metric(key, 0 if d.relay_down_since else 1)
        if d.relay_down_since is not None:
            down_since.add_metric(key, d.relay_down_since.timestamp())
        alive += (now - d.heartbeat_at).total_seconds() <= dead_after_s
    yield heartbeat
    yield relay_up
    yield down_since
    yield GaugeMetricFamily(
        "postroom_dispatchers_alive",
        "Registered dispatchers whose last heartbeat is recent enough.",
        value=alive,
    )
