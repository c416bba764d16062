# -*- test-case-name: tests.test_connections,tests.test_cli_e2e -*-
"""What every sockproto server connection has: limits, idle timeout, logging, back-pressure."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from twisted.internet import defer, interfaces, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.interfaces import IDrainable, IMetricsSource
from sockproto.privateapi import eagerWriter, unsentBytes
from sockproto.server.endpointstrings import describeAddress
from sockproto.server.ratelimit import Episodes
from sockproto.server.tls import logHandshakeFailure

log = Logger()

#: Seconds a closing connection may take to flush before it is cut.
CLOSE_GRACE = 10.0
#: Seconds a TLS client has to finish its handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Default of ``--max-output-buffer`` for request/response services.
MAX_OUTPUT_BUFFER = 4 << 20
#: Default of ``--send-timeout``.
SEND_TIMEOUT = 60.0


def peerName(transport: Any) -> str:
    """A printable peer address for logs: ``tcp:127.0.0.1:53422``, ``unix:(unnamed)``."""
    try:
        address = transport.getPeer()
    except Exception:
        return "unknown"
    kind = getattr(address, "type", None) or "unix"
    return describeAddress(str(kind).lower(), address)


def setSocketOptions(transport: Any, noDelay: bool = False, keepAlive: bool = False) -> None:
    """TCP_NODELAY and SO_KEEPALIVE where the transport is TCP (also under TLS); a no-op elsewhere."""
    for wanted, setter in ((noDelay, "setTcpNoDelay"), (keepAlive, "setTcpKeepAlive")):
        if wanted and hasattr(transport, setter):
            try:
                getattr(transport, setter)(1)
            except (OSError, AttributeError):
                pass  # a UNIX socket or a transport without the option


def addressKey(address: Any) -> str | None:
    """
    What ``--max-connections-per-ip`` counts by: the IPv4 address, or the
    IPv6 /64 network (one host usually has a whole /64 to pick from).  None,
    not counted, for UNIX sockets and loopback addresses: only this machine
    reaches them, and a local proxy or load balancer brings every client
    from one of them.
    """
    host = getattr(address, "host", None)
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def transportKind(transport: Any) -> str:
    """How a connection came in, for metrics: ``tls``, ``tcp`` or ``unix``."""
    if interfaces.ISSLTransport.providedBy(transport):
        return "tls"
    try:
        kind = getattr(transport.getHost(), "type", None)
    except Exception:
        kind = None
    return str(kind).lower() if kind else "unix"


class Traffic:
    """Connections and bytes of one service over one kind of transport (counted, not timed)."""

    __slots__ = ("open", "total", "bytesIn", "bytesOut")

    def __init__(self) -> None:
        self.open = 0
        self.total = 0
        self.bytesIn = 0
        self.bytesOut = 0


class _Refusal(protocol.Protocol):
    """Says one line and hangs up: the answer past ``--max-connections``."""
    transport: Any  # connected: never None while the protocol runs

    def __init__(self, message: bytes) -> None:
        self.message = message

    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseConnection()


@implementer(IDrainable, IMetricsSource)
class ServerFactory(protocol.ServerFactory):
    """
    Builds a service's protocols, counts them and enforces ``--max-connections``
    and ``--idle-timeout``.

    ``clock`` is injected (tests pass a ``task.Clock``).  Idle connections are
    found by a sweep every quarter of the timeout rather than by one timer per
    connection that every read would have to push back: input only sets a
    flag, so a connection is closed after between 1 and 1.25 times the
    timeout of silence.
    """

    #: The protocol class of the service (Twisted's Factory types it by a
    #: type variable that a subclass cannot bind).
    protocol: Any = None
    serviceName = "server"
    refusal = b"ERROR server busy: too many connections, try again later\r\n"
    noisy = False  # the services log their own start and connections
    idleSweeps = 4

    def __init__(
        self,
        clock: IReactorTime,
        maxConnections: int = 10000,
        idleTimeout: float = 0.0,
        readTimeout: float = 0.0,
        maxPerAddress: int = 0,
    ) -> None:
        self.clock = clock
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        #: Seconds a started line or frame may take to complete (0: no limit).
        self.readTimeout = readTimeout
        #: Connections one address (an IPv6 /64) may hold at once (0: no limit).
        self.maxPerAddress = maxPerAddress
        self.perAddress: Counter[str] = Counter()
        #: Connections with a line or frame started and not finished.
        self.partial: set[ServerProtocol] = set()
        self._readSweeper: Any = None
        self.connections: set[ServerProtocol] = set()
        #: transport kind -> Traffic, read by the metrics.
        self.traffic: dict[str, Traffic] = {}
        #: error kind -> how often (e.g. ``line_too_long``), read by the metrics.
        self.errors: Counter[str] = Counter()
        #: When failed TLS handshakes were last logged, by cause.
        self.handshakeFailures = Episodes()
        self._drained: defer.Deferred[None] | None = None
        self._sweeper: Any = None

    @property
    def totalConnections(self) -> int:
        return sum(traffic.total for traffic in self.traffic.values())

    def trafficFor(self, kind: str) -> Traffic:
        traffic = self.traffic.get(kind)
        if traffic is None:
            traffic = self.traffic[kind] = Traffic()
        return traffic

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.connections) >= self.maxConnections:
            self.errors["refused"] += 1
            log.warn(
                "{service} refused a connection: {limit} already open",
                service=self.serviceName,
                limit=self.maxConnections,
            )
            return self._refuse()
        key = addressKey(addr) if self.maxPerAddress else None
        if key is not None:
            if self.perAddress[key] >= self.maxPerAddress:
                self.errors["refused_per_address"] += 1
                log.warn(
                    "{service} refused a connection from {address}: it has {limit} open already",
                    service=self.serviceName,
                    address=key,
                    limit=self.maxPerAddress,
                )
                return self._refuse()
        proto: Any = protocol.ServerFactory.buildProtocol(self, addr)
        if proto is not None:
            proto.addressKey = key  # counted from connectionOpened to connectionClosed
        return proto

    def _refuse(self) -> protocol.Protocol:
        refusal = _Refusal(self.refusal)
        refusal.factory = self
        return refusal

    def connectionOpened(self, proto: ServerProtocol) -> None:
        if proto.addressKey is not None:
            self.perAddress[proto.addressKey] += 1
        self.connections.add(proto)
        traffic = proto.traffic = self.trafficFor(transportKind(proto.transport))
        traffic.open += 1
        traffic.total += 1
        if self.idleTimeout and self._sweeper is None:
            self._scheduleSweep()

    def connectionClosed(self, proto: ServerProtocol) -> None:
        self.partial.discard(proto)
        if proto in self.connections:
            self.connections.discard(proto)
            proto.traffic.open -= 1
            key = proto.addressKey
            if key is not None:
                self.perAddress[key] -= 1
                if self.perAddress[key] <= 0:
                    del self.perAddress[key]
        if not self.connections:
            for sweeper in (self._sweeper, self._readSweeper):
                if sweeper is not None and sweeper.active():
                    sweeper.cancel()
            self._sweeper = self._readSweeper = None
            if self._drained is not None:
                drained, self._drained = self._drained, None
                drained.callback(None)

    def metricsSnapshot(self) -> dict[str, Any]:
        """The service's own counters beyond traffic and errors (none here)."""
        return {}

    def stopServing(self, timeout: float) -> defer.Deferred[None]:
        """
        Graceful shutdown: ask every connection to finish (each protocol's
        :meth:`ServerProtocol.serverStopping`), then wait until all have
        closed; after ``timeout`` seconds the ones left are cut off.
        """
        for proto in list(self.connections):
            proto.serverStopping()
        if not self.connections:
            return defer.succeed(None)
        self._drained = drained = defer.Deferred[None]()
        deadline = self.clock.callLater(timeout, self._abortRemaining, timeout)

        def finished(result: None) -> None:
            if deadline.active():
                deadline.cancel()

        drained.addCallback(finished)
        return drained

    def _abortRemaining(self, timeout: float) -> None:
        log.warn(
            "{service}: {count} connections still open after {timeout} s of shutdown; cutting them off",
            service=self.serviceName,
            count=len(self.connections),
            timeout=timeout,
        )
        for proto in list(self.connections):
            proto.transport.abortConnection()

    def partialStarted(self, proto: ServerProtocol) -> None:
        """``proto`` has the start of a line or frame: it has ``readTimeout`` seconds to finish it."""
        self.partial.add(proto)
        if self._readSweeper is None:
            self._readSweeper = self.clock.callLater(self.readTimeout / 4, self._sweepPartial)

    def _sweepPartial(self) -> None:
        now = self.clock.seconds()
        for proto in list(self.partial):
            since = proto.partialSince
            if since is None:
                self.partial.discard(proto)
            elif now - since >= self.readTimeout and not proto.outputBlocked:
                self.partial.discard(proto)
                proto.cutOff(
                    "read_timeout",
                    "{peer} did not finish a line or frame in {seconds} s",
                    seconds=self.readTimeout,
                )
        self._readSweeper = None
        if self.partial:
            self._readSweeper = self.clock.callLater(self.readTimeout / 4, self._sweepPartial)

    def _scheduleSweep(self) -> None:
        self._sweeper = self.clock.callLater(
            self.idleTimeout / self.idleSweeps, self._sweep
        )

    def _sweep(self) -> None:
        for proto in list(self.connections):
            if proto.heard:
                proto.heard = False
                proto.quietSweeps = 0
            else:
                proto.quietSweeps += 1
                if proto.quietSweeps >= self.idleSweeps:
                    proto.quietSweeps = -(2**31)  # time out once
                    proto.timeoutConnection()
        if self.connections:
            self._scheduleSweep()
        else:
            self._sweeper = None


@implementer(interfaces.IHandshakeListener)
class ServerProtocol(protocol.Protocol):
    """
    Base of every sockproto server protocol.

    Registers with its factory, logs opening and closing with the peer
    address, and is closed after the factory's idle timeout without input.
    Subclasses set ``self.heard = True`` when input arrives (an attribute, not
    a call, because it is on every read's path).  Every service's protocol
    writes its output with ``send(data)``, usually the eager writer of
    :mod:`sockproto.privateapi` or a method around it.
    """

    factory: ServerFactory
    #: Where the peer's connections are counted (None for UNIX sockets).
    addressKey: str | None = None
    #: When the line or frame in progress was started (None: nothing started).
    partialSince: float | None = None
    #: True while the peer owes us a drain (RequestReplyProtocol): not read from.
    outputBlocked = False
    #: A connected stream transport: ITCPTransport (or a UNIX one), IConsumer
    #: and IPushProducer at once, which no single Twisted interface names.
    transport: Any
    traffic: Traffic
    peer = "unknown"
    heard = True
    quietSweeps = 0
    closed = False
    _producing = False
    _handshake: Any = None  # the TLS handshake deadline, while it runs
    _produceAfterHandshake = False

    def connectionMade(self) -> None:
        # Replies are written whole; Nagle would only hold the next one back
        # until the peer's delayed ACK.
        setSocketOptions(self.transport, noDelay=True)
        self.peer = peerName(self.transport)
        self.factory.connectionOpened(self)
        if interfaces.ISSLTransport.providedBy(self.transport):
            # A client that never finishes its handshake is not left holding a connection.
            self._handshake = self.factory.clock.callLater(HANDSHAKE_TIMEOUT, self._handshakeTooSlow)
        # Debug, not info: on a busy server one line per connection drowns the rest.
        log.debug(
            "{service} connection opened from {peer}",
            service=self.factory.serviceName,
            peer=self.peer,
        )

    def noteUnfinished(self, unfinished: bool, progressed: bool) -> None:
        """
        After a chunk: whether a line or frame is begun and not finished, and
        whether one was finished.  One begun starts the ``--read-timeout``
        clock, one finished stops it, and the next one begun starts it again.
        """
        if unfinished:
            if (progressed or self.partialSince is None) and self.factory.readTimeout:
                if self.partialSince is None:
                    self.factory.partialStarted(self)
                self.partialSince = self.factory.clock.seconds()
        elif self.partialSince is not None:
            self.partialSince = None

    def handshakeCompleted(self) -> None:
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None
        if self._produceAfterHandshake:
            self._produceAfterHandshake = False
            self.registerAfterHandshake()

    def registerAfterHandshake(self) -> None:
        """Register the producer that waited for the TLS handshake."""
        self.pauseReadingWhenBlocked()

    def _handshakeTooSlow(self) -> None:
        self._handshake = None
        self.cutOff(
            "tls_handshake_timeout",
            "TLS handshake from {peer} did not finish in {seconds} s",
            seconds=HANDSHAKE_TIMEOUT,
        )

    def cutOff(self, kind: str, why: str, **fields: Any) -> None:
        """Abort the connection, counting it as an error of ``kind`` and logging ``why`` (a format)."""
        self.factory.errors[kind] += 1
        log.info("{service} " + why + "; closing", service=self.factory.serviceName, peer=self.peer, **fields)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
            factory = self.factory
            if logHandshakeFailure(factory.handshakeFailures, factory.clock.seconds(), factory.serviceName,
                                   self.peer, reason):
                factory.errors["tls_handshake_failed"] += 1
        self.closed = True
        self.factory.connectionClosed(self)
        log.debug(
            "{service} connection closed from {peer}: {why}",
            service=self.factory.serviceName,
            peer=self.peer,
            why=reason.getErrorMessage() if reason is not None else "done",
        )

    def timeoutConnection(self) -> None:
        self.factory.errors["idle_timeout"] += 1
        log.info(
            "{service} closing idle connection from {peer}",
            service=self.factory.serviceName,
            peer=self.peer,
        )
        self.idleTimedOut()
        # A peer that does not read would hold a graceful close open forever.
        self.factory.clock.callLater(CLOSE_GRACE, self._abortIfOpen)

    def _abortIfOpen(self) -> None:
        if not self.closed:
            self.transport.abortConnection()

    def idleTimedOut(self) -> None:
        """Say goodbye to an idle peer; by default just close."""
        self.closeConnection()

    def serverStopping(self) -> None:
        """The server is shutting down: finish what is owed and close (by default: flush and close)."""
        self.closeConnection()

    def pauseReadingWhenBlocked(self) -> None:
        """
        Back-pressure for protocols whose output answers their input: while the
        transport's outgoing buffer is full, stop reading from the peer.

        The transport is registered as its own streaming producer: Twisted
        pauses it (stops reading) when the write buffer passes its limit and
        resumes it when the buffer drains.
        """
        transport = self.transport
        if self._handshake is not None:
            # Over TLS, output written before the handshake pauses the producer
            # until the handshake is done, and pausing this one would stop the
            # handshake being read: wait for it.
            self._produceAfterHandshake = True
            return
        if interfaces.IPushProducer.providedBy(transport):
            self.transport.registerProducer(transport, True)
            self._producing = True

    def closeConnection(self) -> None:
        """Flush what is owed, then close (a registered producer would hold it open)."""
        transport = self.transport
        if transport is None:
            return
        if self._producing:
            self._producing = False
            transport.unregisterProducer()
        transport.loseConnection()


@implementer(interfaces.IPushProducer)
class RequestReplyProtocol(ServerProtocol):
    """
    A server protocol whose replies answer requests and may be much larger
    than them; see :meth:`produceReplies`.  The IPushProducer methods are
    called by the transport.
    """

    maxOutputBuffer = MAX_OUTPUT_BUFFER
    sendTimeout = SEND_TIMEOUT
    #: Twisted has said its buffer is past its mark, and has not drained since.
    _overMark = False
    _stalled: Any = None

    def produceReplies(self, maxOutputBuffer: int, sendTimeout: float) -> None:
        """
        Back-pressure for request/response protocols, whose small requests
        may ask for large replies (a READ of a big value, a LIST).

        The protocol writes with :meth:`transmit` and registers itself as its
        transport's streaming producer.  Twisted says "pause" once more than
        its buffer mark (64 KiB, also the size of every read) is unsent; from
        then until the buffer drains, each write checks what is unsent
        (:func:`sockproto.privateapi.unsentBytes`; under TLS, Twisted says
        "pause" only once).  Past ``maxOutputBuffer`` the protocol reads
        nothing and handles nothing it has already read (:meth:`holdInput`);
        when the buffer has drained it goes on (:meth:`releaseInput`).  What
        a connection is owed is so bounded by ``maxOutputBuffer`` plus one
        reply, however many requests a chunk holds.  A connection that stays
        blocked for ``sendTimeout`` seconds (0: no limit) is cut off as a
        slow consumer.
        """
        self.maxOutputBuffer = maxOutputBuffer
        self.sendTimeout = sendTimeout
        self._write = eagerWriter(self.transport, self.traffic)
        if self._handshake is not None:
            self._produceAfterHandshake = True  # see pauseReadingWhenBlocked
            return
        self.registerAfterHandshake()

    def registerAfterHandshake(self) -> None:
        self.transport.registerProducer(self, True)
        self._producing = True

    def transmit(self, data: bytes) -> None:
        """Write ``data`` now (or into the transport's buffer), then see whether the peer owes too much."""
        self._write(data)
        if self._overMark:
            self._checkOwed()

    def pauseProducing(self) -> None:
        self._overMark = True
        self._checkOwed()

    def _checkOwed(self) -> None:
        if self.outputBlocked:
            return
        unsent = unsentBytes(self.transport)
        if unsent is not None and unsent <= self.maxOutputBuffer:
            return  # over Twisted's mark, not ours
        self.outputBlocked = True
        self.transport.pauseProducing()
        self.holdInput()
        if self.sendTimeout and self._stalled is None:
            self._stalled = self.factory.clock.callLater(self.sendTimeout, self._sendTimedOut)

    def resumeProducing(self) -> None:
        self._overMark = False
        if not self.outputBlocked:
            return
        self.outputBlocked = False
        if self._stalled is not None:
            if self._stalled.active():
                self._stalled.cancel()
            self._stalled = None
        self.releaseInput()
        # Handling what was held may have filled the buffer again.
        if not self.outputBlocked and self.transport is not None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        if self._stalled is not None and self._stalled.active():
            self._stalled.cancel()
        self._stalled = None

    def holdInput(self) -> None:
        """The peer is not taking its replies: stop handling requests already read."""

    def releaseInput(self) -> None:
        """The replies were taken: handle the requests held back."""

    def _sendTimedOut(self) -> None:
        self._stalled = None
        self.cutOff(
            "slow_consumer",
            "{peer} took no replies for {seconds} s with over {limit} bytes owed",
            seconds=self.sendTimeout,
            limit=self.maxOutputBuffer,
        )

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.stopProducing()
        ServerProtocol.connectionLost(self, reason)
