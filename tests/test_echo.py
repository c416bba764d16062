"""The echo protocols, without sockets."""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.echo import DatagramEcho, EchoFactory
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
        proto = DatagramEcho()
        proto.transport = FakeDatagramTransport()
        proto.datagramReceived(b"\x00one", ("127.0.0.1", 1))
        proto.datagramReceived(b"two", ("127.0.0.2", 2))
        self.assertEqual(proto.transport.sent, [(b"\x00one", ("127.0.0.1", 1)), (b"two", ("127.0.0.2", 2))])
