"""The echo service: ``twistd -n sockproto-echo``.

``--mode raw`` (the default) is RFC 862 echo: every byte back, unchanged and in
order.  ``--mode line`` greets and answers each line ``Echo: <line>``;
``--mode upper`` answers each line in upper case.  UDP endpoints echo each
datagram to its sender.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python import usage

from sockproto.privateapi import eagerWriter
from sockproto.server.connections import ServerFactory, ServerProtocol
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.lines import LineServerProtocol
from sockproto.server.listen import ServerOptions, positiveInt

MODES = ("raw", "line", "upper")
WELCOME = b"Welcome to echo server!\n"
TOO_LONG_REPLY = b"ERROR line too long: discarded\n"


class RawEcho(ServerProtocol):
    """Every byte back as it came (RFC 862), with back-pressure."""

    def connectionMade(self) -> None:
        ServerProtocol.connectionMade(self)
        self.pauseReadingWhenBlocked()
        self.send = eagerWriter(self.transport, self.traffic)

    def dataReceived(self, data: bytes) -> None:
        self.heard = True
        self.traffic.bytesIn += len(data)
        self.send(data)


class LineEcho(LineServerProtocol):
    factory: EchoFactory

    """Answers each line; ``line`` mode with ``Echo: `` and a greeting, ``upper`` in upper case."""

    upper = False

    def connectionMade(self) -> None:
        self.maxLineLength = self.factory.maxLineLength
        LineServerProtocol.connectionMade(self)
        self.pauseReadingWhenBlocked()
        self.send = eagerWriter(self.transport, self.traffic)
        if not self.upper:
            self.send(WELCOME)

    def linesReceived(self, lines: list[Any]) -> None:
        # One write per chunk, however many lines it held.
        replies = []
        for line in lines:
            if not isinstance(line, bytes):
                replies.append(TOO_LONG_REPLY)
            elif self.upper:
                replies.append(_upper(line) + b"\n")
            else:
                replies.append(b"Echo: " + line + b"\n")
        self.send(b"".join(replies))


class UpperEcho(LineEcho):
    upper = True


def _upper(line: bytes) -> bytes:
    # Upper-case text, not just ASCII, without failing on bytes that are not UTF-8.
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


class EchoFactory(ServerFactory):
    serviceName = "echo"
    refusal = b"ERROR server busy: too many connections, try again later\n"

    def __init__(self, clock: IReactorTime, mode: str = "raw", maxLineLength: int = 65536, **limits: Any) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.mode = mode
        self.maxLineLength = maxLineLength
        self.protocol = {"raw": RawEcho, "line": LineEcho, "upper": UpperEcho}[mode]


class DatagramEcho(DatagramProtocol):
    """Sends each datagram back to where it came from."""
    transport: Any  # connected: never None while the protocol runs

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(datagram, addr)


class Options(ServerOptions):
    serviceName = "echo"
    defaultPort = 8124
    allowUDP = True
    longdesc = (
        "Echo server. raw mode returns every byte (RFC 862); line mode greets and "
        "answers 'Echo: <line>'; upper mode answers each line in upper case. "
        "Also listens on udp:PORT endpoints."
    )
    optParameters = [
        ["mode", "m", "raw", "What to echo: raw, line or upper."],
        [
            "max-line-length",
            None,
            65536,
            "Longest line accepted in line and upper modes, in bytes; longer ones get an error line.",
            positiveInt,
        ],
    ]

    def postOptions(self) -> None:
        if self["mode"] not in MODES:
            raise usage.UsageError(
                f"bad --mode {self['mode']!r}: choose one of {', '.join(MODES)}"
            )
        ServerOptions.postOptions(self)


def buildService(options: Options, reactor: Any = None) -> service.IService:
    reactor = defaultReactor(reactor)
    factory = EchoFactory(
        reactor,
        mode=options["mode"],
        maxLineLength=options["max-line-length"],
        **options.limits(),
    )
    return options.listeningService(factory, reactor, datagramProtocol=DatagramEcho)


makeService = standalone(buildService)
