"""No MIME boundary ever occurs inside the parts it encloses, and rendering stays deterministic."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser

import pytest

from postroom.message import Email

MESSAGE_ID = "<order-1234@shop.example>"  # chosen by the application, so known to anyone


def order_email(forwarded: bytes) -> Email:
    e = Email(
        from_="shop@shop.example",
        to="customer@example.com",
        subject="Your order",
        text="See the forwarded message.",
        html="<p>See the forwarded message.</p>",
        message_id=MESSAGE_ID,
    )
    e.attach(forwarded, "original.eml", "message/rfc822")
    return e


def boundaries(raw: bytes) -> list[bytes]:
    return re.findall(rb'boundary="([^"]+)"', raw)


def smuggler(boundary: bytes) -> bytes:
    """A 7-bit forwarded message that closes the outer part and adds an inline HTML part."""
    return (
        b"From: x@example.com\r\nSubject: fwd\r\n\r\nhello\r\n"
        b"--" + boundary + b"\r\n"
        b"Content-Type: text/html\r\nContent-Disposition: inline\r\n\r\n"
        b"<a href='https://evil.example'>pay here</a>\r\n"
        b"--" + boundary + b"--\r\n"
    )


def test_a_forwarded_message_cannot_close_the_outer_part() -> None:
    predicted = boundaries(order_email(b"From: a@b.example\r\n\r\nbenign\r\n").to_bytes())
    assert predicted  # what an attacker computes from the known Message-ID
    e = order_email(smuggler(predicted[0]) + smuggler(predicted[-1]))
    raw = e.to_bytes()
    used = boundaries(raw)
    assert used[0] != predicted[0]  # the colliding boundary was replaced
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "multipart/alternative",
        "message/rfc822",
    ]
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    copy = Email.from_bytes(raw)
    assert len(copy.attachments) == 1 and copy.html == "<p>See the forwarded message.</p>"


def test_no_boundary_occurs_inside_its_part() -> None:
    predicted = boundaries(order_email(b"From: a@b.example\r\n\r\nx\r\n").to_bytes())
    forwarded = b"".join(smuggler(b) for b in predicted)
    e = order_email(forwarded)
    raw = e.to_bytes()
    used = boundaries(raw)
    assert len(used) == 2  # mixed [alternative [text, html], forwarded]: only mixed encloses it
    assert used[0] not in forwarded
    assert raw.count(used[0]) == 4  # declared once, opens two parts, closed once
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    inner = next(parsed.iter_attachments()).get_content()
    assert inner.as_bytes(policy=policy.default.clone(linesep="\r\n")).endswith(
        forwarded.split(b"\r\n\r\n", 1)[1]
    )


@pytest.mark.parametrize("copies", [1, 2])
def test_rendering_with_a_collision_stays_deterministic(copies: int) -> None:
    predicted = boundaries(order_email(b"From: a@b.example\r\n\r\nx\r\n").to_bytes())
    e = order_email(smuggler(predicted[0]) * copies)
    first = e.to_bytes()
    assert e.to_bytes() == first
    assert Email.from_dict(e.to_dict()).to_bytes() == first


def test_without_a_collision_the_boundaries_are_unchanged() -> None:
    e = order_email(b"From: a@b.example\r\n\r\nbenign\r\n")
    assert [b.split(b".")[-1] for b in boundaries(e.to_bytes())] == [b"0", b"1"]
