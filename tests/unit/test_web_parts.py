"""Pieces of the dashboard that need no database: charts, search parameters, listen address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("starlette")

from postroom.config import split_listen
from postroom.web.charts import Series, _nice_step, line_chart
from postroom.web.forms import BadInput, parse_position, position_text, search_query
from postroom.web.security import is_loopback

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_chart_axis_uses_round_steps() -> None:
    assert [_nice_step(v, whole=True) for v in (0, 0.25, 1, 1.2, 3, 7, 130)] == [
        1,
        1,
        1,
        2,
        5,
        10,
        200,
    ]
    assert [_nice_step(v, whole=False) for v in (0, 0.03, 0.2, 0.4)] == [0.25, 0.05, 0.2, 0.5]


def test_chart_escapes_labels_and_skips_missing_points() -> None:
    svg = line_chart("<t>", ["<a>", "b", "c"], [Series("x<y", "#000", [1, None, 3])])
    assert "<t>" not in svg and "&lt;t&gt;" in svg and "&lt;a&gt;" in svg and "x&lt;y" in svg
    assert svg.count("<circle") == 2  # two lone points: the gap splits the line
    assert "<script" not in svg


def test_search_parameters() -> None:
    query = search_query({"since": "24h", "until": "2026-12-03T11:00", "status": "sent"}, NOW)
    assert query.since == NOW - timedelta(hours=24)
    assert query.until == datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
    assert query.windowed
    assert not search_query({"q": "01ABC"}, NOW).windowed
    position = (NOW, "01ABC")
    assert parse_position(position_text(position)) == position


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"since": "yesterday"}, "since: 'yesterday' is neither a duration"),
        ({"limit": "0"}, "limit: '0' is not a number from 1 to 1000"),
        ({"before": "nonsense"}, "before: 'nonsense' is not a page position"),
        ({"status": "lost"}, "'lost' is not a status"),
    ],
)
def test_bad_search_parameters_name_the_problem(params: dict[str, str], problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        search_query(params, NOW)


def test_listen_addresses() -> None:
    assert split_listen("127.0.0.1:8025") == ("127.0.0.1", 8025)
    assert split_listen("[::1]:80") == ("::1", 80)
    for bad in ("8025", "::1:80", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            split_listen(bad)
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
