# -*- test-case-name: tests.test_chat,tests.test_chat_cluster,tests.test_chat_irc -*-
"""Chat logins (``--auth``): the realm, several checkers at once, and the gate against guessing.

Every face of the chat (the line chat's ``/login``, the web chat's login,
and any later one such as IRC's PASS) asks the one :class:`LoginGate`,
which decides whether a password is checked at all before it asks the
Portal.  Nothing here knows sockets.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from typing import Any

from twisted.cred import checkers, error
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

log = Logger()

#: Password checks run at once, at most (each hashed one is an scrypt on a worker thread).
MAX_CHECKS = 4
#: Logins that may wait for a check to be free; past them, a refusal.
MAX_WAITING = 32
#: Seconds between two log lines about logins refused for want of room.
BUSY_LOG_INTERVAL = 60.0


class IChatUser(Interface):
    """The avatar of a logged-in chat user: its name."""


@implementer(IRealm)
class ChatRealm:
    """The chat's realm: a logged-in user's avatar is its name."""

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


class LoginRefused(Exception):
    """A login not even checked (its host is backing off, or too many are being checked): why, for the user."""


def hostKey(host: str) -> str:
    """
    Whom a failed login counts against: the IPv4 address, or the IPv6 /64
    (one host usually has a whole /64 to pick from).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """
    Failed logins per peer host, remembered for a while, to slow guessing
    down: after the Nth failure the host must wait 2**(N-1) seconds (at
    most ``maxDelay``) before its next password is checked.  The count is
    forgotten ``forgetAfter`` seconds after the last failure, not by a
    success.
    """

    def __init__(
        self, clock: IReactorTime, memory: int = 10000, forgetAfter: float = 900.0, maxDelay: float = 30.0
    ) -> None:
        self.clock = clock
        self.memory = memory
        self.forgetAfter = forgetAfter
        self.maxDelay = maxDelay
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def retryAfter(self, host: str) -> float:
        """Seconds until ``host`` may have a password checked again (0: now)."""
        count, when = self._current(host)
        if not count:
            return 0.0
        backoff = min(2.0 ** min(count - 1, 32), self.maxDelay)  # a long siege must not overflow a float
        return max(0.0, when + backoff - self.clock.seconds())

    def failed(self, host: str) -> None:
        count, _ = self._current(host)
        self._failures.pop(host, None)
        self._failures[host] = (count + 1, self.clock.seconds())
        while len(self._failures) > self.memory:
            self._failures.popitem(last=False)

    def _current(self, host: str) -> tuple[int, float]:
        count, when = self._failures.get(host, (0, 0.0))
        if count and self.clock.seconds() - when > self.forgetAfter:
            return 0, 0.0
        return count, when


class LoginGate:
    """
    Decides whether a password is checked at all, then has the Portal check it.

    - A host backing off after failed logins (see :class:`LoginThrottle`)
      is refused at once, its password unchecked, on whichever connection
      or face it tries; the wait is per host, so reconnecting does not
      shorten it.
    - A host has one password checked at a time: guesses sent in parallel
      are refused, not checked together before the first failure counts.
    - At most ``maxChecks`` checks run at once (hashed passwords cost an
      scrypt each on the reactor's worker threads) and ``maxWaiting`` wait
      for a turn; past that, a refusal, so a crowd of guessers cannot take
      every worker thread.
    """

    def __init__(
        self,
        portal: Portal,
        clock: IReactorTime,
        throttle: LoginThrottle | None = None,
        maxChecks: int = MAX_CHECKS,
        maxWaiting: int = MAX_WAITING,
    ) -> None:
        self.portal = portal
        self.clock = clock
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self.maxChecks = maxChecks
        self.maxWaiting = maxWaiting
        self.running = 0
        #: Hosts with a login waiting or being checked.
        self.hosts: set[str] = set()
        self._waiting: deque[tuple[defer.Deferred[Any], str, Any, tuple[Any, ...]]] = deque()
        self._busyRefusals = 0
        self._busyLoggedAt: float | None = None

    def login(self, host: str, creds: Any, *interfaces: Any) -> defer.Deferred[Any]:
        """
        Check ``creds`` from ``host`` (a peer address) with the Portal.

        Fires with the Portal's ``(interface, avatar, logout)``; fails with
        :class:`LoginRefused` when the password was not checked, or with
        the Portal's ``UnauthorizedLogin`` when it was wrong (then
        :meth:`retryAfter` says how long the host now waits).  Cancelling
        the result (the client went away) before its turn means its
        password is never checked.
        """
        key = hostKey(host)
        wait = self.throttle.retryAfter(key)
        if wait > 0:
            why = f"too many failed logins from your address: try again in {math.ceil(wait)} s"
            return defer.fail(LoginRefused(why))
        if key in self.hosts:
            return defer.fail(LoginRefused("a login from your address is being checked: try again in a moment"))
        if self.running >= self.maxChecks and len(self._waiting) >= self.maxWaiting:
            self._noteBusy()
            return defer.fail(LoginRefused("too many login attempts at once: try again later"))
        self.hosts.add(key)

        def cancel(d: defer.Deferred[Any]) -> None:
            for queued in self._waiting:
                if queued[0] is d:
                    self._waiting.remove(queued)
                    self.hosts.discard(key)
                    break

        d: defer.Deferred[Any] = defer.Deferred(cancel)
        self._waiting.append((d, key, creds, interfaces))
        self._next()
        return d

    def retryAfter(self, host: str) -> float:
        """Seconds until a login from ``host`` is checked again (0: at once)."""
        return self.throttle.retryAfter(hostKey(host))

    def _next(self) -> None:
        while self._waiting and self.running < self.maxChecks:
            d, key, creds, interfaces = self._waiting.popleft()
            self.running += 1
            checked = defer.maybeDeferred(self.portal.login, creds, None, *interfaces)
            checked.addBoth(self._checked, key, d)

    def _checked(self, result: Any, key: str, d: defer.Deferred[Any]) -> None:
        self.running -= 1
        self.hosts.discard(key)
        # A success does not wipe the host's failures: an account of one's own
        # would otherwise reset the backoff between guesses at another's.
        if isinstance(result, Failure) and result.check(error.UnauthorizedLogin, error.UnhandledCredentials):
            self.throttle.failed(key)
        if not d.called:  # else cancelled: the client went away while its password was checked
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        self._next()

    def _noteBusy(self) -> None:
        self._busyRefusals += 1
        now = self.clock.seconds()
        if self._busyLoggedAt is None or now - self._busyLoggedAt >= BUSY_LOG_INTERVAL:
            log.warn(
                "chat refused {count} logins: {checks} being checked and {waiting} waiting already",
                count=self._busyRefusals, checks=self.running, waiting=len(self._waiting),
            )
            self._busyLoggedAt = now
            self._busyRefusals = 0
