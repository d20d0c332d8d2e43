"""The DATA section the SMTP transport sends: CRLF line endings, dots doubled, CRLF . CRLF."""

from __future__ import annotations

import pytest

from postroom.transport.smtp.envelope import data_section


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
        (b"A: b\r\n\r\nno final newline", b"A: b\r\n\r\nno final newline\r\n.\r\n"),
        (b"A: b\r\n\r\n.dot\r\nx\r\n", b"A: b\r\n\r\n..dot\r\nx\r\n.\r\n"),
        (b".first\r\n", b"..first\r\n.\r\n"),
        (b"A: b\n\nbare\nnewlines\n", b"A: b\r\n\r\nbare\r\nnewlines\r\n.\r\n"),
        (b"A: b\r\rlone\rcr", b"A: b\r\n\r\nlone\r\ncr\r\n.\r\n"),
        (b"mixed\n.dot\r\n", b"mixed\r\n..dot\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_data_section(message: bytes, sent: bytes) -> None:
    assert data_section(message) == sent
