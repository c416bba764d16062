"""The limits every server connection has: per-address connection counts and the read timeout (no sockets)."""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from sockproto.binary.protocol import SPBFactory
from sockproto.binary.store import MemoryStore
from sockproto.echo import EchoFactory
from sockproto.server.connections import addressKey


def connect(factory, peer):
    proto = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    return proto, transport


class PerAddressTests(unittest.TestCase):
    def test_addressKeys(self):
        """IPv4 by address, IPv6 by /64 (IPv4-mapped ones as IPv4), UNIX sockets not at all."""
        self.assertEqual(addressKey(IPv4Address("TCP", "10.1.2.3", 5)), "10.1.2.3")
        self.assertEqual(addressKey(IPv6Address("TCP", "2001:db8::1", 5)), "2001:db8::/64")
        self.assertEqual(addressKey(IPv6Address("TCP", "2001:db8::ffff:2", 5)), "2001:db8::/64")
        self.assertEqual(addressKey(IPv6Address("TCP", "2001:db8:0:1::1", 5)), "2001:db8:0:1::/64")
        self.assertEqual(addressKey(IPv6Address("TCP", "::ffff:10.1.2.3", 5)), "10.1.2.3")
        self.assertIsNone(addressKey(UNIXAddress(b"/run/x.sock")))
        for local in (IPv4Address("TCP", "127.0.0.1", 5), IPv4Address("TCP", "127.9.9.9", 5),
                      IPv6Address("TCP", "::1", 5), IPv6Address("TCP", "::ffff:127.0.0.1", 5)):
            self.assertIsNone(addressKey(local), local)

    def test_anAddressPastItsLimitIsRefusedOthersAreNot(self):
        factory = EchoFactory(Clock(), mode="line", maxPerAddress=2)
        one = IPv6Address("TCP", "2001:db8::1", 1000)
        sameNetwork = IPv6Address("TCP", "2001:db8::99", 1001)
        first, _ = connect(factory, one)
        connect(factory, sameNetwork)
        refused, transport = connect(factory, one)
        self.assertIn(b"too many connections", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.errors["refused_per_address"], 1)
        other, otherTransport = connect(factory, IPv4Address("TCP", "192.0.2.7", 1))
        self.assertNotIn(b"too many", otherTransport.value())
        for _ in range(5):
            connect(factory, UNIXAddress(b"/run/echo.sock"))  # local users are not counted
        first.connectionLost(None)
        again, againTransport = connect(factory, one)
        self.assertNotIn(b"too many", againTransport.value(), "a closed connection frees its place")
        self.assertEqual(factory.perAddress["2001:db8::/64"], 2)

    def test_zeroMeansNoLimit(self):
        factory = EchoFactory(Clock(), mode="line", maxPerAddress=0)
        for port in range(300):
            _, transport = connect(factory, IPv4Address("TCP", "192.0.2.7", port))
            self.assertFalse(transport.disconnecting)


class ReadTimeoutTests(unittest.TestCase):
    """Slowloris: a line or frame begun must be finished within --read-timeout, however slowly bytes come."""

    def test_aLineTrickledInIsCutOff(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line", readTimeout=30)
        proto, transport = connect(factory, IPv4Address("TCP", "192.0.2.7", 1))
        for _ in range(3):
            proto.dataReceived(b"x")  # a byte every 9 seconds: never idle, never done
            clock.advance(9)
        self.assertFalse(transport.disconnecting)
        clock.advance(9)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.errors["read_timeout"], 1)

    def test_finishedLinesStopTheClock(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line", readTimeout=30)
        proto, transport = connect(factory, IPv4Address("TCP", "192.0.2.7", 1))
        proto.dataReceived(b"half")
        clock.advance(20)
        proto.dataReceived(b" done\nnext")
        clock.advance(20)
        self.assertFalse(transport.disconnecting, "the clock restarted with the new line")
        proto.dataReceived(b"\n")
        clock.advance(1000)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(factory.partial, set())

    def test_aFrameHeaderAloneIsCutOff(self):
        clock = Clock()
        factory = SPBFactory(clock, MemoryStore(clock), readTimeout=30)
        proto, transport = connect(factory, IPv4Address("TCP", "192.0.2.7", 1))
        proto.dataReceived(b"\x00\x00\x00\x10\x01")
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(9)
        self.assertTrue(transport.disconnecting)

    def test_zeroMeansNoLimit(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line", readTimeout=0)
        proto, transport = connect(factory, IPv4Address("TCP", "192.0.2.7", 1))
        proto.dataReceived(b"never finished")
        clock.advance(10000)
        self.assertFalse(transport.disconnecting)


class EpisodesTests(unittest.TestCase):
    def test_oncePerQuietSpellWithTheCountUnsaid(self):
        from sockproto.server.ratelimit import Episodes

        episodes = Episodes(quiet=60, kinds=2)
        self.assertEqual(episodes.due("a", 0), 0)
        self.assertIsNone(episodes.due("a", 10))
        self.assertIsNone(episodes.due("a", 59))
        self.assertEqual(episodes.due("b", 59), 0)
        self.assertEqual(episodes.due("a", 61), 2)
        # Bounded: a third kind forgets the oldest.
        self.assertEqual(episodes.due("c", 62), 0)
        self.assertEqual(len(episodes._last), 2)


class HandshakeFailureTests(unittest.TestCase):
    def test_whoAbortedIt(self):
        from OpenSSL import SSL
        from twisted.python.failure import Failure

        from sockproto.server.tls import handshakeFailure

        ours = Failure(SSL.Error([("SSL routines", "", "peer did not return a certificate")]))
        theirs = Failure(SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")]))
        self.assertEqual(handshakeFailure(ours), ("peer did not return a certificate", False))
        self.assertEqual(handshakeFailure(theirs), ("tlsv1 alert unknown ca", True))
        self.assertIsNone(handshakeFailure(Failure(ConnectionResetError())))
        self.assertIsNone(handshakeFailure(None))
