# -*- test-case-name: tests.test_binary_store -*-
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


def explainDatabaseError(error: BaseException) -> str:
    """
    Why an SQLite database could not be opened, and what the operator can do.

    Never empty: an exception without text is named by its type.
    """
    text = str(error).strip() or f"{type(error).__name__} while opening it"
    lowered = text.lower()
    if isinstance(error, PermissionError) or "unable to open" in lowered or "readonly" in lowered:
        hint = "check that the file and its folder exist and that this user may read and write them"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        hint = (
            "it is not an SQLite database or it is damaged; restore it from a backup, "
            "or move it (with its -wal and -shm files) aside to start with an empty one"
        )
    elif "locked" in lowered or "busy" in lowered:
        hint = "another process holds it locked; stop that process or try again"
    elif isinstance(error, OSError):
        hint = "check the path and the disk"
    else:
        return text
    return f"{text} ({hint})"
