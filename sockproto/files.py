"""Files sockproto creates: owner-only unless they already exist."""

from __future__ import annotations

import os


def createOwnerOnly(path: str) -> None:
    """
    Create ``path`` empty with mode 0600 unless it exists.

    For an SQLite database: SQLite takes an empty file as a new database and
    gives the ``-wal`` and ``-shm`` files it creates the database's mode, so
    chat history and stored values are not readable by other users whatever
    the umask.  An existing file keeps the mode its owner gave it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
