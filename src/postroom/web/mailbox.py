"""The dev capture mailbox as the dashboard sees it: the ``.eml`` files of ``serve --dev``.

File names come from :class:`~postroom.transport.capture.CaptureServer` and sort by arrival;
a name asked for by a request is accepted only when it is one of those files (never a path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from postroom.transport.capture import RCPT_TO_HEADER

__all__ = ["CapturedMail", "Mailbox"]

_NAME = re.compile(r"(\d{8}T\d{12}Z)-\d{6}-[0-9a-f]{8}\.eml")


@dataclass(frozen=True, slots=True)
class CapturedMail:
    """One captured message, as listed: file name, arrival time, envelope and headers."""

    name: str
    received_at: datetime
    size: int
    recipients: str
    sender: str
    subject: str


class Mailbox:
    """The ``.eml`` files in ``folder``, newest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def list(self, limit: int = 500) -> list[CapturedMail]:
        """The newest ``limit`` captured messages, newest first."""
        if not self.folder.is_dir():
            return []
        names = sorted(p.name for p in self.folder.iterdir() if _NAME.fullmatch(p.name))
        return [self._summary(name) for name in reversed(names[-limit:])]

    def count(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(1 for p in self.folder.iterdir() if _NAME.fullmatch(p.name))

    def read(self, name: str) -> bytes:
        """The file's bytes as stored (envelope line first); ``KeyError`` for any other name."""
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(name) from None

    def delete_all(self) -> int:
        """Delete every captured message; return how many went."""
        gone = 0
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                if _NAME.fullmatch(path.name):
                    path.unlink(missing_ok=True)
                    gone += 1
        return gone

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise KeyError(name)
        return self.folder / name

    def _summary(self, name: str) -> CapturedMail:
        path = self.folder / name
        try:
            with path.open("rb") as file:
                headers = BytesHeaderParser(policy=policy.default).parse(file)
            size = path.stat().st_size
        except FileNotFoundError:  # deleted meanwhile
            headers, size = BytesHeaderParser(policy=policy.default).parsebytes(b""), 0
        stamp = datetime.strptime(name[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        return CapturedMail(
            name=name,
            received_at=stamp,
            size=size,
            recipients=str(headers.get(RCPT_TO_HEADER, "")),
            sender=str(headers.get("From", "")),
            subject=str(headers.get("Subject", "")),
        )
