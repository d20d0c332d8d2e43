"""Fixtures for the message tests: the message corpus and an independent check of rendered bytes."""

from __future__ import annotations

from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "data" / "messages"


def wire_rules(raw: bytes, *, ascii_only: bool = True) -> None:
    """Assert what every rendered message must satisfy on the wire."""
    if ascii_only:
        assert raw.isascii(), "output is not 7-bit ASCII"
    lines = raw.split(b"\r\n")
    for number, line in enumerate(lines, 1):
        assert b"\n" not in line and b"\r" not in line, f"bare CR or LF on line {number}"
        assert len(line) <= 998, f"line {number} has {len(line)} octets"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n"))


def independent_parse(raw: bytes, *, ascii_only: bool = True) -> EmailMessage:
    """Check the wire rules, then parse with the standard library (not postroom's parser)."""
    wire_rules(raw, ascii_only=ascii_only)
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def structure(part: EmailMessage) -> object:
    """The content-type tree: ``"text/plain"`` or ``("multipart/mixed", [children...])``."""
    if part.is_multipart() and part.get_content_type().startswith("multipart/"):
        children = [structure(child) for child in part.iter_parts()]  # type: ignore[arg-type]
        return (part.get_content_type(), children)
    return part.get_content_type()


@pytest.fixture(scope="session")
def check_wire() -> Callable[[bytes], None]:
    """The wire rules alone (session-scoped, so property tests can use it)."""
    return wire_rules


@pytest.fixture
def corpus() -> Path:
    return CORPUS


@pytest.fixture
def parse_independently() -> Callable[..., EmailMessage]:
    return independent_parse


@pytest.fixture
def tree() -> Callable[[EmailMessage], object]:
    return structure
