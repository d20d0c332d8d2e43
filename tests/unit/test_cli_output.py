"""Formatting helpers of the command line: times, durations, tables, JSON conversion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postroom.cli.output import (
    fmt_seconds,
    fmt_time,
    json_time,
    print_json,
    printable,
    record_to_json,
    table,
)

PLUS_TWO = timezone(timedelta(hours=2))


def test_fmt_time_is_utc_with_z_and_whole_seconds() -> None:
    value = datetime(2026, 12, 1, 11, 0, 5, 987654, tzinfo=PLUS_TWO)
    assert fmt_time(value) == "2026-12-01T09:00:05Z"
    assert fmt_time(None) == "-"


def test_json_time_keeps_microseconds() -> None:
    assert json_time(datetime(2026, 12, 1, 9, 0, 0, 5, tzinfo=UTC)) == "2026-12-01T09:00:00.000005Z"
    assert json_time(datetime(2026, 12, 1, 9, tzinfo=PLUS_TWO)) == "2026-12-01T07:00:00.000000Z"
    assert json_time(None) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0ms"),
        (0.35, "350ms"),
        (0.9994, "999ms"),
        (1.0, "1s"),
        (1.25, "1.25s"),
        (59.5, "59.5s"),
        (125.0, "2m5s"),
        (3600.0, "1h"),
        (None, "-"),
    ],
)
def test_fmt_seconds(seconds: float | None, shown: str) -> None:
    assert fmt_seconds(seconds) == shown


def test_table_aligns_columns_and_leaves_last_unpadded() -> None:
    text = table(
        [("a", "1", "x"), ("long-name", "22", "y")], header=("name", "n", "what"), indent=2
    )
    assert text.splitlines() == [
        "  name       n   what",
        "  a          1   x",
        "  long-name  22  y",
    ]
    assert table([]) == ""


@dataclass(frozen=True)
class _Row:
    id: str
    at: datetime
    names: list[str]
    pairs: list[tuple[str, int]]
    size: int | None


def test_record_to_json_converts_every_field() -> None:
    row = _Row("m1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), ["a@x"], [("boom", 2)], None)
    assert record_to_json(row) == {
        "id": "m1",
        "at": "2026-01-02T03:04:05.000000Z",
        "names": ["a@x"],
        "pairs": [["boom", 2]],
        "size": None,
    }
    with pytest.raises(TypeError):
        record_to_json({"not": "a dataclass"})


def test_print_json_prints_one_parsable_document(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"b": 1, "a": ["é"]})
    out = capsys.readouterr().out
    assert json.loads(out) == {"b": 1, "a": ["é"]}
    assert out.index('"a"') < out.index('"b"')  # stable, sorted keys


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain é ✓", "plain é ✓"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("bell\x07 del\x7f csi\x9b", "bell\\x07 del\\x7f csi\\x9b"),
        ("line\r\nforged", "line\\x0d\\x0aforged"),
        ("rtl\u202eexe.txt", "rtl\\u202eexe.txt"),
        ("sep\u2028x", "sep\\u2028x"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert table([[raw, raw]]) == f"{shown}  {shown}"


def test_json_output_escapes_what_json_leaves_raw(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"s": "a\x1b\x9b\x7f\u202e\u2028b"})
    out = capsys.readouterr().out
    assert out == '{\n  "s": "a\\u001b\\u009b\\u007f\\u202e\\u2028b"\n}\n'
    assert json.loads(out) == {"s": "a\x1b\x9b\x7f\u202e\u2028b"}
