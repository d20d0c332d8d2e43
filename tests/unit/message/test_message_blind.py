"""Blind recipients stay blind when a message is parsed and sent again."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.errors import HeaderError
from postroom.message import Email
from postroom.transport.capture import RCPT_TO_HEADER

HIDDEN = "hidden-audit@example.com"


def captured_file(tmp_path: Path) -> Path:
    """An ``.eml`` file as the capture server writes it: the envelope line, then the message."""
    e = Email(from_="app@example.com", to="alice@example.com", bcc=HIDDEN, text="hi")
    envelope = ", ".join(e.envelope_recipients)
    path = tmp_path / "captured.eml"
    path.write_bytes(f"{RCPT_TO_HEADER}: {envelope}\r\n".encode() + e.to_bytes())
    return path


def test_resending_a_captured_eml_does_not_reveal_the_bcc(tmp_path: Path) -> None:
    path = captured_file(tmp_path)
    assert HIDDEN.encode() in path.read_bytes()  # the capture line does name it
    copy = Email.from_file(path)
    assert not any(name.lower() == RCPT_TO_HEADER.lower() for name in copy.headers)
    assert HIDDEN.encode() not in copy.to_bytes()
    assert copy.envelope_recipients == ["alice@example.com"]


def test_from_bytes_drops_resent_bcc_and_never_renders_it() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nResent-From: c@example.com\r\n"
        b"Resent-Bcc: " + HIDDEN.encode() + b"\r\nSubject: s\r\n\r\nbody\r\n"
    )
    copy = Email.from_bytes(raw)
    assert "Resent-From" in copy.headers
    assert not any(name.lower() == "resent-bcc" for name in copy.headers)
    rendered = copy.to_bytes()
    assert b"resent-bcc" not in rendered.lower() and HIDDEN.encode() not in rendered


@pytest.mark.parametrize("name", ["Resent-Bcc", "RESENT-BCC", "X-Postroom-Rcpt-To", "Bcc"])
def test_blind_headers_are_refused_in_headers(name: str) -> None:
    with pytest.raises(HeaderError, match=name):
        Email(from_="a@example.com", to="b@example.com", headers={name: HIDDEN})


def test_a_blind_header_added_in_place_is_refused_at_render() -> None:
    e = Email(from_="a@example.com", to="b@example.com", text="x")
    e.headers["Resent-Bcc"] = HIDDEN
    with pytest.raises(HeaderError, match="Resent-Bcc"):
        e.to_bytes()
