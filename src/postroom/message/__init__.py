"""Build, render, parse and serialise email messages: the "email for humans" side of postroom.

>>> from postroom.message import Email
>>> e = Email(from_="Ana <ana@example.com>", to=["bo@example.com"], subject="Hi", text="Hello")
>>> raw = e.to_bytes()
>>> Email.from_bytes(raw).subject
'Hi'
"""

from __future__ import annotations

from postroom.message.attachment import Attachment
from postroom.message.email import Email

__all__ = ["Attachment", "Email"]
