"""The fence around Twisted's private API: each use still works with the installed Twisted.

A Twisted upgrade that renames or changes one of these fails here, loudly,
instead of slowing down or breaking a service in production.
"""

import errno
import inspect
import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor
from twisted.python import usage
from twisted.trial import unittest

from sockproto import privateapi


class EndpointParsingTests(unittest.TestCase):
    def test_partsAndQuoting(self):
        """endpoints._parse splits positional and keyword parts and honours backslash-escaped colons."""
        self.assertEqual(
            privateapi.parseEndpointDescription(r"tcp:8080:interface=\:\:1:backlog=5"),
            (["tcp", "8080"], {"interface": "::1", "backlog": "5"}),
        )
        self.assertEqual(privateapi.parseEndpointDescription("unix:/tmp/x.sock"), (["unix", "/tmp/x.sock"], {}))


class OptionHandlerTests(unittest.TestCase):
    def test_oneOptionAtATime(self):
        """usage.Options._dispatch maps a long option's name to the handler parseOptions would call."""

        class Options(usage.Options):
            optParameters = [["max-connections", None, 10, "limit", int]]
            optFlags = [["verbose", "v", "say more"]]

        options = Options()
        handler = privateapi.optionHandler(options, "max-connections")
        self.assertIsInstance(handler, usage.CoerceParameter)
        handler.dispatch("max-connections", "42")
        self.assertEqual(options["max-connections"], 42)
        privateapi.optionHandler(options, "verbose")("verbose", None)
        self.assertEqual(options["verbose"], 1)


class EagerWriterTests(unittest.TestCase):
    @defer.inlineCallbacks
    def serveOnce(self, onConnection, size):
        """
        A real TCP server whose connections run ``onConnection(transport)``
        (which fires ``received``); then ``size`` bytes read without the
        reactor, which proves they were sent before the call returned.
        """
        received = defer.Deferred()

        class Server(protocol.Protocol):
            def connectionMade(self):
                received.callback(onConnection(self.transport))
                self.transport.loseConnection()

        port = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        self.addCleanup(client.close)
        result = yield received
        data = b""
        while len(data) < size:
            chunk = yield defer.maybeDeferred(client.recv, 100)
            if not chunk:
                break
            data += chunk
        return result, data

    @defer.inlineCallbacks
    def test_writesGoStraightToTheSocket(self):
        """Over a real TCP connection the eager writer sends at once, in order, and counts the bytes."""
        traffic = type("Traffic", (), {"bytesOut": 0})()

        def connected(transport):
            write = privateapi.eagerWriter(transport, traffic)
            for chunk in (b"one ", b"two ", b"three"):
                write(chunk)
            # Nothing went through Twisted's buffer: it was sent before this returns.
            return (transport._tempDataLen, len(transport.dataBuffer), traffic.bytesOut, write is transport.write)

        result, data = yield self.serveOnce(connected, 13)
        self.assertEqual(result, (0, 0, 13, False))  # the fast path was taken
        self.assertEqual(data, b"one two three")

    @defer.inlineCallbacks
    def test_aLibrarysWritesGoOutAtOnce(self):
        """sendAtOnce: a protocol's own transport.write sends before it returns, and still in order."""

        def connected(transport):
            privateapi.sendAtOnce(transport)
            transport.write(b"first ")
            transport.write(b"second third")
            return transport._tempDataLen + len(transport.dataBuffer)

        result, data = yield self.serveOnce(connected, 18)
        self.assertEqual(result, 0, "nothing waited in Twisted's buffer")
        self.assertEqual(data, b"first second third")


class LeanDispatchTests(unittest.TestCase):
    def test_epollReactorInternals(self):
        """leanDispatch uses EPollReactor's _poller, _selectables and _doReadOrWrite."""
        try:
            from twisted.internet.epollreactor import EPollReactor
        except ImportError:
            raise unittest.SkipTest("no epoll here")
        fresh = EPollReactor()
        self.addCleanup(fresh._poller.close)
        for name in ("_poller", "_selectables", "_doReadOrWrite"):
            self.assertTrue(hasattr(fresh, name), name)
        self.assertTrue(privateapi.leanDispatch(fresh))
        self.assertFalse(privateapi.leanDispatch(fresh), "idempotent")
        fresh.doIteration(0)  # one pass of the lean loop runs


class LogFilterTests(unittest.TestCase):
    def test_levelsAndTwistedsChatter(self):
        """Below the level and Twisted's routine port lines are dropped; the rest goes to the observers."""
        import io
        import sys
        import warnings

        from twisted.logger import LogBeginner, Logger, LogLevel, LogPublisher

        publisher = LogPublisher()
        beginner = LogBeginner(publisher, io.StringIO(), sys, warnings)
        privateapi.filterLogs(LogLevel.info, beginner)
        seen = []
        beginner.beginLoggingTo([seen.append], redirectStandardIO=False, discardBuffer=True)
        logger = Logger(observer=publisher)
        logger.debug("each connection")
        logger.info("echo listening on tcp:127.0.0.1:8124")
        logger.info("{log_text}", log_text="EchoFactory starting on 8124")
        logger.info("{log_text}", log_text="(TCP Port 8124 Closed)")
        # As Twisted's Factory.doStart and doStop say it: a format, not text.
        logger.info("Starting factory {factory!r}", factory=protocol.Factory())
        logger.info("Stopping factory {factory!r}", factory=protocol.Factory())
        # tls:'s SNI warning: dropped for a client that names no host, kept for a name it lacks.
        logger.warn("no server certificate for name {name!r}", name=None)
        logger.warn("no server certificate for name {name!r}", name="other.example")
        logger.error("cannot listen")
        self.assertEqual([event["log_format"] for event in seen],
                         ["echo listening on tcp:127.0.0.1:8124", "no server certificate for name {name!r}",
                          "cannot listen"])


class UnsentBytesTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_whatAPeerHasNotTakenYet(self):
        """tcp.Connection's buffer tells how much is owed; an unknown transport gives None."""
        from twisted.internet.testing import StringTransport

        self.assertIsNone(privateapi.unsentBytes(StringTransport()))
        measured = defer.Deferred()

        class Server(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"x" * (8 << 20))  # more than any socket buffer takes at once
                measured.callback(privateapi.unsentBytes(self.transport))
                self.transport.abortConnection()

        port = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        self.addCleanup(client.close)
        unsent = yield measured
        self.assertEqual(unsent, 8 << 20, "nothing is sent before the reactor's next turn")


class AdoptUNIXPortTests(unittest.TestCase):
    def test_anAdoptedUNIXSocketKeepsItsMode(self):
        """Twisted's adoptStreamPort would make the path 0666; adoptUNIXPort keeps what the parent set."""
        import os
        import socket
        import tempfile

        from twisted.internet import protocol, reactor

        from sockproto.privateapi import adoptUNIXPort

        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "s")
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(path)
        os.chmod(path, 0o600)
        listening.listen(5)
        listening.setblocking(False)
        port = adoptUNIXPort(reactor, listening.fileno(), protocol.Factory.forProtocol(protocol.Protocol), 0o600)
        self.addCleanup(port.stopListening)
        self.addCleanup(listening.close)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(port.getHost().name, path.encode() if isinstance(port.getHost().name, bytes) else path)


class ALPNTests(unittest.TestCase):
    """serveClientsOfferingALPN: a TLS server of the installed Twisted serves clients that offer ALPN."""

    @defer.inlineCallbacks
    def handshake(self, serverFactory, offered):
        """A real loopback TLS connection: (what the server chose, the echo of b'ping')."""
        import ssl as stdlibSSL
        from pathlib import Path

        from twisted.internet import endpoints, threads

        from tests.support import makeCerts

        privateapi.serveClientsOfferingALPN()
        certs = makeCerts(Path(self.mktemp()))
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={certs}/server.key:certKey={certs}/server.crt"
        )
        port = yield endpoint.listen(serverFactory)
        self.addCleanup(port.stopListening)

        def client():
            context = stdlibSSL.create_default_context(cafile=str(certs / "ca.crt"))
            context.set_alpn_protocols(offered)
            raw = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"ping")
                return sock.selected_alpn_protocol(), sock.recv(4)

        result = yield threads.deferToThread(client)
        return result

    def echoFactory(self, *protocols):
        from twisted.internet.interfaces import IProtocolNegotiationFactory
        from zope.interface import implementer

        class Echo(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.write(data)

        @implementer(IProtocolNegotiationFactory)
        class Negotiating(protocol.ServerFactory):
            def acceptableProtocols(self):
                return list(protocols)

        factory = Negotiating() if protocols else protocol.ServerFactory()
        factory.protocol = Echo
        return factory

    @defer.inlineCallbacks
    def test_noProtocolOfOurs(self):
        """A server with no ALPN protocols serves a browser's offer (h2, http/1.1) and chooses none."""
        chosen, echoed = yield self.handshake(self.echoFactory(), ["h2", "http/1.1"])
        self.assertEqual((chosen, echoed), (None, b"ping"))

    @defer.inlineCallbacks
    def test_theServersChoiceStands(self):
        """Where the factory speaks protocols, the first of them the client offered is chosen; none in common: none."""
        from twisted.internet import _sslverify

        if not hasattr(_sslverify, "setupForALPN"):
            raise unittest.SkipTest("this Twisted sets ALPN per connection (before 25); sockproto does not use that")
        chosen, echoed = yield self.handshake(self.echoFactory(b"h2", b"http/1.1"), ["http/1.1", "spdy/3"])
        self.assertEqual((chosen, echoed), ("http/1.1", b"ping"))
        chosen, echoed = yield self.handshake(self.echoFactory(b"h2"), ["http/1.1"])
        self.assertEqual((chosen, echoed), (None, b"ping"))

    def test_idempotent(self):
        privateapi.serveClientsOfferingALPN()
        self.assertFalse(privateapi.serveClientsOfferingALPN())


class TLSCloseTests(unittest.TestCase):
    """flushBeforeTLSClose: a reply written as the peer's close_notify arrives is sent before ours."""

    @defer.inlineCallbacks
    def test_aRequestAndItsPeersCloseInOneFlight(self):
        from pathlib import Path

        from twisted.internet import endpoints, ssl

        from tests.support import makeCerts

        privateapi.flushBeforeTLSClose()
        certs = makeCerts(Path(self.mktemp()))

        class Echo(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.write(data)

        server = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={certs}/server.key:certKey={certs}/server.crt"
        )
        port = yield server.listen(protocol.ServerFactory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        trust = ssl.Certificate.loadPEM((certs / "ca.crt").read_bytes())

        class AskThenClose(protocol.Protocol):
            """Like socat at the end of its input: the request, then close_notify, in one flight."""

            def __init__(self):
                self.received = b""
                self.done = defer.Deferred()

            def connectionMade(self):
                self.transport.write(b"ping")
                self.transport.loseConnection()

            def dataReceived(self, data):
                self.received += data

            def connectionLost(self, reason):
                self.done.callback(self.received)

        for _ in range(5):
            client = endpoints.wrapClientTLS(
                ssl.optionsForClientTLS("localhost", trust),
                endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            )
            asker = AskThenClose()
            yield client.connect(protocol.Factory.forProtocol(lambda asker=asker: asker))
            received = yield asker.done
            self.assertEqual(received, b"ping")
class DescriptorLimitTests(unittest.TestCase):
    """refuseAtDescriptorLimit: Twisted's accept generator, its reserve descriptor and its accept errors."""

    def test_twistedsAcceptInternals(self):
        """tcp.Port.doRead accepts through tcp._accept, with tcp._reservedFD; the errors are the ones we know."""
        from twisted.internet import tcp

        self.assertIn("_accept", tcp.Port.doRead.__code__.co_names)
        self.assertIn("_reservedFD", tcp.Port.doRead.__code__.co_names)
        self.assertEqual(inspect.signature(privateapi._twistedAccept).parameters.keys(),
                         {"logger", "accepts", "listener", "reservedFD"})
        for method in ("available", "reserve", "__enter__", "__exit__"):
            self.assertTrue(callable(getattr(tcp._reservedFD, method)), method)
        self.assertTrue({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM} <= set(tcp._ACCEPT_ERRORS))
        port = reactor.listenTCP(0, protocol.ServerFactory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port.socket, socket.socket)

    def listener(self, error):
        class FailsOnce(socket.socket):
            failures = [error]

            def accept(self):
                if self.failures:
                    raise OSError(self.failures.pop(), "injected")
                return super().accept()

        listening = FailsOnce(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(10)
        listening.setblocking(False)
        return listening

    def handler(self, refusal=b"busy\n"):
        class Handler:
            def __init__(self):
                self.refusal = refusal
                self.events = []

            def refused(self, count):
                self.events.append(("refused", count))

            def couldNotAccept(self, reason):
                self.events.append(("failed", reason))

        return Handler()

    def clients(self, listening, count):
        clients = [socket.create_connection(listening.getsockname(), timeout=5) for _ in range(count)]
        for client in clients:
            self.addCleanup(client.close)
        return clients

    def test_theSurplusGetsTheRefusalOnTheReserveDescriptor(self):
        from twisted.internet import tcp

        class Reserve:
            used = 0

            def available(self):
                return True

            def __enter__(self):
                self.used += 1

            def __exit__(self, *exc):
                return None

        listening = self.listener(errno.EMFILE)
        handler = self.handler()
        self.assertTrue(privateapi.refuseAtDescriptorLimit(type("Port", (), {"socket": listening})(), handler))
        clients = self.clients(listening, 3)
        reserve = Reserve()
        accepted = list(tcp._accept(None, range(10), listening, reserve))
        self.assertEqual(accepted, [])
        self.assertEqual((handler.events, reserve.used), ([("refused", 3)], 1))
        for client in clients:
            self.assertEqual(client.recv(100), b"busy\n")
            self.assertEqual(client.recv(100), b"")

    def test_acceptErrorsAreReportedNotLogged(self):
        from twisted.internet import tcp

        listening = self.listener(errno.ENFILE)
        handler = self.handler()
        privateapi.refuseAtDescriptorLimit(type("Port", (), {"socket": listening})(), handler)
        self.clients(listening, 1)
        self.assertEqual(list(tcp._accept(None, range(10), listening, tcp._reservedFD)), [])
        self.assertEqual(handler.events, [("failed", "ENFILE")])
        accepted = list(tcp._accept(None, range(10), listening, tcp._reservedFD))
        self.assertEqual(len(accepted), 1, "once there is room, accepted as usual")
        accepted[0][0].close()

    def test_otherPortsAreTwistedsAsBefore(self):
        port = type("Port", (), {"socket": None})()
        self.assertFalse(privateapi.refuseAtDescriptorLimit(port, self.handler()))
        listening = self.listener(errno.EAGAIN)
        self.clients(listening, 1)
        self.assertEqual(list(privateapi._acceptOrRefuse(None, range(3), listening, None)), [])
        accepted = list(privateapi._acceptOrRefuse(None, range(3), listening, None))
        self.assertEqual(len(accepted), 1)
        accepted[0][0].close()


arguments = st.lists(
    st.one_of(st.binary(max_size=300), st.text(max_size=50), st.integers(-(2**63), 2**63), st.floats(allow_nan=False)),
    max_size=60,
)


class RedisCommandEncodingTests(unittest.TestCase):
    """encodeRedisCommandsInOnePass: txredisapi's _build_command and _encode_value, as the link uses them."""

    def ours(self):
        import txredisapi

        class OnePass(txredisapi.RedisProtocol):
            pass

        privateapi.encodeRedisCommandsInOnePass(OnePass)
        return OnePass(charset=None)

    @settings(max_examples=300, deadline=None)
    @given(arguments)
    def test_theSameBytesAsTxredisapi(self, args):
        import txredisapi

        theirs = txredisapi.RedisProtocol(charset=None)
        self.assertEqual(self.ours()._build_command(*args), theirs._build_command(*args))

    def test_aTurnOfWrites(self):
        args = ["EVALSHA", "ab" * 20, 2, b"p:v:k1", b"p:index", b"c", b"k1", b"\x00value\r\n"]
        self.assertEqual(
            self.ours()._build_command(*args),
            b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"ab" * 20 + b"\r\n$1\r\n2\r\n$6\r\np:v:k1\r\n$7\r\np:index\r\n"
            b"$1\r\nc\r\n$2\r\nk1\r\n$8\r\n\x00value\r\n\r\n",
        )

    def test_theLinksCommandConnectionUsesIt(self):
        from sockproto.server.redis import _CommandProtocol

        encoded = _CommandProtocol(charset=None)._build_command("PING", b"x", 3)
        self.assertEqual(encoded, b"*3\r\n$4\r\nPING\r\n$1\r\nx\r\n$1\r\n3\r\n")
