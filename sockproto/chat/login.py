"""Chat logins (``--auth``): the realm, several checkers at once, and a throttle on guessing.

The protocol asks the Portal built from these; nothing here knows sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.cred import checkers, error
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer


class IChatUser(Interface):
    """The avatar of a logged-in chat user: its name."""


@implementer(IRealm)
class ChatRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, str, Any]:
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        return (IChatUser, name, lambda: None)


@implementer(checkers.ICredentialsChecker)
class AnyOfCheckers:
    """
    Accepts what any of several checkers accepts, tried in the order given.

    A Portal keeps one checker per credentials interface, so ``--auth memory:...
    --auth hashed:...`` needs this to honour both.
    """

    def __init__(self, checkerList: list[Any]) -> None:
        self.checkers = list(checkerList)
        self.credentialInterfaces = tuple({i for c in self.checkers for i in c.credentialInterfaces})

    @defer.inlineCallbacks
    def requestAvatarId(self, creds: Any) -> Any:
        for checker in self.checkers:
            if not any(i.providedBy(creds) for i in checker.credentialInterfaces):
                continue
            try:
                avatarId = yield defer.maybeDeferred(checker.requestAvatarId, creds)
            except error.UnauthorizedLogin:
                continue
            return avatarId
        raise error.UnauthorizedLogin()


class LoginThrottle:
    """Failed logins per peer host, remembered for a while, to slow guessing down."""

    def __init__(
        self, clock: IReactorTime, memory: int = 10000, forgetAfter: float = 900.0, maxDelay: float = 30.0
    ) -> None:
        self.clock = clock
        self.memory = memory
        self.forgetAfter = forgetAfter
        self.maxDelay = maxDelay
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, host: str) -> float:
        """How long to hold the answer to a failed login from ``host``."""
        count, _ = self._current(host)
        return min(float(2 ** max(count - 1, 0)), self.maxDelay)

    def failed(self, host: str) -> None:
        count, _ = self._current(host)
        self._failures.pop(host, None)
        self._failures[host] = (count + 1, self.clock.seconds())
        while len(self._failures) > self.memory:
            self._failures.popitem(last=False)

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)

    def _current(self, host: str) -> tuple[int, float]:
        count, when = self._failures.get(host, (0, 0.0))
        if count and self.clock.seconds() - when > self.forgetAfter:
            return 0, 0.0
        return count, when
