# -*- test-case-name: tests.test_echo,tests.test_config,tests.test_connections -*-
"""The echo service: ``twistd -n sockproto-echo``.

``--mode raw`` (the default) is RFC 862 echo: every byte back, unchanged and in
order.  ``--mode line`` greets and answers each line ``Echo: <line>``;
``--mode upper`` answers each line in upper case.  UDP endpoints echo each
datagram to its sender, except where the sender could be a reflector
(see :class:`DatagramGuard`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python import usage

from sockproto.interfaces import IServerReactor
from sockproto.privateapi import eagerWriter
from sockproto.server.connections import ServerFactory, ServerProtocol
from sockproto.server.lifecycle import defaultReactor, standalone
from sockproto.server.lines import LineServerProtocol
from sockproto.server.options import ServerOptions, nonNegativeNumber, positiveInt
from sockproto.server.ratelimit import TokenBucket

log = Logger()

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
    """Answers each line; ``line`` mode with ``Echo: `` and a greeting, ``upper`` in upper case."""

    factory: EchoFactory

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
    """``upper`` mode: each line answered in upper case."""

    upper = True


def _upper(line: bytes) -> bytes:
    # Upper-case text, not just ASCII, without failing on bytes that are not UTF-8.
    return line.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


class EchoFactory(ServerFactory):
    """The echo service's connections, in the mode of ``--mode`` (raw bytes, lines or upper case)."""

    serviceName = "echo"
    refusal = b"ERROR server busy: too many connections, try again later\n"

    def __init__(self, clock: IReactorTime, mode: str = "raw", maxLineLength: int = 65536, **limits: Any) -> None:
        ServerFactory.__init__(self, clock, **limits)
        self.mode = mode
        self.maxLineLength = maxLineLength
        self.protocol = {"raw": RawEcho, "line": LineEcho, "upper": UpperEcho}[mode]


#: Ports of services that answer whatever they are sent: echo, daytime, qotd, chargen, time.
#: An answer to one of them is answered back, forever (CERT CA-1996-01).
REFLECTING_PORTS = frozenset({7, 13, 17, 19, 37})
#: Default of ``--udp-rate``: answers a second to one address.
UDP_RATE = 100.0
#: Source addresses whose rate is remembered; the least recently heard are forgotten first.
UDP_RATE_MEMORY = 10000
#: Seconds without a dropped datagram that end an episode (and its log line).
DROP_EPISODE_QUIET = 10.0

DROP_REASONS = {
    "udp_own_port": "its source port is one this server listens on (another echo server, or a forged source)",
    "udp_service_port": "its source port is a service port (below 1024, or echo/daytime/qotd/chargen/time)",
    "udp_rate_limited": "its address was sent more answers a second than --udp-rate allows",
}


class DatagramGuard:
    """
    Whether a UDP datagram is answered: never to a port this server listens
    on (a forged source makes two echo servers, or one with itself, echo a
    datagram to each other forever), never to a service port (below 1024
    unless ``allowLowPorts``, and never echo, daytime, qotd, chargen or
    time), and at most ``rate`` answers a second (``burst`` at once) to
    one address, which also ends a loop with any other reflector.

    Each dropped datagram is counted in ``counts`` (the factory's error
    counters: the metrics) and each episode of drops is logged twice: when
    it begins and, with its count, when it has been quiet for a while.
    Reactor-free: ``clock`` gives the time.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float = UDP_RATE,
        burst: int | None = None,
        allowLowPorts: bool = False,
        memory: int = UDP_RATE_MEMORY,
        counts: Counter[str] | None = None,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate))
        self.allowLowPorts = allowLowPorts
        self.memory = memory
        self.counts: Counter[str] = counts if counts is not None else Counter()
        #: UDP ports this server listens on (all its endpoints).
        self.ownPorts: set[int] = set()
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        #: reason -> [count, time of the last drop, the end-of-episode check]
        self._episodes: dict[str, list[Any]] = {}

    def refusal(self, host: str, port: int) -> str | None:
        """Why a datagram from ``(host, port)`` is not answered, or None to answer it."""
        if port in self.ownPorts:
            return "udp_own_port"
        if port < 1024 and (not self.allowLowPorts or port in REFLECTING_PORTS or port == 0):
            return "udp_service_port"
        if self.rate:
            now = self.clock.seconds()
            bucket = self._buckets.get(host)
            if bucket is None:
                bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) > self.memory:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(host)
            if not bucket.take(now):
                return "udp_rate_limited"
        return None

    def allows(self, host: str, port: int) -> bool:
        """Whether to answer; a datagram not answered is counted and its episode logged."""
        reason = self.refusal(host, port)
        if reason is None:
            return True
        self.counts[reason] += 1
        now = self.clock.seconds()
        episode = self._episodes.get(reason)
        if episode is not None:
            episode[0] += 1
            episode[1] = now
            return False
        log.warn(
            "echo: not answering a UDP datagram from {host}:{port}: {why}; further ones are counted, "
            "not logged, until {quiet:g} s pass without one",
            host=host, port=port, why=DROP_REASONS[reason], quiet=DROP_EPISODE_QUIET,
        )
        self._episodes[reason] = [1, now, self.clock.callLater(DROP_EPISODE_QUIET, self._episodeCheck, reason)]
        return False

    def _episodeCheck(self, reason: str) -> None:
        count, last, _ = episode = self._episodes[reason]
        quietUntil = last + DROP_EPISODE_QUIET
        if quietUntil > self.clock.seconds():
            episode[2] = self.clock.callLater(quietUntil - self.clock.seconds(), self._episodeCheck, reason)
            return
        del self._episodes[reason]
        log.info(
            "echo: {count} UDP datagrams were not answered ({reason}), the last {quiet:g} s ago",
            count=count, reason=reason, quiet=DROP_EPISODE_QUIET,
        )

    def stop(self) -> None:
        """Cancel the end-of-episode checks (the server stops)."""
        for _, _, check in self._episodes.values():
            if check.active():
                check.cancel()
        self._episodes.clear()


class DatagramEcho(DatagramProtocol):
    """Sends each datagram back to where it came from, if ``guard`` allows it."""
    transport: Any  # connected: never None while the protocol runs

    def __init__(self, guard: DatagramGuard) -> None:
        self.guard = guard
        self.port: int | None = None

    def startProtocol(self) -> None:
        self.port = self.transport.getHost().port
        self.guard.ownPorts.add(self.port)

    def stopProtocol(self) -> None:
        if self.port is not None:
            self.guard.ownPorts.discard(self.port)
            if not self.guard.ownPorts:
                self.guard.stop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.guard.allows(addr[0], addr[1]):
            self.transport.write(datagram, addr)


answersPerSecond = nonNegativeNumber("answers a second")


class Options(ServerOptions):
    """``sockproto-echo``'s options: the mode, the longest line and the UDP rules."""

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
        [
            "udp-rate",
            None,
            UDP_RATE,
            "UDP: answers a second to one source address (as many at once); past it datagrams are dropped, "
            "which also ends an echo loop with another reflector (0: no limit).",
            answersPerSecond,
        ],
    ]
    optFlags = [
        ["udp-allow-low-ports", None, "UDP: answer datagrams from source ports below 1024 too (never from "
         "echo 7, daytime 13, qotd 17, chargen 19 or time 37, nor from this server's own ports)."],
    ]

    def postOptions(self) -> None:
        if self["mode"] not in MODES:
            raise usage.UsageError(
                f"bad --mode {self['mode']!r}: choose one of {', '.join(MODES)}"
            )
        ServerOptions.postOptions(self)


def buildService(options: Options, reactor: IServerReactor | None = None) -> service.IService:
    reactor = defaultReactor(reactor)
    factory = EchoFactory(
        reactor,
        mode=options["mode"],
        maxLineLength=options["max-line-length"],
        **options.limits(),
    )
    guard = DatagramGuard(
        reactor, rate=options["udp-rate"], allowLowPorts=options["udp-allow-low-ports"], counts=factory.errors
    )
    return options.listeningService(factory, reactor, datagramProtocol=lambda: DatagramEcho(guard))


makeService = standalone(buildService)
