# -*- test-case-name: tests.test_listen -*-
"""The TCP proxy: ``twistd -n sockproto-proxy --listen ENDPOINT --connect ENDPOINT``.

Each accepted connection is relayed both ways to a new connection to the
target.  Each side is the other's producer, so a slow reader on one side
slows the writer on the other and memory stays bounded; a half-close passes
through.  Both sides are endpoint strings, so it also bridges UNIX to TCP and
terminates or originates TLS.

TLS cannot half-close in Twisted: when one end half-closes, a TLS connection
at the other end stays open until its peer has been quiet for ``--linger``
seconds (the replies to the last request still come back), then closes.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application import service
from twisted.internet import interfaces, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from sockproto.interfaces import IServerReactor
from sockproto.server.connections import ServerFactory, ServerProtocol, setSocketOptions
from sockproto.server.endpointstrings import endpointErrorText
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.options import ServerOptions, nonNegativeFloat
from sockproto.server.targets import TLSSettings, canHalfClose, clientTarget, halfClose

log = Logger()


@implementer(interfaces.IHalfCloseableProtocol)
class _Side:
    """What both ends share: pass data to the peer, pass closes on."""

    transport: Any
    other: Any = None  # the protocol at the other end
    readClosed = False
    writeClosed = False
    #: Seconds of quiet from this side's peer before a TLS connection is closed in place of a half-close ...
    linger = 2.0
    clock: IReactorTime
    #: ... and the call that closes it then (None: not lingering).
    lingering: Any = None

    def relay(self, data: bytes) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)

    def readConnectionLost(self) -> None:
        # This side will send no more: tell the other side the same.
        self.readClosed = True
        if self.other is not None and self.other.transport is not None:
            self.other.endOfInput()
        if self.writeClosed:
            self.transport.loseConnection()

    def endOfInput(self) -> None:
        """
        Nothing more will be written here: half-close where the transport can;
        TLS cannot, so it closes once its peer has been quiet for ``linger``
        seconds: what it still says (the answer to the last request) is relayed.
        """
        if canHalfClose(self.transport) or self.linger <= 0:
            halfClose(self.transport)
        elif self.lingering is None:
            self.lingering = self.clock.callLater(self.linger, self.lingerEnded)

    def stillTalking(self) -> None:
        """This side's peer sent something: its quiet starts again."""
        if self.lingering is not None:
            self.lingering.reset(self.linger)

    def lingerEnded(self) -> None:
        self.lingering = None
        if self.transport is not None:
            halfClose(self.transport)

    def writeConnectionLost(self) -> None:
        self.writeClosed = True
        if self.readClosed:
            self.transport.loseConnection()

    def link(self, other: Any) -> None:
        """Pair with the other side: each is the other's producer (back-pressure both ways)."""
        self.other = other
        other.other = self
        self.transport.registerProducer(other.transport, True)
        other.transport.registerProducer(self.transport, True)

    def unlink(self) -> None:
        if self.lingering is not None and self.lingering.active():
            self.lingering.cancel()
        self.lingering = None
        other, self.other = self.other, None
        if other is None:
            return
        other.other = None
        for transport in (self.transport, other.transport):
            if transport is not None and getattr(transport, "producer", True) is not None:
                try:
                    transport.unregisterProducer()
                except Exception:
                    pass
        other.transport.loseConnection()


class _TargetSide(_Side, protocol.Protocol):
    transport: Any  # connected: never None while the protocol runs
    def connectionMade(self) -> None:
        # Relayed bytes go out as they come; Nagle would hold them for ACKs.
        setSocketOptions(self.transport, noDelay=True)

    def dataReceived(self, data: bytes) -> None:
        other = self.other
        if other is not None:
            other.traffic.bytesOut += len(data)
        if self.lingering is not None:
            self.stillTalking()
        self.relay(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.unlink()


class ProxySide(_Side, ServerProtocol):
    """The accepted connection."""

    factory: ProxyFactory

    def connectionMade(self) -> None:
        ServerProtocol.connectionMade(self)
        # Nothing is read from the client until there is somewhere to send it.
        self.transport.pauseProducing()
        d = self.factory.target.endpoint.connect(self.factory.targetFactory)
        d.addCallbacks(self.targetConnected, self.targetFailed)

    def targetConnected(self, target: _TargetSide) -> None:
        if self.closed:
            target.transport.loseConnection()
            return
        target.clock = self.clock = self.factory.clock
        target.linger = self.linger = self.factory.linger
        self.link(target)
        self.transport.resumeProducing()

    def targetFailed(self, failure: Any) -> None:
        self.factory.errors["target_unreachable"] += 1
        log.warn(
            "proxy cannot reach {target} for {peer}: {why}",
            target=self.factory.targetDescription,
            peer=self.peer,
            why=failure.getErrorMessage(),
        )
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        self.traffic.bytesIn += len(data)
        if self.lingering is not None:
            self.stillTalking()
        self.relay(data)

    def serverStopping(self) -> None:
        # Both ends are closed once what is buffered for them is written.
        self.unlink()
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.unlink()
        ServerProtocol.connectionLost(self, reason)


class ProxyFactory(ServerFactory):
    """The proxy's accepted connections, each relayed to a new connection to the target."""

    serviceName = "proxy"
    protocol = ProxySide
    refusal = b""

    def __init__(
        self, clock: IReactorTime, target: Any, targetDescription: str, linger: float = 2.0, **limits: Any
    ) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.target = target
        #: Seconds a TLS end stays open after the other end half-closed, once its peer is quiet (--linger).
        self.linger = linger
        self.targetDescription = targetDescription
        #: Builds the target side of every connection; quiet (not a line per connection).
        self.targetFactory = protocol.Factory.forProtocol(_TargetSide)
        self.targetFactory.noisy = False


class Options(ServerOptions):
    """``sockproto-proxy``'s options: ``--connect`` and the TLS settings of the target."""

    serviceName = "proxy"
    defaultPort = 8125  # not 8000, the web chat's (make run serves it)
    longdesc = (
        "Relays each accepted connection to --connect, both ways, with back-pressure and half-close. "
        "Bridges UNIX and TCP, and plain and TLS (tls:HOST:PORT verifies the target's certificate)."
    )
    optParameters = [
        ["connect", "c", None, "Where to relay to: a Twisted client endpoint string (tcp:HOST:PORT, "
         "unix:PATH, tls:HOST:PORT). Required."],
        ["ca", None, None, "For a tls: target: the CA file its certificate must chain to (default: the system's)."],
        ["cert", None, None, "For a tls: target: a client certificate to present (mutual TLS)."],
        ["key", None, None, "The private key of --cert (default: in the --cert file)."],
        ["connect-timeout", None, 10.0, "Seconds to wait for the target.", nonNegativeFloat],
        ["linger", None, 2.0, "TLS cannot half-close: when one end half-closes, seconds of quiet from the other "
         "(TLS) end before closing it, so its last replies still come back (0: close at once).", nonNegativeFloat],
    ]

    def postOptions(self) -> None:
        ServerOptions.postOptions(self)
        if not self["connect"]:
            raise usage.UsageError("--connect ENDPOINT is required")
        from twisted.internet.testing import MemoryReactor

        try:
            # A memory reactor: the endpoint is only built, to check the string.
            clientTarget(cast(IServerReactor, MemoryReactor()), self["connect"], self.tlsSettings())
        except Exception as e:
            why = endpointErrorText(e, self["connect"])
            raise usage.UsageError(f"bad --connect {self['connect']!r}: {why}") from None

    def tlsSettings(self) -> TLSSettings:
        return TLSSettings(ca=self["ca"], cert=self["cert"], key=self["key"])


def buildService(options: Options, reactor: IServerReactor | None = None) -> service.IService:
    reactor = defaultReactor(reactor)
    target = clientTarget(reactor, options["connect"], options.tlsSettings(), options["connect-timeout"] or 10.0)
    factory = ProxyFactory(reactor, target, options["connect"], options["linger"], **options.limits())
    return options.listeningService(factory, reactor)


makeService = standalone(buildService)
