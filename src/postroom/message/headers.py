"""Header checks, RFC 2047 encoded-words, RFC 2231 parameters and line folding.

Everything here renders one header field as text ending in CRLF. The rules:

* A value may never contain CR or LF (that is header injection): :func:`check_value` refuses it.
* Lines are folded at whitespace to stay within 78 characters where possible and always within
  the hard limit of 998 octets (RFC 5322 section 2.1.1). Folding only inserts CRLF before a space
  that is already there, so unfolding gives back the exact value.
* A value that cannot be written as plain printable ASCII (non-ASCII text, control characters,
  leading or trailing spaces, something that looks like an encoded-word, a word too long to fold)
  is written as UTF-8 encoded-words (RFC 2047), each at most 75 characters, split only between
  characters. With ``smtputf8`` plain UTF-8 is written instead where it fits.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence

from postroom.errors import HeaderError

__all__ = [
    "BLIND_HEADERS",
    "check_headers",
    "check_message_id",
    "check_name",
    "check_value",
    "encoded_words",
    "fold",
    "unstructured",
    "with_params",
]

MAX_LINE = 78  # RFC 5322 "SHOULD"
HARD_LIMIT = 998  # RFC 5322 "MUST", octets without CRLF
MAX_NAME = 200  # keeps "Name: first-piece" far below the hard limit
MAX_RAW_WORD = 700  # a longer run without spaces cannot be folded: encode it instead
_WORD = 75  # RFC 2047: an encoded-word is at most 75 characters
_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext: printable ASCII except ":"
# Characters written as themselves in a Q encoded-word: the set RFC 2047 allows even in a phrase.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = [chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)]
# RFC 2231 attribute-char: what may stay unescaped in an extended parameter value.
_ATTR_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
_PCT_BYTE = [chr(b) if b in _ATTR_SAFE else f"%{b:02X}" for b in range(256)]
_QUOTABLE_PARAM = re.compile(r"[ !#-\[\]-~]{1,60}\Z")  # printable ASCII without " and \
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,900}>\Z")  # printable ASCII, no spaces or < >
_FIELD_HEADERS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "reply_to",
    "subject": "subject",
    "date": "date",
    "message-id": "message_id",
    "disposition-notification-to": "read_receipt",
}
_MIME_HEADERS = frozenset(
    {"mime-version", "content-type", "content-transfer-encoding", "content-disposition"}
)
#: headers that name blind recipients (``X-Postroom-Rcpt-To`` is the envelope line the capture
#: server writes on top of each ``.eml`` file): never set, never kept by ``from_bytes()``
BLIND_HEADERS = frozenset({"resent-bcc", "x-postroom-rcpt-to"})


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid header field name, else raise :class:`HeaderError`."""
    if not isinstance(name, str):
        raise HeaderError(f"header name {name!r} is not a string")
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise HeaderError(
            f"invalid header name {name!r}: use 1-{MAX_NAME} printable ASCII characters "
            "without spaces or ':'"
        )
    return name


def check_value(field: str, value: object) -> str:
    """Return ``value`` if it may be a header value: a string without CR or LF.

    ``field`` names what is being checked (``"subject"``, ``"header 'X-Tag'"``) in the error.
    """
    if not isinstance(value, str):
        raise HeaderError(f"{field} must be a string, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise HeaderError(f"{field} contains a line break (CR or LF), which is not allowed")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HeaderError(f"{field} is not valid Unicode text ({exc.reason})") from None
    return value


def fold(name: str, pieces: Sequence[str]) -> str:
    """Join ``name`` and ``pieces`` into one header, folding before pieces when a line gets long.

    Every piece after the first must start with a space: a fold puts CRLF in front of it.
    """
    lines: list[str] = []
    line = f"{name}: {pieces[0]}" if pieces else f"{name}:"
    for piece in pieces[1:]:
        if len(line) + len(piece) > MAX_LINE:
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    lines.append("")
    return "\r\n".join(lines)


def _plain_ok(value: str, smtputf8: bool) -> bool:
    """Whether ``value`` can be written as is (it survives folding and unfolding unchanged)."""
    if not value:
        return True
    if value[0] == " " or value[-1] == " " or "=?" in value or not value.isprintable():
        return False
    if value.isascii():
        return max(map(len, value.split(" "))) <= MAX_RAW_WORD
    if not smtputf8:
        return False
    return max(len(word.encode("utf-8")) for word in value.split(" ")) <= MAX_RAW_WORD


def _plain_pieces(value: str) -> list[str]:
    words = value.split(" ")
    pieces = [words[0]]
    pending = ""
    for word in words[1:]:
        pending += " "
        if word:  # runs of spaces stay attached to the next word, never alone on a line
            pieces.append(pending + word)
            pending = ""
    return pieces


def _q_chunks(text: str, budgets: tuple[int, int]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    limit = budgets[0]
    for char in text:
        encoded = "".join([_Q_BYTE[b] for b in char.encode("utf-8")])
        if current and size + len(encoded) > limit:
            chunks.append("".join(current))
            current, size, limit = [], 0, budgets[1]
        current.append(encoded)
        size += len(encoded)
    chunks.append("".join(current))
    return chunks


def _b_chunks(text: str, budgets: tuple[int, int]) -> list[str]:
    chunks: list[str] = []
    current = bytearray()
    limit = budgets[0] // 4 * 3
    for char in text:
        raw = char.encode("utf-8")
        if current and len(current) + len(raw) > limit:
            chunks.append(base64.b64encode(current).decode("ascii"))
            current = bytearray()
            limit = budgets[1] // 4 * 3
        current += raw
    chunks.append(base64.b64encode(current).decode("ascii"))
    return chunks


def encoded_words(text: str, first_line_used: int = 0) -> list[str]:
    """Encode ``text`` as UTF-8 encoded-words (Q unless B is clearly shorter), as folding pieces.

    ``first_line_used`` is how many characters of the first line are taken already, so the
    first word is made shorter to keep that line within 76 characters (RFC 2047 section 2).
    """
    raw = text.encode("utf-8")
    q_size = sum(len(_Q_BYTE[b]) for b in raw)
    b_size = (len(raw) + 2) // 3 * 4
    kind = "q" if q_size * 3 <= b_size * 4 else "b"  # Q stays readable: prefer it unless longer
    overhead = len("=?utf-8?q??=")
    first = max(16, min(_WORD, 76 - first_line_used) - overhead)
    budgets = (first, _WORD - overhead)
    chunks = _q_chunks(text, budgets) if kind == "q" else _b_chunks(text, budgets)
    words = [f"=?utf-8?{kind}?{chunk}?=" for chunk in chunks]
    return [words[0]] + [" " + word for word in words[1:]]


def unstructured(name: str, value: str, smtputf8: bool = False) -> str:
    """Render an unstructured header (Subject, a custom header) ending in CRLF."""
    if len(name) + len(value) + 2 <= MAX_LINE and value.isascii() and _plain_ok(value, smtputf8):
        return f"{name}: {value}\r\n"  # what folding gives a short plain value: one line
    if _plain_ok(value, smtputf8):
        return fold(name, _plain_pieces(value))
    return fold(name, encoded_words(value, len(name) + 2))


def _param_parts(key: str, value: str) -> list[str]:
    """One parameter as folding pieces (each starting with a space), without the ``;``."""
    if _QUOTABLE_PARAM.match(value):
        return [f' {key}="{value}"']
    encoded = "".join([_PCT_BYTE[b] for b in value.encode("utf-8")])
    size = max(24, MAX_LINE - len(key) - 16)  # room on a line for `` key*NN*=utf-8''...;``
    if len(encoded) <= size:
        return [f" {key}*=utf-8''{encoded}"]
    segments: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + size, len(encoded))
        percent = encoded.rfind("%", max(start, end - 2), end)
        if percent != -1 and end < len(encoded):
            end = percent  # never cut a %XX escape in two
        segments.append(encoded[start:end])
        start = end
    parts = [f" {key}*0*=utf-8''{segments[0]}"]
    parts += [f" {key}*{index}*={segment}" for index, segment in enumerate(segments) if index]
    return parts


def with_params(name: str, value: str, params: Sequence[tuple[str, str]]) -> str:
    """Render ``Name: value; key="..."`` (Content-Type, Content-Disposition), ending in CRLF.

    Short printable ASCII parameter values are quoted (``filename="a b.pdf"``); anything else is
    written per RFC 2231 as UTF-8 percent-encoding, split into numbered continuations when long
    (``filename*0*=utf-8''%C3%A4...; filename*1*=...``), so non-ASCII file names survive.
    """
    pieces = [value]
    for key, param in params:
        for part in _param_parts(key, param):
            pieces[-1] += ";"
            pieces.append(part)
    return fold(name, pieces)


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` after checking every name and value (raises :class:`HeaderError`)."""
    if not isinstance(headers, Mapping):
        raise HeaderError(f"headers must be a mapping of name to value, not {type(headers)}")
    seen: set[str] = set()
    for name, value in headers.items():
        lowered = check_name(name).lower()
        if lowered in _FIELD_HEADERS:
            raise HeaderError(
                f"header {name!r} is set through the {_FIELD_HEADERS[lowered]!r} field, "
                "not through headers"
            )
        if lowered in _MIME_HEADERS:
            raise HeaderError(f"header {name!r} is written by postroom and cannot be set")
        if lowered in BLIND_HEADERS:
            raise HeaderError(
                f"header {name!r} would show blind recipients to everyone: use the bcc field"
            )
        if lowered in seen:
            raise HeaderError(f"header {name!r} is given twice (names ignore case)")
        seen.add(lowered)
        check_value(f"header {name!r}", value)
    return dict(headers)


def check_message_id(value: str) -> str:
    """``value`` in angle brackets, or :class:`HeaderError` when it cannot be a Message-ID."""
    bare = check_value("message_id", value).strip()
    wrapped = bare if bare.startswith("<") else f"<{bare}>"
    if not _MESSAGE_ID.match(wrapped):
        raise HeaderError(f"message_id {value!r} must look like <unique@domain>")
    return wrapped
