"""The Twisted SPB/1 client and its pool, against an in-process server on loopback."""

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from sockproto.binary.client import Exists, NotFound, SPBClientProtocol, SPBPool
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.store import MemoryStore


class ClientTests(unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore(reactor)
        self.factory = SPBFactory(reactor, self.store)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)

    async def connect(self):
        from twisted.internet.protocol import Factory

        proto = await self.endpoint.connect(Factory.forProtocol(SPBClientProtocol))
        self.addCleanup(self.closeClient, proto)
        return proto

    def closeClient(self, proto):
        closed = proto.whenClosed()
        if proto.connected:
            proto.transport.loseConnection()
        return closed

    @defer.inlineCallbacks
    def test_pipelinedOps(self):
        """400 requests sent before any reply: every Deferred fires with its own result, in order."""
        proto = yield defer.ensureDeferred(self.connect())
        creates = [proto.create(f"k{i:03d}", b"v%d" % i) for i in range(200)]
        reads = [proto.read(f"k{i:03d}") for i in range(200)]
        self.assertEqual(proto.busy, 400)
        yield defer.gatherResults(creates)
        values = yield defer.gatherResults(reads)
        self.assertEqual(values, [b"v%d" % i for i in range(200)])
        yield proto.update("k000", b"new")
        self.assertEqual((yield proto.read(b"k000")), b"new")
        self.assertEqual(len((yield proto.list("k00"))), 10)
        self.assertEqual((yield proto.echo(b"\x00\xff")), b"\x00\xff")
        yield proto.ping()
        stats = yield proto.stats()
        self.assertEqual(stats["keys"], 200)
        yield self.assertFailure(proto.read("nope"), NotFound)
        yield self.assertFailure(proto.create("k001", b"x"), Exists)
        yield proto.delete("k001")
        yield self.assertFailure(proto.delete("k001"), NotFound)

    @defer.inlineCallbacks
    def test_poolIsBoundedReusesAndReplaces(self):
        pool = SPBPool(self.endpoint, size=2)
        self.addCleanup(pool.close)
        yield pool.create("a", b"1")
        results = yield defer.gatherResults([pool.read("a") for _ in range(20)])
        self.assertEqual(results, [b"1"] * 20)
        self.assertLessEqual(pool.created, 2)
        self.assertLessEqual(pool.opened, 2)
        before = pool.created
        # Break every connection from the server side.
        for proto in list(self.factory.connections):
            proto.transport.abortConnection()
        yield deferLater(0.1)
        self.assertEqual((yield pool.read("a")), b"1")
        self.assertEqual(pool.created, before + 1)
        self.assertTrue(all(p.connected for p in pool.idle))
        yield self.assertFailure(pool.read("missing"), NotFound)


def deferLater(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)
