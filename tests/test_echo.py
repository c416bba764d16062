"""The echo protocols, without sockets."""

from collections import Counter

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.echo import DatagramEcho, DatagramGuard, EchoFactory
from tests.support import connectProtocol

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def connect(factory):
    return connectProtocol(factory, PEER)


class RawEchoTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.factory = EchoFactory(self.clock, mode="raw")

    def test_byteAtATime(self):
        proto, transport = connect(self.factory)
        data = bytes(range(256)) * 2
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        self.assertEqual(transport.value(), data)

    def test_bigChunkNothingAdded(self):
        proto, transport = connect(self.factory)
        data = b"\x00\r\n\xff" * 300000
        proto.dataReceived(data)
        self.assertEqual(transport.value(), data)

    def test_backPressureRegistersTheTransportAsItsProducer(self):
        proto, transport = connect(self.factory)
        self.assertIs(transport.producer, transport)
        self.assertTrue(transport.streaming)

    def test_closeReleasesTheProducer(self):
        proto, transport = connect(self.factory)
        proto.closeConnection()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)


class LineEchoTests(unittest.TestCase):
    def setUp(self):
        self.factory = EchoFactory(Clock(), mode="line", maxLineLength=10)

    def test_welcomeAndEcho(self):
        proto, transport = connect(self.factory)
        for b in b"hi\r\nthere\n":
            proto.dataReceived(bytes([b]))
        self.assertEqual(transport.value(), b"Welcome to echo server!\nEcho: hi\nEcho: there\n")

    def test_manyLinesInOneChunk(self):
        proto, transport = connect(self.factory)
        transport.clear()
        proto.dataReceived(b"a\nb\nc\n" * 1000)
        self.assertEqual(transport.value(), b"Echo: a\nEcho: b\nEcho: c\n" * 1000)

    def test_tooLongLineGetsAnErrorAndTheConnectionStaysUsable(self):
        proto, transport = connect(self.factory)
        transport.clear()
        proto.dataReceived(b"x" * 25)
        proto.dataReceived(b"x" * 25 + b"\nok\n")
        self.assertEqual(transport.value(), b"ERROR line too long: discarded\nEcho: ok\n")
        self.assertFalse(transport.disconnecting)

    def test_upper(self):
        """--mode upper answers lines in upper case; bytes that are not UTF-8 pass unchanged."""
        factory = EchoFactory(Clock(), mode="upper")
        proto, transport = connect(factory)
        proto.dataReceived("straße ok\n".encode() + b"\xff\xfeab\n")
        self.assertEqual(transport.value(), b"STRASSE OK\n" + b"\xff\xfeAB\n")


class LimitTests(unittest.TestCase):
    def test_refusalPastMaxConnections(self):
        factory = EchoFactory(Clock(), maxConnections=2)
        first, _ = connect(factory)
        connect(factory)
        third, transport = connect(factory)
        self.assertTrue(transport.value().startswith(b"ERROR server busy"))
        self.assertTrue(transport.value().endswith(b"\n"))
        self.assertEqual(transport.value().count(b"\n"), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(factory.connections), 2)
        first.connectionLost(None)
        _, transport = connect(factory)
        self.assertEqual(transport.value(), b"")

    def test_idleTimeout(self):
        clock = Clock()
        factory = EchoFactory(clock, idleTimeout=8)
        quiet, quietTransport = connect(factory)
        chatty, chattyTransport = connect(factory)
        for _ in range(10):
            clock.advance(2)
            chatty.dataReceived(b"x")
        self.assertTrue(quietTransport.disconnecting)
        self.assertFalse(chattyTransport.disconnecting)

    def test_idleTimeoutNotBefore(self):
        clock = Clock()
        factory = EchoFactory(clock, idleTimeout=8)
        _, transport = connect(factory)
        clock.pump([0.5] * 15)
        self.assertFalse(transport.disconnecting)
        clock.pump([0.5] * 5)
        self.assertTrue(transport.disconnecting)

    def test_noSweepsWhenDisabledOrEmpty(self):
        clock = Clock()
        factory = EchoFactory(clock, idleTimeout=0)
        connect(factory)
        self.assertEqual(clock.getDelayedCalls(), [])
        factory = EchoFactory(clock, idleTimeout=5)
        proto, _ = connect(factory)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_peerThatDoesNotReadIsCutAfterGrace(self):
        clock = Clock()
        factory = EchoFactory(clock, idleTimeout=4)
        proto, transport = connect(factory)
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        clock.pump([1] * 5)
        self.assertTrue(transport.disconnecting)
        clock.advance(60)
        self.assertEqual(aborted, [True])


class FakeDatagramTransport:
    def __init__(self):
        self.sent = []

    def write(self, datagram, addr):
        self.sent.append((datagram, addr))


class DatagramEchoTests(unittest.TestCase):
    def test_eachDatagramBackToItsSender(self):
        proto = DatagramEcho(DatagramGuard(Clock()))
        proto.transport = FakeDatagramTransport()
        proto.datagramReceived(b"\x00one", ("127.0.0.1", 40001))
        proto.datagramReceived(b"two", ("127.0.0.2", 40002))
        self.assertEqual(
            proto.transport.sent, [(b"\x00one", ("127.0.0.1", 40001)), (b"two", ("127.0.0.2", 40002))]
        )


class DatagramGuardTests(unittest.TestCase):
    """Which datagrams are answered (CERT CA-1996-01), without sockets."""

    def setUp(self):
        self.clock = Clock()
        self.guard = DatagramGuard(self.clock, rate=10, burst=3)
        self.guard.ownPorts.add(8124)

    def test_neverToAPortOfOurs(self):
        """Our own address and port, or another echo server on our port elsewhere: a loop; dropped."""
        for host in ("127.0.0.1", "0.0.0.0", "192.0.2.9", "::1"):
            self.assertEqual(self.guard.refusal(host, 8124), "udp_own_port")
        self.guard.ownPorts.add(9000)
        self.assertEqual(self.guard.refusal("127.0.0.1", 9000), "udp_own_port")
        self.assertIsNone(self.guard.refusal("127.0.0.1", 40000))

    def test_neverToAServicePort(self):
        for port in (0, 7, 13, 17, 19, 37, 53, 123, 1023):
            self.assertEqual(self.guard.refusal("192.0.2.9", port), "udp_service_port", port)
        self.assertIsNone(self.guard.refusal("192.0.2.9", 1024))
        allowing = DatagramGuard(self.clock, allowLowPorts=True)
        for port in (0, 7, 13, 17, 19, 37):
            self.assertEqual(allowing.refusal("192.0.2.9", port), "udp_service_port", port)
        self.assertIsNone(allowing.refusal("192.0.2.9", 53))

    def test_ratePerAddress(self):
        self.assertEqual([self.guard.refusal("192.0.2.1", 40000) for _ in range(4)], [None] * 3 + ["udp_rate_limited"])
        self.assertIsNone(self.guard.refusal("192.0.2.2", 40000), "another address has its own rate")
        self.clock.advance(0.1)
        self.assertIsNone(self.guard.refusal("192.0.2.1", 40000))
        self.assertEqual(self.guard.refusal("192.0.2.1", 40000), "udp_rate_limited")
        unlimited = DatagramGuard(self.clock, rate=0)
        self.assertTrue(all(unlimited.refusal("192.0.2.1", 40000) is None for _ in range(1000)))

    def test_boundedMemory(self):
        guard = DatagramGuard(self.clock, rate=1, memory=100)
        for n in range(1000):
            guard.refusal(f"10.0.{n // 256}.{n % 256}", 40000)
        self.assertEqual(len(guard._buckets), 100)
        self.assertIsNone(guard.refusal("10.0.0.0", 40000), "the least recently heard was forgotten")
        self.assertEqual(guard.refusal("10.0.3.231", 40000), "udp_rate_limited", "the most recent is remembered")

    def test_dropsAreCountedAndLoggedOncePerEpisode(self):
        from twisted.logger import LogLevel, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        counts = Counter()
        guard = DatagramGuard(self.clock, counts=counts)
        guard.ownPorts.add(8124)

        def logged():
            found = [e for e in events if e.get("log_namespace") == "sockproto.echo"]
            events.clear()
            return found

        for _ in range(50):
            self.assertFalse(guard.allows("127.0.0.2", 8124))
            self.clock.advance(1)
        self.assertFalse(guard.allows("127.0.0.2", 19))
        self.assertEqual(counts, Counter(udp_own_port=50, udp_service_port=1))
        started = logged()
        self.assertEqual(len(started), 2, "one line as each episode begins")
        self.assertEqual(started[0]["log_level"], LogLevel.warn)
        self.clock.advance(8.5)
        self.assertEqual(logged(), [], "an episode goes on until 10 s pass without a drop")
        self.clock.advance(1.6)
        ended = logged()
        self.assertEqual([(e["count"], e["reason"]) for e in ended], [(50, "udp_own_port"), (1, "udp_service_port")])
        self.assertFalse(self.clock.getDelayedCalls())
        self.assertFalse(guard.allows("127.0.0.2", 8124))
        self.assertEqual(len(logged()), 1, "a new episode")
        guard.stop()
        self.assertFalse(self.clock.getDelayedCalls())


def forgedDatagram(payload: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
    """Send a UDP datagram whose source address and port are ``source`` (a raw socket: needs root)."""
    import socket
    import struct

    udpLength = 8 + len(payload)
    udp = struct.pack("!HHHH", source[1], destination[1], udpLength, 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udpLength, 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(source[0]), socket.inet_aton(destination[0]),
    )  # the kernel fills in the id, total length and checksum
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + udp, destination)


def rawSocketsProblem() -> str | None:
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return "forging a source address needs a raw socket (root or CAP_NET_RAW)"
    return None


class ForgedSourceTests(unittest.TestCase):
    """
    Real UDP echo servers sent a datagram whose source is forged to be another
    echo server, or the server itself (the loop of CERT CA-1996-01).
    """

    def setUp(self):
        problem = rawSocketsProblem()
        if problem:
            raise unittest.SkipTest(problem)

    def server(self, interface="127.0.0.1", port=0, rate=100.0):
        from twisted.internet import reactor

        guard = DatagramGuard(reactor, rate=rate)
        proto = DatagramEcho(guard)
        proto.heard = 0
        answer = proto.datagramReceived

        def counting(datagram, addr):
            proto.heard += 1
            answer(datagram, addr)

        proto.datagramReceived = counting
        listening = reactor.listenUDP(port, proto, interface=interface)
        self.addCleanup(listening.stopListening)
        return proto, (interface, listening.getHost().port)

    def settle(self, *protos):
        """Fires once nothing more has been heard for a while (a loop never settles; then after 2 s)."""
        from twisted.internet import reactor, task

        @defer.inlineCallbacks
        def wait():
            last = None
            for _ in range(20):
                yield task.deferLater(reactor, 0.1, lambda: None)
                now = [p.heard for p in protos]
                if now == last and sum(now):
                    return
                last = now

        return wait()

    @defer.inlineCallbacks
    def test_anotherEchoServerOnTheSamePort(self):
        a, addressA = self.server()
        b, addressB = self.server("127.0.0.2", addressA[1])
        forgedDatagram(b"ping", addressB, addressA)
        yield self.settle(a, b)
        self.assertEqual((a.heard, b.heard), (1, 0))
        self.assertEqual(a.guard.counts, Counter(udp_own_port=1))

    @defer.inlineCallbacks
    def test_theServerItself(self):
        a, addressA = self.server()
        forgedDatagram(b"ping", addressA, addressA)
        yield self.settle(a)
        self.assertEqual(a.heard, 1)
        self.assertEqual(a.guard.counts, Counter(udp_own_port=1))

    @defer.inlineCallbacks
    def test_anotherReflectorIsStoppedByTheRate(self):
        """Another echo server on another port is answered, but only until the rate ends the loop."""
        a, addressA = self.server(rate=5)
        b, addressB = self.server(rate=5)
        forgedDatagram(b"ping", addressB, addressA)
        yield self.settle(a, b)
        self.assertLessEqual(a.heard + b.heard, 2 * (5 + 1) + 1)
        self.assertEqual(a.guard.counts["udp_rate_limited"] + b.guard.counts["udp_rate_limited"], 1)
