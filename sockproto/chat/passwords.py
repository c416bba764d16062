# -*- test-case-name: tests.test_chat,tests.test_config,tests.test_suite_e2e -*-
"""A password file with scrypt-hashed passwords, usable as ``--auth hashed:PATH``.

Each line is ``name:scrypt$N$r$p$SALT$HASH`` (base64).  Checking a password
costs tens of milliseconds on purpose, so it runs in a thread, never on the
reactor.  The file is read again when it changes, so users can be added while
the server runs.  ``sockproto passwd FILE NAME`` adds or changes a user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.strcred import ICheckerFactory
from twisted.internet import defer, threads
from twisted.plugin import IPlugin
from zope.interface import implementer

from sockproto.chat import HASHED_AUTH_ARGUMENT, HASHED_AUTH_HELP

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1


class PasswordFileError(ValueError):
    """A password file that cannot be used: the message says which line and why."""


def hashPassword(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verifyPassword(password: str | bytes, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest)
        raw = password if isinstance(password, bytes) else password.encode("utf-8")
        got = hashlib.scrypt(
            raw, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def readPasswordFile(path: str | Path) -> dict[str, str]:
    users: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not stored.startswith(SCHEME + "$"):
            raise PasswordFileError(f"{path}: line {number}: expected NAME:{SCHEME}$... (made by 'sockproto passwd')")
        users[name] = stored
    return users


def setPassword(path: str | Path, name: str, password: str) -> None:
    """Add or change a user, replacing the file atomically; it stays owner-only."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise PasswordFileError(f"bad user name {name!r}")
    path = Path(path)
    users = readPasswordFile(path) if path.exists() else {}
    users[name] = hashPassword(password)
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=".passwd.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write("# sockproto chat users: NAME:scrypt hash. Edit with 'sockproto passwd'.\n")
            for user, stored in users.items():
                f.write(f"{user}:{stored}\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@implementer(ICredentialsChecker)
class HashedPasswordChecker:
    """Checks names and passwords against an scrypt-hashed password file (re-read on SIGHUP)."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def reload(self, force: bool = False) -> bool:
        """Read the file again if it changed (or ``force``); returns whether it did."""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp and not force:
            return False
        self._users = readPasswordFile(self.path)
        self._stamp = stamp
        return True

    @property
    def userCount(self) -> int:
        return len(self._users)

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        try:
            self.reload()
        except (OSError, PasswordFileError):
            pass  # keep the users we had; the error is for whoever edited the file
        name = creds.username.decode("utf-8", "replace")
        stored = self._users.get(name)
        # Spend the same time on unknown names, so they cannot be told apart.
        stored_or_dummy = stored or _DUMMY

        def check() -> bool:
            return verifyPassword(creds.password, stored_or_dummy)

        def decide(ok: bool) -> Any:
            if ok and stored is not None:
                return creds.username
            raise error.UnauthorizedLogin()

        return threads.deferToThread(check).addCallback(decide)


_DUMMY = f"{SCHEME}${N}${R}${P}$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@implementer(ICheckerFactory, IPlugin)
class HashedPasswordCheckerFactory:
    """``--auth hashed:FILE``: the checker factory of the plugin (see twisted/plugins)."""

    authType = "hashed"
    authHelp = HASHED_AUTH_HELP
    argStringFormat = HASHED_AUTH_ARGUMENT
    credentialInterfaces = (credentials.IUsernamePassword,)

    def generateChecker(self, argstring: str) -> HashedPasswordChecker:
        try:
            return HashedPasswordChecker(argstring)
        except FileNotFoundError:
            raise ValueError(f"no password file {argstring!r}") from None
