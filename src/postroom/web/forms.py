"""Reading search parameters from a query string, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from postroom.durations import parse_duration
from postroom.store.search import SearchQuery

__all__ = ["BadInput", "parse_position", "position_text", "search_query"]


class BadInput(ValueError):
    """Raised for a query parameter that cannot be used; the message names it."""


def search_query(params: Mapping[str, str], now: datetime, *, limit: int = 50) -> SearchQuery:
    """A :class:`SearchQuery` from ``q``, ``from``, ``to``, ``subject``, ``status``, ``since``,
    ``until``, ``before`` and ``limit``. ``since`` / ``until`` take an ISO time or a duration
    back from now (``24h``)."""
    try:
        return SearchQuery(
            key=params.get("q", "").strip(),
            sender=params.get("from", "").strip(),
            recipient=params.get("to", "").strip(),
            subject=params.get("subject", "").strip(),
            status=params.get("status", "").strip(),
            since=_when(params.get("since", ""), now, "since"),
            until=_when(params.get("until", ""), now, "until"),
            older_than=parse_position(params.get("before", "")),
            limit=_limit(params.get("limit", ""), limit),
        )
    except BadInput:
        raise
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def position_text(position: tuple[datetime, str]) -> str:
    """A page position as one query parameter value."""
    return f"{position[0].isoformat()}|{position[1]}"


def parse_position(text: str) -> tuple[datetime, str] | None:
    if not text:
        return None
    stamp, sep, row_id = text.partition("|")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        when = None
    if not sep or not row_id or when is None or when.tzinfo is None:
        raise BadInput(f"before: {text!r} is not a page position")
    return when, row_id


def _when(text: str, now: datetime, name: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{name}: {text!r} is neither a duration (24h, 7d) nor an ISO time"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _limit(text: str, default: int) -> int:
    if not text.strip():
        return default
    if not text.strip().isdigit() or not 1 <= int(text) <= 1000:
        raise BadInput(f"limit: {text!r} is not a number from 1 to 1000")
    return int(text)
