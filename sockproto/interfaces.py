# -*- test-case-name: tests.test_binary_redisstore -*-
"""What the server machinery looks for in a service, as zope interfaces.

The machinery (:mod:`sockproto.server`) never imports a service; it asks
whether a factory provides one of these, the way ``twisted.words.iwords``
describes what its realm and groups can do.  A service declares what it
does with ``@implementer``.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorProcess,
    IReactorSocket,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
    IReactorUNIX,
)
from zope.interface import Attribute, Interface


class IServerReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorUNIX,
    IReactorUDP,
    IReactorSocket,
    IReactorProcess,
    IReactorThreads,
    IReactorPluggableNameResolver,
):
    """
    The reactor sockproto's services are typed against: what they use of
    Twisted's reactor interfaces, at once (as treq's ``_ITreqReactor`` does
    for its own needs).  Twisted's epoll reactor provides all of these;
    tests inject a ``MemoryReactorClock``, which provides what a test of one
    piece needs.  Nothing declares it: it is for type checking.
    """


class IDrainable(Interface):
    """A factory whose connections can finish what they owe before the process stops."""

    def stopServing(timeout: float) -> Deferred[None]:
        """
        Ask every connection to finish (answer what it has read, say goodbye)
        and close.

        :param timeout: seconds after which connections still open are cut off.
        :return: a Deferred that fires once every connection has closed.
        """


class IReloadable(Interface):
    """A factory that re-reads its files on SIGHUP without dropping connections."""

    def reload() -> list[str]:
        """
        Re-read what can change on disk (a joke book, a password file).

        :return: what was reloaded, for the log (e.g. ``"12 jokes from jokes.txt"``).
        :raises Exception: when a file is broken; the factory keeps what it had.
        """


class IMetricsSource(Interface):
    """A factory whose counters the metrics endpoint reports."""

    traffic = Attribute(
        "transport kind (tcp, unix, tls) -> an object with open, total, bytesIn and bytesOut counts"
    )
    errors = Attribute("error kind (e.g. line_too_long) -> how often, a Counter")

    def metricsSnapshot() -> dict[str, object]:
        """
        Copies of the service's own counters, taken in the reactor thread.

        The keys the metrics endpoint knows (each optional):
          - ``chat``: a dict with messages, deliveries, members, rooms and slowConsumers;
          - ``cluster``: a dict with node, linked, reconnects, published, received,
            dropped and delay (cumulative bucket counts, sum of seconds);
          - ``operations``: request name -> count;
          - ``latency``: request name -> (cumulative bucket counts, sum of seconds);
          - ``store``: a dict with keys and, for a durable store, commits.
        """


class IKeyValueStore(Interface):
    """
    What the binary and crud protocols need of every store (see
    ``sockproto.binary``): reads and lists answered when the store can
    (at once for a store in this process, after a round trip for one shared
    through Redis), writes acknowledged once durable.
    """

    writeProblem = Attribute(
        "None, or why writes are refused now, in words for the clients (e.g. the disk is full)"
    )

    def fetch(key: bytes, then: Callable[[bytes | None, object], None]) -> None:
        """
        ``then(value, None)`` with the committed value (or None), or
        ``then(None, failure)``: a read without a Deferred, on every read's path.
        """

    def listKeys(prefix: bytes) -> Deferred[list[bytes]]:
        """The committed keys starting with ``prefix``, in byte order."""

    def count() -> Deferred[int]:
        """How many keys are committed."""

    def write(op: int, key: bytes, value: bytes, done: Callable[[int | None], None]) -> int | None:
        """
        Accept CREATE, UPDATE or DELETE: return an error code at once if it
        cannot apply (EXISTS, NOT_FOUND), else None and call ``done(code)``
        once it is durable (``None``) or has failed (an error code).
        """

    def stats() -> dict[str, int]:
        """Counters for STATS and the metrics: keys, commits, committed writes..."""


class ILocalKeyValueStore(IKeyValueStore):
    """
    A store whose data set is in this process: what it adds, reads answered
    at once without I/O (the protocols answer them inline, on the hot path).
    """

    def get(key: bytes) -> bytes | None:
        """The committed value, without I/O."""

    def keys(prefix: bytes) -> list[bytes]:
        """Committed keys starting with ``prefix``, in byte order."""

    def __len__() -> int:
        """How many keys are committed."""
