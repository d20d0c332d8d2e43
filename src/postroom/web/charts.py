"""Charts drawn on the server as inline SVG: no script, no network, nothing to load.

Only presentation attributes are used (no ``style``), so the page's Content Security Policy
needs no ``unsafe-inline``. Every label passes through :func:`html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "line_chart"]

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its name (for the legend), colour and values (``None``: no point there)."""

    name: str
    colour: str
    values: Sequence[float | None]


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> str:
    """An SVG line chart of ``series`` over ``labels`` (x axis), with a y axis from zero."""
    highest = max((v for s in series for v in s.values if v is not None), default=0.0)
    whole = all(float(v).is_integer() for s in series for v in s.values if v is not None)
    top_value = 4 * _nice_step(highest / 4, whole=whole)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        *_grid(top_value, unit),
        *_x_labels(labels),
    ]
    parts.extend(_polyline(s, len(labels), top_value) for s in series)
    parts.extend(_legend(series))
    parts.append("</svg>")
    return "".join(parts)


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span * index / (count - 1) if count > 1 else span / 2)


def _y(value: float, top_value: float) -> float:
    span = HEIGHT - TOP - BOTTOM
    return TOP + span * (1 - value / top_value)


def _grid(top_value: float, unit: str) -> list[str]:
    lines = []
    for step in range(5):
        value = top_value * step / 4
        y = _y(value, top_value)
        lines.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#555">{escape(_number(value) + unit)}</text>'
        )
    return lines


def _x_labels(labels: Sequence[str]) -> list[str]:
    count = len(labels)
    every = max(1, count // 6)
    return [
        f'<text x="{_x(i, count):.1f}" y="{HEIGHT - 8}" text-anchor="{_anchor(i, count)}" '
        f'font-size="10" '
        f'fill="#555">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if (i % every == 0 and count - 1 - i >= every // 2) or i == count - 1
    ]


def _anchor(index: int, count: int) -> str:
    if count > 1 and index == count - 1:
        return "end"
    return "start" if count > 1 and index == 0 else "middle"


def _polyline(series: Series, count: int, top_value: float) -> str:
    runs: list[list[str]] = [[]]
    for i, value in enumerate(series.values):
        if value is None:
            runs.append([])
            continue
        runs[-1].append(f"{_x(i, count):.1f},{_y(value, top_value):.1f}")
    shapes = []
    for run in runs:
        if len(run) == 1:
            x, y = run[0].split(",")
            shapes.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{escape(series.colour)}"/>')
        elif run:
            shapes.append(
                f'<polyline points="{" ".join(run)}" fill="none" '
                f'stroke="{escape(series.colour)}" stroke-width="1.8"/>'
            )
    return f"<g><title>{escape(series.name)}</title>{''.join(shapes)}</g>"


def _legend(series: Sequence[Series]) -> list[str]:
    items = []
    x = LEFT + 8
    for s in series:
        items.append(
            f'<rect x="{x}" y="{TOP + 2}" width="10" height="10" fill="{escape(s.colour)}"/>'
            f'<text x="{x + 14}" y="{TOP + 11}" font-size="11" fill="#222">{escape(s.name)}</text>'
        )
        x += 14 + 7 * len(s.name) + 16
    return items


def _nice_step(value: float, *, whole: bool) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least ``value`` (at
    least 1 for whole numbers); the y axis has four such steps."""
    if value <= 0:
        return 1.0 if whole else 0.25
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = factor * power
        if step >= value and (not whole or step >= 1):
            return step
    return 10 * power


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
