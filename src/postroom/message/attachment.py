"""One file carried by an Email: an attachment, or an inline image the HTML shows via ``cid:``."""

from __future__ import annotations

import mimetypes
import re
import secrets
from dataclasses import dataclass

from postroom.errors import HeaderError, MessageError
from postroom.message.headers import check_value

__all__ = ["Attachment", "guess_content_type", "split_content_type"]

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,127}"  # RFC 6838 caps names at 127 characters
_CONTENT_TYPE = re.compile(rf"({_TOKEN}/{_TOKEN})\s*(?:;(.*))?\Z", re.DOTALL)
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*?)\s*(?:;|\Z)')
_CONTENT_ID = re.compile(r"[!-;=?-~]{1,900}\Z")  # printable ASCII, no spaces, "<" or ">"


def guess_content_type(filename: str) -> str:
    """The MIME type for ``filename``'s extension; ``application/octet-stream`` when unknown."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


def split_content_type(value: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``"text/calendar; method=REQUEST"`` into ``("text/calendar", [("method", ...)])``.

    The type is lower-cased; parameter names are lower-cased; quoted values are unquoted.
    Raises :class:`MessageError` for anything that is not ``type/subtype[; key=value...]``.
    """
    check_value("content type", value)
    match = _CONTENT_TYPE.match(value.strip())
    if not match:
        raise MessageError(f"content type {value!r} is not of the form type/subtype")
    params: list[tuple[str, str]] = []
    rest = match.group(2) or ""
    position = 0
    while rest[position:].strip():
        param = _PARAM.match(rest, position)
        if not param:
            raise MessageError(f"content type {value!r} has a malformed parameter")
        raw = param.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.append((param.group(1).lower(), raw))
        position = param.end()
    return match.group(1).lower(), params


def new_content_id() -> str:
    """A fresh, globally unique Content-ID (without angle brackets)."""
    return f"{secrets.token_hex(12)}@postroom.local"


def check_content_id(value: str) -> str:
    """Return the Content-ID without angle brackets, or raise :class:`HeaderError`."""
    check_value("content_id", value)
    bare = value.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1]
    if not _CONTENT_ID.match(bare):
        raise HeaderError(
            f"content_id {value!r} must be 1-900 printable ASCII characters without spaces, "
            "'<' or '>'"
        )
    return bare


@dataclass(slots=True)
class Attachment:
    """A file attached to an :class:`~postroom.message.Email`.

    ``inline=True`` marks an image (or other part) shown inside the HTML body, which references
    it as ``cid:<content_id>``; an inline attachment always has a ``content_id``. Everything is
    checked when the object is built: the file name is a non-empty string without CR/LF
    (surrounding whitespace is removed), the content type is ``type/subtype`` (parameters
    allowed).
    """

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None

    def __post_init__(self) -> None:
        # surrounding whitespace never survives a MIME parameter: drop it here, visibly
        self.filename = check_value("attachment filename", self.filename).strip()
        if not self.filename:
            raise MessageError("attachment filename is empty")
        content: object = self.content
        if isinstance(content, str):
            self.content = content.encode("utf-8")
        elif isinstance(content, bytearray | memoryview):
            self.content = bytes(content)
        elif not isinstance(content, bytes):
            raise MessageError(
                f"attachment {self.filename!r}: content must be bytes, not {type(content).__name__}"
            )
        split_content_type(self.content_type)
        self.content_type = self.content_type.strip()
        if not isinstance(self.inline, bool):
            raise MessageError(f"attachment {self.filename!r}: inline must be True or False")
        if self.content_id is not None:
            self.content_id = check_content_id(self.content_id)
        elif self.inline:
            self.content_id = new_content_id()

    def __repr__(self) -> str:
        kind = "inline" if self.inline else "attachment"
        return (
            f"Attachment({self.filename!r}, {self.content_type!r}, {len(self.content)} bytes, "
            f"{kind}, content_id={self.content_id!r})"
        )
