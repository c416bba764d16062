"""The fence around Twisted's private API: each use still works with the installed Twisted.

A Twisted upgrade that renames or changes one of these fails here, loudly,
instead of slowing down or breaking a service in production.
"""

import socket

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
        logger.error("cannot listen")
        self.assertEqual([event["log_format"] for event in seen],
                         ["echo listening on tcp:127.0.0.1:8124", "cannot listen"])


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
