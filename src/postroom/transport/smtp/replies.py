"""Reading SMTP replies strictly (RFC 5321 4.2).

A reply is one or more lines ``code-text`` ending with a line ``code text`` (or ``code``
alone). Anything else is a protocol error, and so is a multi-line reply whose lines disagree on
the code: after either, nothing later on that connection can be trusted to answer the command
it seems to answer, so the connection is closed. Line endings may be CRLF or a bare LF.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from postroom.transport.base import Reply

__all__ = ["MAX_LINE", "Answer", "ProtocolError", "take_answer"]

MAX_LINE = 4096
"""Longest reply line accepted (RFC 5321 allows 512 octets; some servers send more)."""

_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s*")


class ProtocolError(Exception):
    """The server said something that is not a reply, or not a reply to the command asked."""


class Answer(NamedTuple):
    """One complete reply as read: its code and the text of each line (a tuple: one is made
    for every reply)."""

    code: int
    lines: tuple[str, ...]

    def reply(self, context: str = "") -> Reply:
        """The :class:`Reply`, the enhanced code taken off the first line, ``context`` in front."""
        if len(self.lines) == 1 and not context:
            return _one_line_reply(self.code, self.lines[0])
        first = Reply.parse(self.code, self.lines[0] if self.lines else "")
        rest = [_ENHANCED.sub("", line) if first.enhanced else line for line in self.lines[1:]]
        text = " ".join([first.text, *rest]).strip()
        if context:
            text = f"{context}: {text}" if text else context
        return Reply(self.code, " ".join(text.split()), first.enhanced)


@functools.lru_cache(maxsize=512)
def _one_line_reply(code: int, text: str) -> Reply:
    """Servers repeat the same few replies: each is parsed once (a Reply is immutable)."""
    return Reply.parse(code, text)


def take_answer(buffer: bytearray) -> Answer | None:
    """Take the first complete reply off ``buffer``; ``None`` while it is still incomplete.

    Raises :class:`ProtocolError` as soon as a line is malformed, too long, or disagrees with
    the code of the lines before it.
    """
    single = _single_line(buffer)
    if single is not None:
        return single
    start, code = 0, 0
    lines: list[str] = []
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) - start > MAX_LINE:
                raise ProtocolError(f"reply line longer than {MAX_LINE} octets")
            return None
        line = bytes(buffer[start:end]).rstrip(b"\r")
        start = end + 1
        match = _LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(f"malformed reply line {_shown(line)}")
        line_code = int(match.group(1))
        if lines and line_code != code:
            raise ProtocolError(f"reply lines with different codes ({code}, then {line_code})")
        code = line_code
        lines.append((match.group(3) or b"").decode("utf-8", "replace"))
        if match.group(2) != b"-":
            del buffer[:start]
            return Answer(code, tuple(lines))


def _single_line(buffer: bytearray) -> Answer | None:
    """The common case taken fast: a complete one-line reply ``NNN text`` at the front."""
    end = buffer.find(b"\n")
    if end < 4 or buffer[3] != 0x20 or not 0x32 <= buffer[0] <= 0x35:
        return None
    head = bytes(buffer[:3])
    if not head.isdigit():
        return None
    text = bytes(buffer[4:end]).rstrip(b"\r").decode("utf-8", "replace")
    del buffer[: end + 1]
    return Answer(int(head), (text,))


def _shown(line: bytes) -> str:
    text = line[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(line) > 80 else "")
