"""SPB/1 without sockets: the codec, the store's semantics, every op and error, the crud twin."""

import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from sockproto.binary import codec
from sockproto.binary.codec import Code, Op, encodeKey, frame
from sockproto.binary.crud import CrudFactory
from sockproto.binary.protocol import SPBFactory
from sockproto.binary.replies import FLUSH_BYTES
from sockproto.binary.store import MemoryStore

PEER = IPv4Address("TCP", "127.0.0.1", 4000)
keys = st.binary(min_size=1, max_size=40).filter(lambda b: _utf8(b))


def _utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def parseFrames(data):
    frames = []
    while data:
        length, op, rid = codec.HEADER.unpack_from(data)
        frames.append((op, rid, data[9 : 4 + length]))
        data = data[4 + length :]
    return frames


class CodecTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=300))
    def test_frameRoundTrip(self, op, rid, payload):
        self.assertEqual(parseFrames(frame(op, rid, payload)), [(op, rid, payload)])

    @settings(max_examples=200, deadline=None)
    @given(keys, st.binary(max_size=100))
    def test_keyRoundTrip(self, key, rest):
        self.assertEqual(codec.parseKey(encodeKey(key) + rest), (key, rest))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(keys, max_size=20))
    def test_keyListRoundTrip(self, keyList):
        self.assertEqual(codec.parseKeyList(codec.encodeKeyList(keyList)), keyList)

    def test_badKeys(self):
        """Short, over-long, truncated and non-UTF-8 keys are BAD_REQUEST; an empty key only where allowed."""
        for payload in [b"", b"\x00", b"\x00\x00", b"\x00\x05ab", b"\x04\x01" + b"x" * 1025, b"\x00\x02\xff\xfe"]:
            self.assertRaises(codec.BadRequest, codec.parseKey, payload)
        self.assertEqual(codec.parseExactKey(b"\x00\x00", allowEmpty=True), b"")
        self.assertRaises(codec.BadRequest, codec.parseExactKey, b"\x00\x01ab")


class Harness:
    def __init__(self, factoryClass=SPBFactory, **kwargs):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.factory = factoryClass(self.clock, self.store, **kwargs)

    def connect(self):
        proto = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def commit(self):
        self.clock.advance(0)
        self.clock.advance(0)


def req(op, rid, payload=b""):
    return frame(op, rid, payload)


def kv(key, value=b""):
    return encodeKey(key) + value


class ProtocolTests(unittest.TestCase):
    def setUp(self):
        self.h = Harness()
        self.proto, self.transport = self.h.connect()

    def roundTrip(self, data, byteAtATime=False):
        if byteAtATime:
            for i in range(len(data)):
                self.proto.dataReceived(data[i : i + 1])
        else:
            self.proto.dataReceived(data)
        self.h.commit()
        out = parseFrames(self.transport.value())
        self.transport.clear()
        return out

    def test_everyOp(self):
        """Every op, pipelined in one chunk, gets its reply in request order."""
        requests = (
            req(Op.PING, 1)
            + req(Op.ECHO, 2, b"\x00\xffecho")
            + req(Op.CREATE, 3, kv(b"k1", b"v1"))
            + req(Op.READ, 4, encodeKey(b"k1"))
            + req(Op.UPDATE, 5, kv(b"k1", b""))
            + req(Op.READ, 6, encodeKey(b"k1"))
            + req(Op.CREATE, 7, kv(b"k2", b"v2"))
            + req(Op.LIST, 8, encodeKey(b""))
            + req(Op.DELETE, 9, encodeKey(b"k1"))
            + req(Op.LIST, 10, encodeKey(b"k"))
            + req(Op.STATS, 11)
        )
        for byteAtATime in (False, True):
            self.setUp()
            out = self.roundTrip(requests, byteAtATime)
            self.assertEqual([rid for _, rid, _ in out], list(range(1, 12)))
            self.assertEqual(
                [(op, payload) for op, _, payload in out[:10]],
                [
                    (0x81, b""),
                    (0x82, b"\x00\xffecho"),
                    (0x90, b""),
                    (0x91, b"v1"),
                    (0x92, b""),
                    (0x91, b""),
                    (0x90, b""),
                    (0x94, codec.encodeKeyList([b"k1", b"k2"])),
                    (0x93, b""),
                    (0x94, codec.encodeKeyList([b"k2"])),
                ],
            )
            self.assertEqual(out[10][0], 0xA0)
            stats = json.loads(out[10][2])
            self.assertEqual(stats["keys"], 1)
            self.assertEqual(stats["operations"]["create"], 2)
            self.assertGreater(stats["bytes_in"], 0)
            self.assertIn("uptime", stats)

    def test_errorCodes(self):
        """NOT_FOUND, EXISTS, UNKNOWN_OP and BAD_REQUEST come back with the request's id; the connection stays."""
        out = self.roundTrip(
            req(Op.READ, 1, encodeKey(b"none"))
            + req(Op.UPDATE, 2, kv(b"none", b"x"))
            + req(Op.DELETE, 3, encodeKey(b"none"))
            + req(Op.CREATE, 4, kv(b"a", b"1"))
            + req(Op.CREATE, 5, kv(b"a", b"2"))
            + req(0x42, 6)
            + req(Op.READ, 7, b"\x00")
            + req(Op.CREATE, 8, kv(b"", b"x"))
        )
        codes = [(rid, struct.unpack(">H", p[:2])[0]) for op, rid, p in out if op == Op.ERROR]
        self.assertEqual(
            codes,
            [(1, Code.NOT_FOUND), (2, Code.NOT_FOUND), (3, Code.NOT_FOUND), (5, Code.EXISTS),
             (6, Code.UNKNOWN_OP), (7, Code.BAD_REQUEST), (8, Code.BAD_REQUEST)],
        )
        self.assertFalse(self.transport.disconnecting)

    def test_readBehindAWriteSeesIt(self):
        out = self.roundTrip(
            req(Op.CREATE, 1, kv(b"x", b"1")) + req(Op.UPDATE, 2, kv(b"x", b"2")) + req(Op.READ, 3, encodeKey(b"x"))
        )
        self.assertEqual(out[2], (0x91, 3, b"2"))

    def test_otherConnectionsReadOnlyCommittedData(self):
        other, otherTransport = self.h.connect()
        self.proto.dataReceived(req(Op.CREATE, 1, kv(b"x", b"new")))
        other.dataReceived(req(Op.READ, 2, encodeKey(b"x")))
        self.assertEqual(parseFrames(otherTransport.value())[0][0], Op.ERROR)  # not committed yet
        self.assertEqual(self.transport.value(), b"")  # not acknowledged before the commit
        self.h.commit()
        self.assertEqual(parseFrames(self.transport.value()), [(0x90, 1, b"")])

    def test_shortFrameIsBadFrameAndCloses(self):
        self.proto.dataReceived(b"\x00\x00\x00\x02ab" + req(Op.PING, 1))
        out = parseFrames(self.transport.value())
        self.assertEqual(len(out), 1)
        self.assertEqual((out[0][0], out[0][1], struct.unpack(">H", out[0][2][:2])[0]), (Op.ERROR, 0, Code.BAD_FRAME))
        self.assertTrue(self.transport.disconnecting)

    def test_oversizedFrameAndForeignProtocols(self):
        for junk in [struct.pack(">I", (1 << 20) + 1), b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00"]:
            self.setUp()
            self.proto.dataReceived(junk)
            out = parseFrames(self.transport.value())
            got = [(op, rid, struct.unpack(">H", p[:2])[0]) for op, rid, p in out]
            self.assertEqual(got, [(Op.ERROR, 0, Code.TOO_LARGE)])
            self.assertTrue(self.transport.disconnecting)
            self.assertLess(len(self.proto._unprocessed), 100)

    def test_badFrameAfterPendingWriteKeepsOrder(self):
        self.proto.dataReceived(req(Op.CREATE, 1, kv(b"x", b"1")) + b"\x00\x00\x00\x01z")
        self.assertFalse(self.transport.disconnecting)
        self.h.commit()
        out = parseFrames(self.transport.value())
        self.assertEqual([(op, rid) for op, rid, _ in out], [(0x90, 1), (Op.ERROR, 0)])
        self.assertTrue(self.transport.disconnecting)

    def test_listTooBig(self):
        h = Harness(maxFrame=64)
        proto, transport = h.connect()
        for i in range(10):
            proto.dataReceived(req(Op.CREATE, i, kv(b"key%d" % i, b"v")))
        h.commit()
        transport.clear()
        proto.dataReceived(req(Op.LIST, 99, encodeKey(b"")))
        out = parseFrames(transport.value())
        self.assertEqual(struct.unpack(">H", out[0][2][:2])[0], Code.TOO_LARGE)

    def test_theProtocolIsItsTransportsProducer(self):
        self.assertIs(self.transport.producer, self.proto)
        self.assertTrue(self.transport.streaming)


class BufferedTransport(StringTransport):
    """
    A StringTransport that pauses its producer as Twisted's sockets do: when
    more than ``bufferSize`` bytes are unsent; :meth:`drain` is the peer
    reading everything.
    """

    def __init__(self, bufferSize, **kwargs):
        StringTransport.__init__(self, **kwargs)
        self.bufferSize = bufferSize
        self.unsent = 0
        self.highest = 0
        self.producerPaused = False
        self.aborted = False

    def write(self, data):
        StringTransport.write(self, data)
        self.unsent += len(data)
        self.highest = max(self.highest, self.unsent)
        if self.producer is not None and self.unsent > self.bufferSize and not self.producerPaused:
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self):
        self.unsent = 0
        if self.producerPaused:
            self.producerPaused = False
            self.producer.resumeProducing()

    def abortConnection(self):
        self.aborted = True
        StringTransport.abortConnection(self)


class BackPressureTests(unittest.TestCase):
    """A client that asks for big replies and does not read them is not read from: memory stays bounded."""

    value = b"v" * 100_000
    limit = 256_000

    def connect(self, factoryClass=SPBFactory, **kwargs):
        self.h = Harness(factoryClass, maxOutputBuffer=self.limit, sendTimeout=30, **kwargs)
        proto = self.h.factory.buildProtocol(PEER)
        transport = BufferedTransport(self.limit, peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def drainAll(self, transport, expected, parse):
        """Read like a slow client, one drain at a time, until ``expected`` replies came."""
        replies = []
        for _ in range(10_000):
            replies += parse(transport.value())
            transport.clear()
            if len(replies) >= expected:
                break
            self.assertLessEqual(transport.highest, self.limit + FLUSH_BYTES + len(self.value) + 100)
            transport.drain()
            self.h.commit()
        return replies

    def assertPipelineBounded(self, proto, transport, first, requests, feed):
        self.h.commit()
        transport.clear()
        transport.highest = 0
        feed(proto, requests)
        self.h.commit()
        self.assertEqual(transport.producerState, "paused", "reading stopped")
        self.assertLessEqual(transport.highest, self.limit + FLUSH_BYTES + len(self.value) + 100)

    def test_bigRepliesToPipelinedReads(self):
        for feed in (lambda p, data: p.dataReceived(data), lambda p, data: [p.dataReceived(data[i : i + 7])
                                                                              for i in range(0, len(data), 7)]):
            proto, transport = self.connect()
            proto.dataReceived(req(Op.CREATE, 0, kv(b"big", self.value)))
            self.h.commit()
            reads = b"".join(req(Op.READ, i, encodeKey(b"big")) for i in range(1, 201))
            self.assertPipelineBounded(proto, transport, 0, reads, feed)
            replies = self.drainAll(transport, 200, parseFrames)
            self.assertEqual([(op, rid) for op, rid, _ in replies], [(0x91, i) for i in range(1, 201)])
            self.assertTrue(all(payload == self.value for _, _, payload in replies))
            transport.drain()
            self.assertEqual(transport.producerState, "producing", "reading again once drained")

    def test_readsQueuedBehindAWrite(self):
        proto, transport = self.connect()
        proto.dataReceived(req(Op.CREATE, 0, kv(b"big", self.value)))
        self.h.commit()
        transport.clear()
        proto.dataReceived(req(Op.UPDATE, 1, kv(b"big", self.value)) +
                           b"".join(req(Op.READ, i, encodeKey(b"big")) for i in range(2, 200)))
        self.h.commit()  # the write commits: the reads behind it are answered, until the buffer is full
        self.assertLessEqual(transport.highest, self.limit + FLUSH_BYTES + len(self.value) + 100)
        replies = self.drainAll(transport, 199, parseFrames)
        self.assertEqual([rid for _, rid, _ in replies], list(range(1, 200)))

    def test_aClientThatNeverReadsIsCutOffAfterTheSendTimeout(self):
        proto, transport = self.connect()
        proto.dataReceived(req(Op.CREATE, 0, kv(b"big", self.value)))
        self.h.commit()
        proto.dataReceived(b"".join(req(Op.READ, i, encodeKey(b"big")) for i in range(1, 50)))
        self.h.clock.advance(29)
        transport.drain()  # it read something in time: the clock starts again
        self.h.clock.advance(29)
        self.assertFalse(transport.aborted)
        self.h.clock.advance(2)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.h.factory.errors["slow_consumer"], 1)

    def test_crudReadsOfBigValues(self):
        proto, transport = self.connect(CrudFactory, maxLineLength=200_000)
        proto.dataReceived(b"create big " + self.value + b"\n")
        self.h.commit()
        lines = b"read big\n" * 200
        self.assertPipelineBounded(proto, transport, 0, lines, lambda p, data: p.dataReceived(data))
        replies = self.drainAll(transport, 200, lambda data: data.splitlines())
        self.assertEqual(replies, [b"OK " + self.value] * 200)


class CrudTests(unittest.TestCase):
    def test_session(self):
        """A whole crud session: every command, its errors, non-UTF-8 input, then quit closes after the replies."""
        h = Harness(CrudFactory)
        proto, transport = h.connect()
        lines = (
            b"create k hello world\ncreate k again\nread k\nupdate k v2\nread k\ncreate k2 x\n"
            b"list\nlist k2\ndelete k2\nread k2\nbogus\nupdate nokey v\ndelete\n\xff\xfe\nquit\nread k\n"
        )
        proto.dataReceived(lines)
        h.commit()
        out = transport.value().decode().splitlines()
        self.assertEqual(
            out,
            ["OK sockproto crud ready; type help", "OK", "ERR exists", "OK hello world", "OK", "OK v2", "OK",
             "OK 2", "k", "k2", "OK 1", "k2", "OK", "ERR not found", "ERR unknown command 'bogus'; type help",
             "ERR not found", "ERR a key is needed", "ERR not UTF-8 text", "OK bye"],
        )
        self.assertTrue(transport.disconnecting)

    def test_sharedStoreWithBinary(self):
        h = Harness(CrudFactory)
        proto, transport = h.connect()
        proto.dataReceived(b"create shared from-crud\n")
        h.commit()
        binary = SPBFactory(h.clock, h.store)
        bproto = binary.buildProtocol(PEER)
        btransport = StringTransport()
        bproto.makeConnection(btransport)
        bproto.dataReceived(req(Op.READ, 1, encodeKey(b"shared")))
        self.assertEqual(parseFrames(btransport.value()), [(0x91, 1, b"from-crud")])


class WriteProblemTests(unittest.TestCase):
    """A write the store refuses (its disk full) is answered with why, on both faces; other errors as before."""

    def test_theReasonReachesTheClient(self):
        h = Harness()
        proto, transport = h.connect()
        h.store.refusingWrites = h.store.diskFull = True
        proto.dataReceived(req(Op.CREATE, 1, kv(b"k", b"v")))
        h.commit()
        [(op, rid, payload)] = parseFrames(transport.value())
        self.assertEqual((op, rid), (Op.ERROR | 0x80, 1))
        self.assertEqual(codec.parseError(payload), (Code.SERVER_ERROR, h.store.writeProblem))
        self.assertIn("disk is full", h.store.writeProblem)
        crud = Harness(CrudFactory)
        crud.store.refusingWrites = crud.store.diskFull = True
        proto, transport = crud.connect()
        transport.clear()
        proto.dataReceived(b"create k v\nread k\n")
        crud.commit()
        self.assertEqual(transport.value().decode().splitlines(), [f"ERR {crud.store.writeProblem}", "ERR not found"])


class CodecDocumentationTests(unittest.TestCase):
    def test_theExamplesInTheCodecDocstringRun(self):
        """The codec's documented examples are true."""
        import doctest

        failed, attempted = doctest.testmod(codec)
        self.assertEqual((failed, attempted > 0), (0, True))


class SpecificationExampleTests(unittest.TestCase):
    def test_theOversizedFrameExampleIsTheRealReply(self):
        """docs/binary-protocol.rst shows, byte for byte, what the server answers to a frame over --max-frame."""
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "docs" / "binary-protocol.rst").read_text()
        block = text.split("Error for a frame over --max-frame", 1)[1].split("::", 1)[1].split("\n\n")[1]
        documented = bytes.fromhex(block.replace("\n", " "))
        h = Harness()
        proto, transport = h.connect()
        proto.dataReceived(struct.pack(">I", 2_000_000) + b"\x11")
        self.assertEqual(transport.value(), documented)
        self.assertTrue(transport.disconnecting)


requests = st.lists(
    st.one_of(
        st.tuples(st.just(Op.READ), st.sampled_from([b"a", b"bb", b"missing", b"\xff\xfe"])),
        st.tuples(st.sampled_from([Op.CREATE, Op.UPDATE, Op.DELETE]), st.sampled_from([b"a", b"bb", b"new"])),
        st.tuples(st.sampled_from([Op.PING, Op.STATS, Op.LIST, 0x7F]), st.just(b"")),
    ),
    max_size=30,
)


class ChunkingTests(unittest.TestCase):
    """Any mix of requests gets the same replies, in the same order, in one chunk or a byte at a time."""

    def run_(self, ops, chunked, cuts=()):
        h = Harness()
        h.store._load([(b"a", b"value of a"), (b"bb", b"value of bb")])
        proto, transport = h.connect()
        wire = b""
        ends = []
        for i, (op, key) in enumerate(ops):
            ends.append(len(wire))
            if op == Op.READ:
                wire += req(op, i, encodeKey(key))
            elif op in (Op.CREATE, Op.UPDATE):
                wire += req(op, i, kv(key, b"v%d" % i))
            elif op == Op.DELETE:
                wire += req(op, i, encodeKey(key))
            elif op == Op.LIST:
                wire += req(op, i, encodeKey(b""))
            else:
                wire += req(op, i)
        if chunked == "frames":
            # One frame per chunk: the single-READ path is taken where it can be.
            ends.append(len(wire))
            for start, end in zip(ends, ends[1:], strict=False):
                proto.dataReceived(wire[start:end])
        elif chunked == "cuts":
            points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
            for start, end in zip(points, points[1:], strict=False):
                proto.dataReceived(wire[start:end])
        elif chunked:
            proto.dataReceived(wire)
        else:
            for i in range(len(wire)):
                proto.dataReceived(wire[i : i + 1])
        h.commit()
        frames = [(op, rid, payload) for op, rid, payload in parseFrames(transport.value()) if op != Op.STATS | 0x80]
        return frames, h.factory.operations

    @settings(max_examples=150, deadline=None)
    @given(requests)
    def test_sameRepliesWhateverTheChunking(self, ops):
        whole, counted = self.run_(ops, chunked=True)
        bytewise, countedBytewise = self.run_(ops, chunked=False)
        self.assertEqual(whole, bytewise)
        self.assertEqual(counted, countedBytewise)
        self.assertEqual([rid for _, rid, _ in whole], [i for i, (op, _) in enumerate(ops) if op != Op.STATS])
        framewise, countedFramewise = self.run_(ops, chunked="frames")
        self.assertEqual(framewise, bytewise)
        self.assertEqual(countedFramewise, countedBytewise)

    @settings(max_examples=100, deadline=None)
    @given(requests, st.lists(st.integers(0, 600), max_size=8))
    def test_sameRepliesWhereverTheChunksEnd(self, ops, cuts):
        self.assertEqual(self.run_(ops, chunked="cuts", cuts=cuts), self.run_(ops, chunked=False))

    def test_aStoredKeyReadInAnOversizedFrameIsStillRefused(self):
        h = Harness(maxFrame=16)
        h.store._load([(b"k" * 20, b"v")])
        proto, transport = h.connect()
        proto.dataReceived(req(Op.READ, 1, encodeKey(b"k" * 20)))
        [(op, rid, payload)] = parseFrames(transport.value())
        self.assertEqual((op, rid, payload[:2]), (Op.ERROR, 0, b"\x00\x05"))  # TOO_LARGE, and closed
        self.assertTrue(transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(
        requests,
        # Junk, or junk that starts like a frame (a small length: short frames are the edge cases).
        st.one_of(
            st.binary(max_size=40),
            st.builds(lambda n, rest: struct.pack(">I", n) + rest, st.integers(0, 12), st.binary(max_size=20)),
        ),
        st.lists(st.integers(0, 400), max_size=6),
    )
    def test_junkAfterRequestsNeverRaisesAndGetsTheSameAnswer(self, ops, junk, cuts):
        """Requests then arbitrary bytes, in random chunks or a byte at a time: the same replies, no exception."""

        def run(pieces):
            h = Harness()
            h.store._load([(b"a", b"value of a")])
            proto, transport = h.connect()
            for piece in pieces:
                proto.dataReceived(piece)
            h.commit()
            return transport.value(), transport.disconnecting

        wire = b"".join(req(Op.READ, i, encodeKey(key)) for i, (_, key) in enumerate(ops)) + junk
        points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
        chunked = [wire[a:b] for a, b in zip(points, points[1:], strict=False)]
        bytewise = [wire[i : i + 1] for i in range(len(wire))]
        self.assertEqual(run(chunked), run(bytewise))

    def test_framesTooShortForAnOpAreRefusedWhereverTheyAre(self):
        """A frame of length 0 to 4 (no op, no request id), alone, after a request, or ending a chunk: BAD_FRAME."""
        for length in range(5):
            for before in (b"", req(Op.PING, 1)):
                h = Harness()
                proto, transport = h.connect()
                proto.dataReceived(before + struct.pack(">I", length) + b"x" * length)
                frames = parseFrames(transport.value())
                self.assertEqual(frames[-1][:2], (Op.ERROR, 0), (length, before))
                self.assertEqual(frames[-1][2][:2], b"\x00\x06")  # BAD_FRAME
                self.assertTrue(transport.disconnecting)

    def test_readsSeeAReloadedStore(self):
        h = Harness()
        h.store._load([(b"k", b"old")])
        proto, transport = h.connect()
        h.store._load([(b"k", b"new")])
        proto.dataReceived(req(Op.READ, 1, encodeKey(b"k")))
        self.assertEqual(parseFrames(transport.value()), [(Op.READ | 0x80, 1, b"new")])

    def test_readsAreCountedAndTimed(self):
        h = Harness()
        h.store._load([(b"k", b"v")])
        proto, transport = h.connect()
        proto.dataReceived(b"".join(req(Op.READ, i, encodeKey(b"k")) for i in range(10)))
        self.assertEqual(len(parseFrames(transport.value())), 10)
        self.assertEqual(h.factory.operations[Op.READ], 10)
        self.assertEqual(h.factory.latency[Op.READ].count, 10)
        for i in range(5):  # one READ per chunk
            proto.dataReceived(req(Op.READ, i, encodeKey(b"k")))
        self.assertEqual(len(parseFrames(transport.value())), 15)
        self.assertEqual(h.factory.operations[Op.READ], 15)
        self.assertEqual(h.factory.latency[Op.READ].count, 15)
