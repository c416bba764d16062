# -*- test-case-name: tests.test_binary -*-
"""
What the two faces of the key-value store (SPB/1 and crud) share: replies
kept in request order while writes wait for their commit, and the factory
that holds the store and the output limits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from sockproto.interfaces import IKeyValueStore, ILocalKeyValueStore
from sockproto.server.connections import MAX_OUTPUT_BUFFER, SEND_TIMEOUT, ServerFactory

#: Replies are written in pieces of about this size, so that a full
#: transport can pause the connection between them.
FLUSH_BYTES = 1 << 16


class OrderedReplies:
    """
    Keeps a connection's replies in request order while writes wait for their commit.

    Requests that are not writes are answered at once when nothing is
    waiting; behind a waiting write they are evaluated when they reach the
    front, so they see every earlier write of the connection.  While
    ``blocked`` (the peer is not taking its replies) nothing more is taken
    off the queue; :meth:`flush` goes on once it is unblocked.
    """

    __slots__ = ("queue", "send", "onEmpty", "blocked")

    def __init__(self, send: Any) -> None:
        self.queue: deque[list[Any]] = deque()  # [ready bytes] or [None] or [callable]
        self.send = send
        self.onEmpty: Any = None
        self.blocked = False

    def answer(self, compute: Any) -> None:
        """A reply computed now, or when its turn comes."""
        if self.queue:
            self.queue.append([compute])
        else:
            self.send(compute())

    def ready(self, data: bytes) -> None:
        if self.queue:
            self.queue.append([data])
        else:
            self.send(data)

    def whenAnswered(self, then: Callable[[], None]) -> None:
        """Call ``then`` once every reply owed is written (now, if none is)."""
        if self.queue:
            self.onEmpty = then
        else:
            then()

    def slot(self) -> list[Any]:
        entry: list[Any] = [None]
        self.queue.append(entry)
        return entry

    def fill(self, entry: list[Any], data: bytes) -> None:
        entry[0] = data
        if self.queue[0] is entry:
            self.flush()

    def flush(self) -> None:
        """Write the replies at the front that are ready, in pieces, until one is not or the peer is blocked."""
        queue = self.queue
        if len(queue) == 1 and not self.blocked:
            # One reply owed, the usual case: without the loop and the join.
            value = queue[0][0]
            if value is None:
                return
            queue.popleft()
            self.send(value if value.__class__ is bytes else value())
            if self.onEmpty is not None:
                self.onEmpty()
            return
        out: list[bytes] = []
        size = 0
        while queue and not self.blocked:
            value = queue[0][0]
            if value is None:
                break
            queue.popleft()
            if value.__class__ is not bytes:
                value = value()
            out.append(value)
            size += len(value)
            if size >= FLUSH_BYTES:
                self.send(b"".join(out))  # may block: the loop stops there
                out, size = [], 0
        if out:
            self.send(b"".join(out))
        if not queue and self.onEmpty is not None:
            self.onEmpty()


class StoreFactory(ServerFactory):
    """What binary and crud share: the store, and how much a connection may owe (see produceReplies)."""

    protocol: Any = None  # as on ServerFactory: mypy asks again on each level of subclass

    def __init__(
        self,
        clock: IReactorTime,
        store: IKeyValueStore,
        maxOutputBuffer: int = MAX_OUTPUT_BUFFER,
        sendTimeout: float = SEND_TIMEOUT,
        **limits: Any,
    ) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.store = store
        #: The store if its reads are answered at once, inline (an ILocalKeyValueStore); None if they are
        #: asked of Redis.
        self.localStore: ILocalKeyValueStore | None = ILocalKeyValueStore(store, None)
        self.storeIsLocal = self.localStore is not None
        self.maxOutputBuffer = maxOutputBuffer
        self.sendTimeout = sendTimeout

    def metricsSnapshot(self) -> dict[str, Any]:
        return {"store": self.store.stats()}
