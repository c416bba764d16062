# -*- test-case-name: tests.test_binary,tests.test_binary_client,tests.test_binary_redisstore -*-
"""The SPB/1 server protocol: frames in, store calls, replies out in request order."""

from __future__ import annotations

import json
import struct
import time
from bisect import bisect_left as _bisect
from time import monotonic
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sockproto.binary.codec import (
    BODY_KEY_OFFSET,
    DEFAULT_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    KEY_OFFSET,
    LENGTH_SIZE,
    MAX_KEY,
    MIN_LENGTH,
    OP_ID,
    REPLY,
    U16,
    U32,
    BadRequest,
    Code,
    Op,
    encodeKeyList,
    errorFrame,
    frame,
    parseExactKey,
    parseKey,
)
from sockproto.binary.replies import FLUSH_BYTES, OrderedReplies, StoreFactory
from sockproto.interfaces import IKeyValueStore
from sockproto.server.connections import RequestReplyProtocol
from sockproto.server.latency import BOUNDS as _BOUNDS
from sockproto.server.latency import LatencyHistogram

log = Logger()

WRITES = frozenset({int(Op.CREATE), int(Op.UPDATE), int(Op.DELETE)})
# Plain ints: an enum member lookup costs a tenth of a microsecond per request.
_READ, _DELETE, _BAD_REQUEST = int(Op.READ), int(Op.DELETE), int(Code.BAD_REQUEST)
#: What a store shared through Redis answers later (the others need no store).
_STORE_READS = frozenset({_READ, int(Op.LIST), int(Op.STATS)})
_READ_REPLY = _READ | REPLY
_LENGTH = U32.unpack_from
_ID_KEY_SIZE = struct.Struct(">IH").unpack_from  # a READ's request id and key length
_HEADER_FROM = HEADER.unpack_from
_HEADER_PACK = HEADER.pack
_U16_FROM = U16.unpack_from
_ID = struct.Struct(">I")
OP_NAMES = {op.value: op.name.lower() for op in Op}


def opName(op: int) -> str:
    """An op's name for STATS and the metrics: ``read``, or ``0x7f`` for an unknown one."""
    return OP_NAMES.get(op, f"0x{op:02x}")


# The fields of a reply's slot (a list, as every entry of OrderedReplies' queue is).
#: The reply, None until the store has answered (OrderedReplies reads it there).
_REPLY = 0
#: The connection the reply is owed to.
_PROTOCOL = 1
#: A write's slot: its success reply, made when the request came (the error replies carry its request id).
_SUCCESS = 2
#: A READ's slot: its request id.
_REQUEST_ID = 2
#: When the request came (``time.monotonic``), for its latency.
_ARRIVAL = 3


class _Slot(list):
    """
    A reply's place in its connection's :class:`OrderedReplies` queue, for a
    request the store answers later: ``[reply or None, protocol, ...]`` (the
    fields named above).  A list, as every queue entry is; a class for its
    methods, which cost half of a closure made per request.
    """

    __slots__ = ()

    def _filled(self, reply: bytes, op: int, received: float) -> None:
        self[_REPLY] = reply
        proto: SPBProtocol = self[_PROTOCOL]
        latency = proto.factory.latency[op]  # its observe(), inline
        elapsed = monotonic() - received
        latency.counts[_bisect(_BOUNDS, elapsed)] += 1
        latency.sum += elapsed
        owed = proto._owed
        if owed and owed[0] is self:
            if len(owed) == 1 and proto._batch is None and not proto.replies.blocked:
                # The only reply owed, outside a chunk's batch: flush, send
                # and transmit in one (four calls fewer on every request).
                owed.popleft()
                proto._write(reply)
                if proto._overMark:
                    proto._checkOwed()
                if proto.replies.onEmpty is not None:
                    proto.replies.onEmpty()
            else:
                proto.replies.flush()


class _WriteSlot(_Slot):
    """A write's slot, and the ``done`` the store calls: ``[reply, protocol, success reply, arrival]``."""

    __slots__ = ()

    def done(self, code: int | None) -> None:
        success: bytes = self[_SUCCESS]
        if code is not None:
            requestId = _ID.unpack_from(success, LENGTH_SIZE + 1)[0]
            factory = self[_PROTOCOL].factory
            message = _MESSAGES[code]
            if code == Code.SERVER_ERROR:
                message = factory.store.writeProblem or message  # e.g. the disk is full
            reply = factory.error(requestId, code, message)
        else:
            reply = success
        self._filled(reply, success[LENGTH_SIZE] & ~REPLY, self[_ARRIVAL])


class _ReadSlot(_Slot):
    """A READ's slot when the store answers later (Redis): ``[reply, protocol, request id, arrival]``."""

    __slots__ = ()

    def got(self, value: bytes | None, failure: Any) -> None:
        requestId = self[_REQUEST_ID]
        if failure is not None:
            factory = self[_PROTOCOL].factory
            reply = factory.error(requestId, Code.SERVER_ERROR, f"the store cannot answer: {failure.value}")
        elif value is None:
            reply = self[_PROTOCOL].factory.error(requestId, Code.NOT_FOUND, "no such key")
        else:
            reply = _HEADER_PACK(len(value) + MIN_LENGTH, _READ_REPLY, requestId) + value
        self._filled(reply, _READ, self[_ARRIVAL])


class SPBProtocol(RequestReplyProtocol):
    """
    One SPB/1 client: frames parsed in one pass over each chunk, store calls,
    replies in request order (:class:`OrderedReplies`).

    :ivar MAX_LENGTH: the longest frame accepted (``--max-frame``).
    :ivar paused: True while the peer owes a drain or the connection is
        closing: no more frames are taken from what was read.
    """

    factory: SPBFactory
    closing = False
    MAX_LENGTH = DEFAULT_MAX_FRAME
    paused = False
    _unprocessed = b""
    _batch: list[bytes] | None = None
    _batchBytes = 0

    def connectionMade(self) -> None:
        RequestReplyProtocol.connectionMade(self)
        self.MAX_LENGTH = self.factory.maxFrame
        self.produceReplies(self.factory.maxOutputBuffer, self.factory.sendTimeout)
        self.replies = OrderedReplies(self.send)
        self._owed = self.replies.queue  # replies waiting for their turn
        local = self.factory.localStore
        self._localGet = local.get if local is not None else None
        self._storeWrite = self.factory.store.write
        # Instance attributes, not the classes' defaults: the read path finds them faster.
        self._unprocessed = b""
        self.paused = False
        self._overMark = False

    def send(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
            self._batchBytes += len(data)
            if self._batchBytes >= FLUSH_BYTES:
                self._flushBatch()
            return
        self.transmit(data)

    def dataReceived(self, data: bytes) -> None:
        # One pass over the chunk, so that a READ of a key this process holds
        # is answered inline, without a call per step: at one request per
        # chunk, the calls were most of a read's cost.  Anything else, and a
        # READ that does not find its key (the error needs the key checked),
        # goes through stringReceived.
        self.heard = True
        size = len(data)
        self.traffic.bytesIn += size
        if size >= HEADER_SIZE and not self._unprocessed and not self.paused:
            length, op, requestId = _HEADER_FROM(data)
            if length + LENGTH_SIZE == size and length <= self.MAX_LENGTH:
                # The commonest chunk: exactly one frame, so at most one
                # reply now.  No batch, no loop.
                self._received = received = monotonic()
                if op == _READ and size > KEY_OFFSET and _U16_FROM(data, HEADER_SIZE)[0] + KEY_OFFSET == size:
                    value = None
                    if self._localGet is None:
                        # The store answers later (Redis): the READ takes its place in the order.
                        key = data[KEY_OFFSET:]
                        if len(key) <= MAX_KEY and key.isascii():
                            self.factory.operations[_READ] += 1
                            slot = _ReadSlot((None, self, requestId, received))
                            self._owed.append(slot)
                            self.factory.store.fetch(key, slot.got)
                            return
                    elif not self._owed:
                        # A stored key is valid (UTF-8, not too long): no checks when found.
                        value = self._localGet(data[KEY_OFFSET:])
                    if value is not None:
                        self._write(_HEADER_PACK(len(value) + MIN_LENGTH, _READ_REPLY, requestId) + value)
                        if self._overMark:
                            self._checkOwed()
                        factory = self.factory
                        factory.operations[_READ] += 1
                        latency = factory.readLatency  # its observe(), inline
                        elapsed = monotonic() - received
                        latency.counts[_bisect(_BOUNDS, elapsed)] += 1
                        latency.sum += elapsed
                        return
                if op in WRITES:
                    self.factory.operations[op] += 1
                    self.handleWrite(op, requestId, data[HEADER_SIZE:])
                else:
                    self.stringReceived(data[LENGTH_SIZE:])
                if self.partialSince is not None:
                    self.noteUnfinished(False, True)
                return
        self._received = received = monotonic()
        if self._unprocessed:
            data = self._unprocessed + data
        # Replies to all the requests of one chunk go out in one write.
        self._batch = batch = []
        self._batchBytes = 0
        get = self._localGet
        queue = self._owed
        end = len(data)
        offset = reads = inline = 0
        try:
            while end - offset >= LENGTH_SIZE and not self.paused:
                (length,) = _LENGTH(data, offset)
                if length > self.MAX_LENGTH:
                    self.lengthLimitExceeded(length)
                    return
                start = offset + LENGTH_SIZE
                offset = start + length
                if offset > end:
                    offset = start - LENGTH_SIZE
                    break
                if length > BODY_KEY_OFFSET and data[start] == _READ and get is not None and not queue:
                    # A stored key is valid (UTF-8, not too long): no checks when found.
                    requestId, size = _ID_KEY_SIZE(data, start + 1)
                    if size + BODY_KEY_OFFSET == length:
                        value = get(data[start + BODY_KEY_OFFSET : offset])
                        if value is not None:
                            batch.append(_HEADER_PACK(len(value) + MIN_LENGTH, _READ_REPLY, requestId) + value)
                            reads += 1
                            inline += len(value)
                            if inline >= FLUSH_BYTES:
                                inline = 0
                                self._flushBatch()
                            continue
                self.stringReceived(data[start:offset])
        finally:
            self._batch = None
            self._unprocessed = data[offset:] if offset < end else b""
            if batch:
                self.transmit(batch[0] if len(batch) == 1 else b"".join(batch))
            if reads:
                factory = self.factory
                factory.operations[_READ] += reads
                factory.readLatency.observeMany(monotonic() - received, reads)
        # Frames held back while blocked are not the peer's slowness.
        if self._unprocessed or self.partialSince is not None:
            self.noteUnfinished(bool(self._unprocessed) and not self.paused, offset > 0)

    def _flushBatch(self) -> None:
        """Big replies go now, so a full transport pauses the parsing of this chunk (holdInput) before more are made."""
        batch = self._batch
        assert batch is not None
        self._batchBytes = 0
        joined = b"".join(batch)
        batch.clear()
        self.transmit(joined)

    def holdInput(self) -> None:
        self.paused = True  # dataReceived keeps the rest of the chunk in _unprocessed
        self.replies.blocked = True

    def releaseInput(self) -> None:
        self.replies.blocked = False
        self.replies.flush()
        if not self.closing and not self.outputBlocked:
            self.paused = False
            self.dataReceived(b"")  # the requests held back

    def lengthLimitExceeded(self, length: int) -> None:
        self.fatal(Code.TOO_LARGE, f"frame of {length} bytes is over the limit of {self.MAX_LENGTH}")

    def stringReceived(self, body: bytes) -> None:
        if self.closing:
            return
        if len(body) < MIN_LENGTH:
            self.fatal(Code.BAD_FRAME, f"frame length {len(body)} is under {MIN_LENGTH}")
            return
        op, requestId = OP_ID.unpack_from(body)
        payload = body[MIN_LENGTH:]
        factory = self.factory
        factory.operations[op] += 1
        if op in WRITES:
            self.handleWrite(op, requestId, payload)
        elif not factory.storeIsLocal and op in _STORE_READS:
            self.answerLater(op, requestId, payload)
        elif self.replies.queue:
            # Behind a write of this connection: answered when its turn comes.
            received = self._received

            def later() -> bytes:
                reply = factory.respond(op, requestId, payload)
                factory.latencyFor(op).observe(monotonic() - received)
                return reply

            self.replies.queue.append([later])
        else:
            self.send(factory.respond(op, requestId, payload))
            factory.latencyFor(op).observe(monotonic() - self._received)

    def answerLater(self, op: int, requestId: int, payload: bytes) -> None:
        """A read the store answers later (Redis): its reply keeps its place in the order."""
        replies = self.replies
        factory = self.factory
        received = self._received
        if op == _READ:
            # The common case, without a Deferred: a read is most of the traffic.
            try:
                key = parseExactKey(payload)
            except BadRequest as e:
                replies.ready(factory.error(requestId, Code.BAD_REQUEST, str(e)))
                return
            slot = _ReadSlot((None, self, requestId, received))
            self._owed.append(slot)
            factory.store.fetch(key, slot.got)
            return
        entry = replies.slot()

        def answered(data: bytes) -> None:
            replies.fill(entry, data)
            factory.latencyFor(op).observe(monotonic() - received)

        factory.respondLater(op, requestId, payload).addCallback(answered)

    def handleWrite(self, op: int, requestId: int, payload: bytes) -> None:
        # parseKey's checks, inline for the common case (an ASCII key is
        # UTF-8); anything unusual goes to parseKey for its error message.
        size = len(payload)
        keySize = _U16_FROM(payload)[0] if size >= 2 else 0
        end = 2 + keySize
        key = payload[2:end]
        if 0 < keySize <= MAX_KEY and end <= size and (op != _DELETE or end == size) and key.isascii():
            value = payload[end:]
        else:
            try:
                if op == _DELETE:
                    key, value = parseExactKey(payload), b""
                else:
                    key, value = parseKey(payload)
            except BadRequest as e:
                self.replies.ready(self.factory.error(requestId, _BAD_REQUEST, str(e)))
                return
        slot = _WriteSlot((None, self, _HEADER_PACK(MIN_LENGTH, op | REPLY, requestId), self._received))
        self._owed.append(slot)
        refused = self._storeWrite(op, key, value, slot.done)
        if refused is not None:
            slot.done(refused)

    def fatal(self, code: int, message: str) -> None:
        """The stream cannot be trusted any more: answer (request id 0) and close."""
        self.closing = True
        self.paused = True  # stop dataReceived's parsing loop
        log.info("binary {peer}: {message}; closing", peer=self.peer, message=message)
        self.replies.ready(self.factory.error(0, code, message))
        self.replies.whenAnswered(self.closeConnection)

    def serverStopping(self) -> None:
        # Requests already read are answered (their writes committed by the
        # store before it closes); nothing read after this is acted on.
        self.closing = True
        self.paused = True
        self.replies.whenAnswered(self.closeConnection)


_CODE_NAMES = {code.value: code.name.lower() for code in Code}
_MESSAGES: dict[int, str] = {
    Code.NOT_FOUND: "no such key",
    Code.EXISTS: "the key exists",
    Code.SERVER_ERROR: "the write could not be committed",
}


class SPBFactory(StoreFactory):
    """The binary service's connections: the store, op counts and latency histograms for STATS and the metrics."""

    serviceName = "binary"
    protocol = SPBProtocol

    def __init__(
        self, clock: IReactorTime, store: IKeyValueStore, maxFrame: int = DEFAULT_MAX_FRAME, **settings: Any
    ) -> None:
        StoreFactory.__init__(self, clock, store, **settings)
        self.maxFrame = maxFrame
        #: op -> requests (a list: the count is on every request's path).
        self.operations = [0] * 256
        #: op -> latency from a request's arrival to its reply (known ops only).
        self.latency: dict[int, LatencyHistogram] = {}
        self.readLatency = self.latencyFor(_READ)
        for op in WRITES:
            self.latencyFor(op)  # made now: a write's slot looks its op up directly
        self.started = time.monotonic()

    def operationCounts(self) -> list[tuple[int, int]]:
        """(op, requests) of every op seen, by op."""
        return [(op, count) for op, count in enumerate(self.operations) if count]

    def latencyFor(self, op: int) -> LatencyHistogram:
        histogram = self.latency.get(op)
        if histogram is None:
            histogram = LatencyHistogram()
            if op in OP_NAMES:
                self.latency[op] = histogram
        return histogram

    def metricsSnapshot(self) -> dict[str, Any]:
        return dict(
            StoreFactory.metricsSnapshot(self),
            operations={opName(op): count for op, count in self.operationCounts()},
            latency={OP_NAMES[op]: (list(h.cumulative()), h.sum) for op, h in self.latency.items()},
        )

    def error(self, requestId: int, code: int, message: str) -> bytes:
        """An error reply, counted by kind."""
        self.errors[_CODE_NAMES.get(code, "unknown")] += 1
        return errorFrame(requestId, code, message)

    @property
    def refusal(self) -> bytes:  # type: ignore[override]
        return errorFrame(0, Code.SERVER_ERROR, "too many connections")

    def respond(self, op: int, requestId: int, payload: bytes) -> bytes:
        """The reply to a request that is not a write."""
        try:
            if op == _READ:
                assert self.localStore is not None  # a store that answers later is asked in answerLater
                value = self.localStore.get(parseExactKey(payload))
                if value is None:
                    return self.error(requestId, Code.NOT_FOUND, "no such key")
                return frame(_READ | REPLY, requestId, value)
            if op == Op.PING:
                return frame(Op.PING | REPLY, requestId)
            if op == Op.ECHO:
                return frame(Op.ECHO | REPLY, requestId, payload)
            if op == Op.LIST:
                assert self.localStore is not None
                keys = self.localStore.keys(parseExactKey(payload, allowEmpty=True))
                body = encodeKeyList(keys)
                if len(body) + MIN_LENGTH > self.maxFrame:
                    return self.error(requestId, Code.TOO_LARGE, f"{len(keys)} keys do not fit in a frame")
                return frame(Op.LIST | REPLY, requestId, body)
            if op == Op.STATS:
                if payload:
                    raise BadRequest("STATS takes no payload")
                return frame(Op.STATS | REPLY, requestId, json.dumps(self.stats()).encode())
        except BadRequest as e:
            return self.error(requestId, Code.BAD_REQUEST, str(e))
        return self.error(requestId, Code.UNKNOWN_OP, f"unknown op 0x{op:02x}")

    def respondLater(self, op: int, requestId: int, payload: bytes) -> defer.Deferred[bytes]:
        """The reply to a LIST or STATS the store answers later; never fails (SERVER_ERROR instead)."""
        store = self.store
        try:
            if op == Op.LIST:

                def listed(keys: list[bytes]) -> bytes:
                    body = encodeKeyList(keys)
                    if len(body) + MIN_LENGTH > self.maxFrame:
                        return self.error(requestId, Code.TOO_LARGE, f"{len(keys)} keys do not fit in a frame")
                    return frame(Op.LIST | REPLY, requestId, body)

                d = store.listKeys(parseExactKey(payload, allowEmpty=True)).addCallback(listed)
            else:
                if payload:
                    raise BadRequest("STATS takes no payload")
                d = store.count().addCallback(
                    lambda _: frame(Op.STATS | REPLY, requestId, json.dumps(self.stats()).encode())
                )
        except BadRequest as e:
            return defer.succeed(self.error(requestId, Code.BAD_REQUEST, str(e)))

        def failed(failure: Any) -> bytes:
            return self.error(requestId, Code.SERVER_ERROR, f"the store cannot answer: {failure.getErrorMessage()}")

        return d.addErrback(failed)

    def stats(self) -> dict[str, Any]:
        return {
            "uptime": round(time.monotonic() - self.started, 3),
            "connections": len(self.connections),
            "connections_total": self.totalConnections,
            "keys": self.store.stats()["keys"],
            "operations": {opName(op): n for op, n in self.operationCounts()},
            "bytes_in": sum(t.bytesIn for t in self.traffic.values()),
            "bytes_out": sum(t.bytesOut for t in self.traffic.values()),
            "store": self.store.stats(),
        }
