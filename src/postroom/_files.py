"""Folders and files for postroom's data, readable by their owner only, whatever the umask.

The queue, the database and the capture mailbox hold message bodies, attachments and Bcc lists,
so every folder postroom creates for them is ``0700`` and every file ``0600``. The mode is given
at creation (the umask can only take bits away, so a file is never more open than that, not
even for a moment) and then set exactly, so that a strict umask cannot lock the owner out.

Only what postroom creates is made private: a folder or file that exists already keeps its
permissions, since it may be shared on purpose (the current directory, a folder an operator
prepared for a group).

SQLite creates the ``-wal`` and ``-shm`` files of a database with the permissions of the
database file, so creating the database file with :func:`private_file` before SQLite opens it
makes them private too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_dir", "private_file", "write_private"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` and every missing parent, each ``0700``; return the path.

    Raises ``OSError`` when a folder cannot be created, or ``path`` exists and is no folder.
    """
    folder = Path(path).expanduser()
    missing = []
    current = folder
    while not os.path.lexists(current) and current.parent != current:
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile: it is theirs to set
        os.chmod(new, PRIVATE_DIR_MODE)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    return folder


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as an empty ``0600`` file unless it exists; return the path."""
    file = Path(path).expanduser()
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return file
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return file


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``, created (or truncated) with mode ``0600``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with open(fd, "wb") as file:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        file.write(data)
