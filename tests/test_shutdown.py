"""Graceful shutdown and the counters behind the metrics, without sockets."""

import re

from twisted.application import service
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.binary.codec import Op, encodeKey, frame
from sockproto.binary.crud import CrudFactory
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.service import StoreRegistry
from sockproto.binary.store import MemoryStore
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.protocol import ChatFactory
from sockproto.echo import EchoFactory
from sockproto.server.latency import BOUNDS, LatencyHistogram
from sockproto.server.listen import StopInOrder
from tests.support import connectProtocol

PEER = IPv4Address("TCP", "127.0.0.1", 4000)


def connect(factory):
    return connectProtocol(factory, PEER)


def closed(proto):
    """What the reactor does once a closing transport has flushed."""
    proto.connectionLost(None)


class StopServingTests(unittest.TestCase):
    def test_waitsForEveryConnectionToClose(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line")
        (a, ta), (b, tb) = connect(factory), connect(factory)
        drained = factory.stopServing(5.0)
        self.assertTrue(ta.disconnecting and tb.disconnecting)
        self.assertNoResult(drained)
        closed(a)
        self.assertNoResult(drained)
        closed(b)
        self.successResultOf(drained)
        self.assertFalse(clock.getDelayedCalls(), "the deadline is cancelled")

    def test_connectionsLeftAtTheDeadlineAreCut(self):
        clock = Clock()
        factory = EchoFactory(clock)
        proto, transport = connect(factory)
        drained = factory.stopServing(5.0)
        clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected, "aborted")
        closed(proto)
        self.successResultOf(drained)

    def test_nothingOpenIsDoneAtOnce(self):
        self.successResultOf(EchoFactory(Clock()).stopServing(5.0))

    def test_binaryAnswersWhatItReadAndIgnoresTheRest(self):
        clock = Clock()
        factory = SPBFactory(clock, MemoryStore(clock))
        proto, transport = connect(factory)
        proto.dataReceived(frame(Op.CREATE, 1, encodeKey(b"k") + b"v") + frame(Op.READ, 2, encodeKey(b"k")))
        self.assertEqual(transport.value(), b"", "the write is not committed yet")
        drained = factory.stopServing(5.0)
        proto.dataReceived(frame(Op.UPDATE, 3, encodeKey(b"k") + b"w"))
        self.assertFalse(transport.disconnecting, "replies are still owed")
        clock.advance(0)
        clock.advance(0)
        out = transport.value()
        self.assertEqual(out, frame(0x90, 1) + frame(0x91, 2, b"v"), "request 3 came after the stop: not acted on")
        self.assertEqual(factory.store.get(b"k"), b"v")
        self.assertTrue(transport.disconnecting)
        closed(proto)
        self.successResultOf(drained)

    def test_crudAnswersWhatItReadThenCloses(self):
        clock = Clock()
        factory = CrudFactory(clock, MemoryStore(clock))
        proto, transport = connect(factory)
        transport.clear()
        proto.dataReceived(b"create a 1\n")
        factory.stopServing(5.0)
        proto.dataReceived(b"create b 2\n")
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(transport.value(), b"OK\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(factory.store.get(b"b"))

    def test_chatSaysGoodbyeWithoutLeaveNoticeStorms(self):
        clock = Clock()
        history = History(MEMORY, clock)
        history.open()
        factory = ChatFactory(clock, ChatHub(clock, history))
        factory.portal = None
        connections = [connect(factory) for _ in range(3)]
        factory.portal = object()  # a fourth, not logged in, is told too
        connections.append(connect(factory))
        clock.advance(0)
        for _, transport in connections:
            transport.clear()
        factory.stopServing(5.0)
        for proto, _ in connections:
            closed(proto)
        clock.advance(0)
        for _, transport in connections:
            lines = [re.sub(r"^\[[^]]*\] ", "", x) for x in transport.value().decode().splitlines()]
            self.assertEqual(lines, ["*** the server is going down"])
            self.assertTrue(transport.disconnecting)


class StopInOrderTests(unittest.TestCase):
    def test_childrenStopOneAfterAnotherLastFirst(self):
        events = []
        waits = {}

        class Step(service.Service):
            def stopService(self):
                events.append(self.name)
                waits[self.name] = defer.Deferred()
                return waits[self.name]

        top = StopInOrder()
        for name in ("store", "listener"):
            step = Step()
            step.setName(name)
            step.setServiceParent(top)
        top.startService()
        stopped = top.stopService()
        self.assertEqual(events, ["listener"])
        waits["listener"].callback(None)
        self.assertEqual(events, ["listener", "store"])
        self.assertNoResult(stopped)
        waits["store"].callback(None)
        self.successResultOf(stopped)


class StoreRegistryTests(unittest.TestCase):
    def test_sameDatabaseSameStore(self):
        from twisted.internet import reactor

        registry = StoreRegistry(reactor)
        registry.startService()
        self.addCleanup(registry.stopService)
        path = self.mktemp() + ".sqlite3"
        first = registry.open("binary", path, "normal")
        self.assertIs(registry.open("crud", "./" + path, "normal"), first)
        self.assertIsNot(registry.open("crud", path + "-other", "normal"), first)
        self.assertEqual(len(list(registry)), 2, "one closing service per database")
        with self.assertRaises(SystemExit) as caught:
            registry.open("crud", path, "always")
        self.assertIn("differs", str(caught.exception))


    def test_aDatabaseThatCannotBeOpenedStopsTheServiceNamingIt(self):
        from twisted.internet import reactor

        missing = self.mktemp() + "/no/such/folder/kv.sqlite3"
        with self.assertRaises(SystemExit) as caught:
            StoreRegistry(reactor).open("crud", missing, "normal")
        self.assertIn(f"sockproto-crud: cannot open database {missing!r}", str(caught.exception))


class CounterTests(unittest.TestCase):
    def test_trafficByTransportKind(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line")
        proto, transport = connect(factory)
        proto.dataReceived(b"hello\n")
        traffic = factory.traffic["tcp"]
        self.assertEqual((traffic.open, traffic.total, traffic.bytesIn), (1, 1, 6))
        self.assertEqual(traffic.bytesOut, len(transport.value()))
        closed(proto)
        self.assertEqual((traffic.open, traffic.total), (0, 1))

    def test_errorsByKind(self):
        clock = Clock()
        factory = EchoFactory(clock, mode="line", maxLineLength=4)
        proto, _ = connect(factory)
        proto.dataReceived(b"toolong\nok\n" + b"x" * 10)
        self.assertEqual(factory.errors["line_too_long"], 2)
        other, _ = connect(factory)
        other.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(factory.errors["wrong_protocol"], 1)

        binary = SPBFactory(clock, MemoryStore(clock))
        proto, _ = connect(binary)
        proto.dataReceived(frame(Op.READ, 1, encodeKey(b"missing")) + frame(0x77, 2))
        self.assertEqual((binary.errors["not_found"], binary.errors["unknown_op"]), (1, 1))
        self.assertEqual(binary.latencyFor(Op.READ).count, 1)
        self.assertNotIn(0x77, binary.latency, "unknown ops get no histogram of their own")

    def test_latencyHistogramBuckets(self):
        histogram = LatencyHistogram()
        for seconds in (0.00005, 0.0001, 0.003, 100.0):
            histogram.observe(seconds)
        buckets = dict(histogram.cumulative())
        self.assertEqual(buckets["0.0001"], 2, "le is inclusive")
        self.assertEqual(buckets["0.005"], 3)
        self.assertEqual(buckets[repr(BOUNDS[-1])], 3)
        self.assertEqual(buckets["+Inf"], 4)
        self.assertAlmostEqual(histogram.sum, 100.00315)


class FailureTests(unittest.TestCase):
    def test_aChildThatFailsToStopDoesNotStopTheOthers(self):
        stopped = []

        class Broken(service.Service):
            def stopService(self):
                raise RuntimeError("broken")

        class Fine(service.Service):
            def stopService(self):
                stopped.append(self.name)

        top = StopInOrder()
        for name, kind in (("first", Fine), ("broken", Broken)):
            child = kind()
            child.setName(name)
            child.setServiceParent(top)
        top.startService()
        self.successResultOf(top.stopService())
        self.assertEqual(stopped, ["first"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
