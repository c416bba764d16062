# -*- test-case-name: tests.test_binary_client -*-
"""A Twisted client for SPB/1: pipelined requests on one connection, and a bounded pool.

A pool, for an application that makes requests from many places::

    from twisted.internet.endpoints import clientFromString
    from sockproto.binary.client import SPBPool, NotFound

    async def main(reactor):
        pool = SPBPool(clientFromString(reactor, "tcp:localhost:9000"), size=4)
        await pool.create(b"greeting", b"hello")
        value = await pool.read(b"greeting")        # b"hello"
        keys = await pool.list(b"greet")            # [b"greeting"]
        try:
            await pool.read(b"missing")
        except NotFound:
            ...
        await pool.close()

One connection, pipelining (every request goes out at once; replies come
back in order)::

    from twisted.internet.endpoints import connectProtocol

    proto = await connectProtocol(endpoint, SPBClientProtocol())
    results = await defer.gatherResults([proto.read(b"k%d" % i) for i in range(100)])

Every method returns a Deferred (``await`` it inside ``ensureDeferred``).
Failures are :class:`SPBError` subclasses: :class:`NotFound`, :class:`Exists`, ...
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.internet import defer, error
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver

from sockproto.binary.codec import (
    DEFAULT_MAX_FRAME,
    MIN_LENGTH,
    OP_ID,
    REPLY,
    Code,
    Op,
    encodeKey,
    frame,
    parseError,
    parseKeyList,
)


class SPBError(Exception):
    """An error reply: ``code`` and the server's message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{_codeName(code)}: {message}")
        self.code = code
        self.message = message


class NotFound(SPBError):
    """The server answered NOT_FOUND: no such key."""


class Exists(SPBError):
    """The server answered EXISTS: a CREATE of a key that is there."""


class ConnectionClosed(SPBError):
    """The connection ended before the reply came."""


_ERRORS: dict[int, type[SPBError]] = {Code.NOT_FOUND: NotFound, Code.EXISTS: Exists}


def _codeName(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


def _key(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


class SPBClientProtocol(Int32StringReceiver):
    """
    One SPB/1 connection; requests may be sent without waiting for replies.

    Each op method sends one request and returns a Deferred of its result;
    a server error fails it with an :class:`SPBError` (:class:`NotFound`,
    :class:`Exists`...), a lost connection with :class:`ConnectionClosed`.
    """
    transport: Any  # connected: never None while the protocol runs

    MAX_LENGTH = DEFAULT_MAX_FRAME

    def __init__(self) -> None:
        self._nextId = 1
        self._waiting: dict[int, tuple[int, defer.Deferred[Any]]] = {}
        self.connected = False
        self._closedWaiters: list[defer.Deferred[None]] = []

    def connectionMade(self) -> None:
        self.connected = True

    def whenClosed(self) -> defer.Deferred[None]:
        if not self.connected:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._closedWaiters.append(d)
        return d

    def request(self, op: int, payload: bytes = b"") -> defer.Deferred[Any]:
        if not self.connected:
            return defer.fail(ConnectionClosed(Code.SERVER_ERROR, "not connected"))
        requestId = self._nextId
        self._nextId = (self._nextId % 0xFFFFFFFF) + 1
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting[requestId] = (op, d)
        self.transport.write(frame(op, requestId, payload))
        return d

    def stringReceived(self, body: bytes) -> None:
        if len(body) < MIN_LENGTH:
            self.transport.loseConnection()
            return
        op, requestId = OP_ID.unpack_from(body)
        payload = body[MIN_LENGTH:]
        pending = self._waiting.pop(requestId, None)
        if pending is None:
            if op == Op.ERROR and requestId == 0:
                code, message = parseError(payload)
                self._failAll(SPBError(code, message))
                self.transport.loseConnection()
            return
        requestOp, d = pending
        if op == Op.ERROR:
            code, message = parseError(payload)
            d.errback(_ERRORS.get(code, SPBError)(code, message))
        elif op != requestOp | REPLY:
            d.errback(SPBError(Code.SERVER_ERROR, f"reply op 0x{op:02x} to request op 0x{requestOp:02x}"))
        else:
            d.callback(payload)

    def lengthLimitExceeded(self, length: int) -> None:
        self._failAll(SPBError(Code.TOO_LARGE, f"reply of {length} bytes is too large"))
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False
        self._failAll(ConnectionClosed(Code.SERVER_ERROR, "the connection closed"))
        waiters, self._closedWaiters = self._closedWaiters, []
        for d in waiters:
            d.callback(None)

    def _failAll(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for _, d in waiting.values():
            d.errback(exc)

    @property
    def busy(self) -> int:
        return len(self._waiting)

    # -- the ops ------------------------------------------------------------------

    def ping(self) -> defer.Deferred[None]:
        """Fires when the server answers."""
        return self.request(Op.PING).addCallback(lambda _: None)

    def echo(self, data: bytes) -> defer.Deferred[bytes]:
        """``data``, back from the server."""
        return self.request(Op.ECHO, data)

    def create(self, key: bytes | str, value: bytes) -> defer.Deferred[None]:
        """Store a new key once it is durable; :class:`Exists` if it is there already."""
        return self.request(Op.CREATE, encodeKey(_key(key)) + value).addCallback(lambda _: None)

    def read(self, key: bytes | str) -> defer.Deferred[bytes]:
        """The value of ``key``; :class:`NotFound` if it is not there."""
        return self.request(Op.READ, encodeKey(_key(key)))

    def update(self, key: bytes | str, value: bytes) -> defer.Deferred[None]:
        """Replace the value of an existing key; :class:`NotFound` if it is not there."""
        return self.request(Op.UPDATE, encodeKey(_key(key)) + value).addCallback(lambda _: None)

    def delete(self, key: bytes | str) -> defer.Deferred[None]:
        """Remove ``key``; :class:`NotFound` if it is not there."""
        return self.request(Op.DELETE, encodeKey(_key(key))).addCallback(lambda _: None)

    def list(self, prefix: bytes | str = b"") -> defer.Deferred[list[bytes]]:
        """The keys starting with ``prefix``, in byte order (``b""``: every key)."""
        return self.request(Op.LIST, encodeKey(_key(prefix))).addCallback(parseKeyList)

    def stats(self) -> defer.Deferred[dict[str, Any]]:
        """The server's counters: uptime, connections, keys, operations, bytes, the store's."""
        return self.request(Op.STATS).addCallback(lambda payload: json.loads(payload))


class SPBPool:
    """
    At most ``size`` connections to one endpoint.

    A request takes an idle connection or opens a new one while under the
    limit, or waits for one to come back.  A connection that breaks is
    dropped and replaced by a new one on a later request, never reused.
    It has the op methods of :class:`SPBClientProtocol`::

        pool = SPBPool(clientFromString(reactor, "unix:/run/kv.sock"), size=8)
        await pool.update(b"counter", b"42")
    """

    def __init__(self, endpoint: Any, size: int = 4) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self.endpoint = endpoint
        self.size = size
        self.idle: list[SPBClientProtocol] = []
        self.opened = 0  # connections open or being opened
        self.created = 0
        self._waiters: deque[defer.Deferred[SPBClientProtocol]] = deque()
        self._all: set[SPBClientProtocol] = set()

    async def _acquire(self) -> SPBClientProtocol:
        while self.idle:
            proto = self.idle.pop()
            if proto.connected:
                return proto
            self._discard(proto)  # broken while idle: never reused
        if self.opened < self.size:
            self.opened += 1
            try:
                proto = await self.endpoint.connect(Factory.forProtocol(SPBClientProtocol))
            except BaseException:
                self.opened -= 1
                self._wakeOne()
                raise
            self.created += 1
            self._all.add(proto)
            return proto
        waiter: defer.Deferred[SPBClientProtocol] = defer.Deferred()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, proto: SPBClientProtocol) -> None:
        if not proto.connected:
            self._discard(proto)
            return
        if self._waiters:
            self._waiters.popleft().callback(proto)
        else:
            self.idle.append(proto)

    def _discard(self, proto: SPBClientProtocol) -> None:
        if proto in self._all:
            self._all.discard(proto)
            self.opened -= 1
        self._wakeOne()

    def _wakeOne(self) -> None:
        # A place freed up: let a waiter open a new connection.
        if self._waiters and self.opened < self.size:
            waiter = self._waiters.popleft()
            defer.ensureDeferred(self._acquire()).chainDeferred(waiter)

    def run(self, method: str, *args: Any) -> defer.Deferred[Any]:
        """Call ``SPBClientProtocol.<method>(*args)`` on a pooled connection."""

        async def go() -> Any:
            proto = await self._acquire()
            try:
                return await getattr(proto, method)(*args)
            finally:
                self._release(proto)

        return defer.ensureDeferred(go())

    def ping(self) -> defer.Deferred[None]:
        return self.run("ping")

    def echo(self, data: bytes) -> defer.Deferred[bytes]:
        return self.run("echo", data)

    def create(self, key: bytes | str, value: bytes) -> defer.Deferred[None]:
        return self.run("create", key, value)

    def read(self, key: bytes | str) -> defer.Deferred[bytes]:
        return self.run("read", key)

    def update(self, key: bytes | str, value: bytes) -> defer.Deferred[None]:
        return self.run("update", key, value)

    def delete(self, key: bytes | str) -> defer.Deferred[None]:
        return self.run("delete", key)

    def list(self, prefix: bytes | str = b"") -> defer.Deferred[list[bytes]]:
        return self.run("list", prefix)

    def stats(self) -> defer.Deferred[dict[str, Any]]:
        return self.run("stats")

    def close(self) -> defer.Deferred[None]:
        """Close every connection."""
        closing = []
        for proto in list(self._all):
            if proto.connected and proto.transport is not None:
                closing.append(proto.whenClosed())
                proto.transport.loseConnection()
        for waiter in self._waiters:
            waiter.errback(error.ConnectionDone("the pool is closed"))
        self._waiters.clear()
        self.idle.clear()
        return defer.gatherResults(closing).addCallback(lambda _: None)
