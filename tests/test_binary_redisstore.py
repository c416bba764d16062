"""The Redis store's own logic without Redis or a reactor (the rest: tests/test_binary_backends_e2e.py)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from sockproto.server.redis import parseRedisURL


class RedisStoreRefusalTests(unittest.TestCase):
    """The Redis store's answers when Redis cannot be asked, without Redis or a reactor."""

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from sockproto.binary.redisstore import RedisStore

        self.clock = MemoryReactorClock()
        self.store = RedisStore(self.clock, parseRedisURL("redis://127.0.0.1"))
        self.codes: list[Any] = []
        self.values: list[Any] = []

    def test_beforeTheFirstLinkRequestsWaitThenFailWhenItDoesNotCome(self) -> None:
        from sockproto.binary.codec import Code, Op

        self.store._start()  # the link only tries; nothing listens at Redis's address here
        self.store.write(int(Op.CREATE), b"k", b"v", self.codes.append)
        self.store.fetch(b"k", lambda value, failure: self.values.append((value, failure is not None)))
        self.clock.advance(0)
        self.assertEqual((self.codes, self.values), ([], []))  # waiting for the first link
        self.clock.advance(5)  # FIRST_LINK_WAIT: given up
        self.assertEqual(self.codes, [Code.SERVER_ERROR])
        self.assertEqual(self.values, [(None, True)])
        self.store.write(int(Op.UPDATE), b"k", b"w", self.codes.append)
        self.clock.advance(0)  # no waiting any more: refused at once
        self.assertEqual(self.codes, [Code.SERVER_ERROR, Code.SERVER_ERROR])
        self.assertEqual(self.store.stats()["failures"], 3)
        self.store.link.stop()

    def test_tooMuchInFlightIsRefused(self) -> None:
        from sockproto.binary import redisstore
        from sockproto.binary.codec import Code, Op

        self.store.firstLink.open()
        self.store.link.command = object()  # linked, as far as the store can tell
        self.store.inFlight = redisstore.MAX_IN_FLIGHT
        self.store.write(int(Op.DELETE), b"k", b"", self.codes.append)
        self.clock.advance(0)
        self.assertEqual(self.codes, [Code.SERVER_ERROR])

    def test_aListOrCountWithoutALinkFailsAndIsCounted(self) -> None:
        from sockproto.binary.redisstore import Unavailable

        self.store.firstLink.open()  # no longer waiting for a first link; none is up
        failures: list[Any] = []
        self.store.listKeys(b"").addErrback(failures.append)
        self.store.count().addErrback(failures.append)
        self.clock.advance(0)
        self.assertEqual([f.check(Unavailable) for f in failures], [Unavailable, Unavailable])
        self.assertEqual(self.store.stats()["failures"], 2)


class FakeRedisConnection:
    """
    Stands in for the link's command connection: records each command and
    answers it when the test says (a Deferred per command), as Redis would
    after a round trip.
    """

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.answers: list[Any] = []

    def execute_command(self, *args: Any) -> Any:
        from twisted.internet import defer

        self.commands.append(args)
        answer: defer.Deferred[Any] = defer.Deferred()
        self.answers.append(answer)
        return answer


class RedisStoreTurnTests(unittest.TestCase):
    """_sendTurn and _spread: a turn's requests become as few commands as order allows, and answers find their owner."""

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from sockproto.binary.redisstore import RedisStore

        self.clock = MemoryReactorClock()
        self.store = RedisStore(self.clock, parseRedisURL("redis://127.0.0.1"), prefix="p:")
        self.store.firstLink.open()
        self.redis = FakeRedisConnection()
        self.store.link.command = self.redis
        self.seen: list[Any] = []

    def read(self, key: bytes) -> None:
        self.store.fetch(key, lambda value, failure: self.seen.append(("read", key, value, failure)))

    def write(self, op: Any, key: bytes, value: bytes = b"") -> None:
        self.store.write(int(op), key, value, lambda code: self.seen.append(("write", key, code)))

    def test_readsAloneAreOneMGET(self) -> None:
        self.read(b"a")
        self.read(b"b")
        self.clock.advance(0)
        self.assertEqual(self.redis.commands, [("MGET", b"p:v:a", b"p:v:b")])
        self.redis.answers[0].callback([b"1", None])
        self.assertEqual(self.seen, [("read", b"a", b"1", None), ("read", b"b", None, None)])
        self.assertEqual(self.store.stats()["requests"], 2)

    def test_readsAndWritesTogetherAreOneScriptCallInOrder(self) -> None:
        from sockproto.binary.codec import Code, Op

        self.write(Op.CREATE, b"a", b"x")
        self.read(b"a")
        self.write(Op.UPDATE, b"b", b"y")
        self.clock.advance(0)
        [command] = self.redis.commands
        self.assertEqual(command[0], "EVALSHA")
        self.assertEqual(command[2:6], (4, b"p:v:a", b"p:v:a", b"p:v:b"))  # 3 value keys and the index...
        self.assertEqual(command[6], b"p:index")
        self.redis.answers[0].callback([1, b"x", 0])  # created, read, update refused (no such key)
        self.assertEqual(self.seen, [
            ("write", b"a", None), ("read", b"a", b"x", None), ("write", b"b", Code.NOT_FOUND),
        ])
        self.assertEqual(self.store.stats()["committed_writes"], 1)

    def test_aFailedCommandFailsEveryRequestOfIt(self) -> None:
        from twisted.python.failure import Failure

        from sockproto.binary.codec import Code, Op

        self.read(b"a")
        self.write(Op.DELETE, b"a")
        self.clock.advance(0)
        self.redis.answers[0].errback(Failure(ConnectionError("lost")))
        self.assertEqual(self.seen[0][:3], ("read", b"a", None))
        self.assertIsNotNone(self.seen[0][3])
        self.assertEqual(self.seen[1], ("write", b"a", Code.SERVER_ERROR))
        self.assertEqual(self.store.stats()["failures"], 2)
        self.flushLoggedErrors()

    def test_aListIsACommandOfItsOwnBetweenTheRuns(self) -> None:
        listed: list[Any] = []
        self.read(b"a")
        self.store.listKeys(b"k").addCallback(listed.append)
        self.read(b"b")
        self.clock.advance(0)
        self.assertEqual([c[0] for c in self.redis.commands], ["MGET", "ZRANGEBYLEX", "MGET"])
        for answer, value in zip(self.redis.answers, ([b"1"], [b"k1"], [None]), strict=True):
            answer.callback(value)
        self.assertEqual(listed, [[b"k1"]])
        self.assertEqual([entry[2] for entry in self.seen], [b"1", None])


class LaterStoreProtocolTests(unittest.TestCase):
    """The SPB protocol's branches for a store that answers later (Redis), with RedisStore on a fake connection."""

    def setUp(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from sockproto.binary.protocol import SPBFactory
        from sockproto.binary.redisstore import RedisStore

        self.clock = MemoryReactorClock()
        self.store = RedisStore(self.clock, parseRedisURL("redis://127.0.0.1"), prefix="p:")
        self.store.firstLink.open()
        self.redis = FakeRedisConnection()
        self.store.link.command = self.redis
        self.factory = SPBFactory(self.clock, self.store)
        peer = IPv4Address("TCP", "127.0.0.1", 4000)
        self.proto = self.factory.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.proto.makeConnection(self.transport)

    def frames(self) -> list[tuple[int, int, bytes]]:
        """(op, request id, payload) of each reply; an ERROR's op is its code, its payload its message."""
        import struct

        from sockproto.binary.codec import Op
        from tests.test_binary import parseFrames

        out = []
        for op, requestId, payload in parseFrames(self.transport.value()):
            if op == Op.ERROR:
                op, payload = struct.unpack(">H", payload[:2])[0], payload[2:]
            out.append((op, requestId, payload))
        self.transport.clear()
        return out

    def test_aReadInAOneFrameChunkWaitsForRedisAndKeepsItsPlace(self) -> None:
        from sockproto.binary.codec import REPLY, Code, Op, encodeKey, frame

        self.proto.dataReceived(frame(Op.READ, 1, encodeKey(b"k")))  # one frame: the inline branch
        self.proto.dataReceived(frame(Op.PING, 2))  # behind it: waits for its turn
        self.clock.advance(0)
        self.assertEqual(self.frames(), [])
        self.assertEqual(self.redis.commands, [("MGET", b"p:v:k")])
        self.redis.answers[0].callback([b"value"])
        self.assertEqual(self.frames(), [(Op.READ | REPLY, 1, b"value"), (Op.PING | REPLY, 2, b"")])
        # Not found, and a bad key, in one chunk (the loop's branch, then answerLater's).
        self.proto.dataReceived(frame(Op.READ, 3, encodeKey(b"gone")) + frame(Op.READ, 4, b"\x00"))
        self.clock.advance(0)
        self.redis.answers[1].callback([None])
        replies = self.frames()
        self.assertEqual([(op, rid) for op, rid, _ in replies], [(Code.NOT_FOUND, 3), (Code.BAD_REQUEST, 4)])

    def test_aReadRedisCannotAnswerIsAServerError(self) -> None:
        from twisted.python.failure import Failure

        from sockproto.binary.codec import Code, Op, encodeKey, frame

        self.proto.dataReceived(frame(Op.READ, 9, encodeKey(b"k")))
        self.clock.advance(0)
        self.redis.answers[0].errback(Failure(ConnectionError("lost")))
        [(code, requestId, message)] = self.frames()
        self.assertEqual((code, requestId), (Code.SERVER_ERROR, 9))
        self.assertIn(b"the store cannot answer", message)
        self.flushLoggedErrors()

    def test_listAndStatsAreAnsweredLaterInOrder(self) -> None:
        from sockproto.binary.codec import REPLY, Op, encodeKey, frame

        self.proto.dataReceived(frame(Op.LIST, 1, encodeKey(b"")) + frame(Op.READ, 2, encodeKey(b"a")))
        self.clock.advance(0)
        self.assertEqual([c[0] for c in self.redis.commands], ["ZRANGEBYLEX", "MGET"])
        self.redis.answers[1].callback([b"1"])  # the read's answer first: it still waits for the list
        self.assertEqual(self.frames(), [])
        self.redis.answers[0].callback([b"a"])
        replies = self.frames()
        self.assertEqual([(op, rid) for op, rid, _ in replies], [(Op.LIST | REPLY, 1), (Op.READ | REPLY, 2)])


class InterfacesTests(unittest.TestCase):
    def test_whatEachStoreIs(self) -> None:
        """Every store is an IKeyValueStore; only those holding the data set in this process are local ones."""
        from twisted.internet.task import Clock
        from twisted.internet.testing import MemoryReactorClock
        from zope.interface.verify import verifyObject

        from sockproto.binary.redisstore import RedisStore
        from sockproto.binary.store import MemoryStore
        from sockproto.interfaces import IKeyValueStore, ILocalKeyValueStore

        redis = RedisStore(MemoryReactorClock(), parseRedisURL("redis://127.0.0.1"))
        memory = MemoryStore(Clock())
        self.assertTrue(verifyObject(IKeyValueStore, redis))
        self.assertFalse(ILocalKeyValueStore.providedBy(redis))
        self.assertFalse(hasattr(redis, "get"))
        self.assertTrue(verifyObject(ILocalKeyValueStore, memory))
