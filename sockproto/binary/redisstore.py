# -*- test-case-name: tests.test_binary_redisstore -*-
"""The key-value store over a shared Redis (``--db redis://...``): front-ends hold no data.

Every sockproto-binary or sockproto-crud process (and every worker) naming
the same Redis and ``--db-prefix`` serves the same data: a write
acknowledged by one is read by all at once.

Layout under the prefix P (default ``sockproto:kv:``): ``P v:KEY`` holds
KEY's value, and the sorted set ``P index`` holds every key (score 0), so
LIST is ``ZRANGEBYLEX`` in byte order.  A write changes both in one Lua
script, atomically: CREATE is ``SET NX`` (EXISTS when it fails), UPDATE
``SET XX``, DELETE ``DEL`` (both NOT_FOUND when nothing was there).  For a
Redis Cluster, give a prefix with a hash tag (``sockproto:{kv}:``) so that
both live on one shard.

Requests go to Redis in the order they arrive, on one connection, so a
connection's pipelined requests are answered in order and a read sees
every earlier write.  The requests of one reactor turn go together: reads
alone as one MGET, reads and writes together as one script call.  A
request gets ``SERVER_ERROR`` at once while Redis is out of reach, and
after ``REPLY_TIMEOUT`` seconds without an answer; what is in flight is
bounded by ``MAX_IN_FLIGHT``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from sockproto.binary.codec import Code, Op
from sockproto.interfaces import IKeyValueStore, IServerReactor
from sockproto.server.redis import FirstLink, RedisAddress, RedisLink, Script

log = Logger()

#: Seconds a Redis command may go unanswered before the link is taken for lost.
REPLY_TIMEOUT = 2.0
#: Seconds requests made before the first link wait for it (then: SERVER_ERROR while it is down).
FIRST_LINK_WAIT = 5.0
#: Redis commands (each carrying a turn's run of reads or writes) sent and not
#: answered, beyond which new ones get SERVER_ERROR.
MAX_IN_FLIGHT = 100_000

_CREATE, _UPDATE, _DELETE = int(Op.CREATE), int(Op.UPDATE), int(Op.DELETE)

# The requests of one reactor turn, in order, in one call: its writes, and
# its reads when writes come between them (a run of reads alone is an MGET).
# KEYS: each request's value key (the prefix, "v:", the key), then the
# index; ARGV: the length of the value keys' common start, then (op r/c/u/d,
# value) per request; the key itself, for the index, is the rest of its value
# key.  Returns per request: a read's value (nil when there is none), a
# write's 1 or 0 (0: the key exists / does not).
_BATCH = Script("""
local call, index, out = redis.call, KEYS[#KEYS], {}
local skip = tonumber(ARGV[1]) + 1
local j = 2
for i = 1, #KEYS - 1 do
  local op, valueKey = ARGV[j], KEYS[i]
  if op == 'r' then
    out[i] = call('GET', valueKey)
  else
    local ok = 0
    if op == 'u' then
      if call('SET', valueKey, ARGV[j + 1], 'XX') then ok = 1 end
    elseif op == 'c' then
      if call('SET', valueKey, ARGV[j + 1], 'NX') then
        call('ZADD', index, 0, string.sub(valueKey, skip))
        ok = 1
      end
    elseif call('DEL', valueKey) == 1 then
      call('ZREM', index, string.sub(valueKey, skip))
      ok = 1
    end
    out[i] = ok
  end
  j = j + 2
end
return out
""")
_OP_LETTERS = {_CREATE: b"c", _UPDATE: b"u", _DELETE: b"d"}
_READ_ARGS = (b"r", b"")
#: What a write the script said 0 to gets, by its op letter.
_REFUSALS = {b"c": Code.EXISTS, b"u": Code.NOT_FOUND, b"d": Code.NOT_FOUND}
# A turn's entries: (_GET, value key, then), (_WRITE, value key, done, op letter, value), (_OTHER, send, Deferred).
_GET, _WRITE, _OTHER = 0, 1, 2


def _isOther(entry: tuple[Any, ...]) -> bool:
    return entry[0] == _OTHER


class Unavailable(Exception):
    """Redis cannot be asked now (the link is down, or too much is in flight)."""


@implementer(IKeyValueStore)
class RedisStore:
    """An IKeyValueStore whose reads are answered by Redis too: not an ILocalKeyValueStore."""

    #: Writes are refused only while Redis is out of reach, which the replies say per request.
    writeProblem: str | None = None

    def __init__(self, reactor: IServerReactor, address: RedisAddress, prefix: str = "sockproto:kv:") -> None:
        self.reactor = reactor
        self.address = address
        self.prefix = prefix.encode()
        self.index = self.prefix + b"index"
        self.valuePrefix = self.prefix + b"v:"
        self.valuePrefixLength = b"%d" % len(self.valuePrefix)
        #: Requests that came before the first link was made are sent, in order, once it is.
        self.firstLink = FirstLink(reactor, FIRST_LINK_WAIT)
        self.link = RedisLink(
            reactor, address, replyTimeout=REPLY_TIMEOUT, scripts=[_BATCH],
            onUp=lambda link: self.firstLink.open(),
        )
        #: This turn's requests, in order (see _GET, _WRITE, _OTHER).
        self._turn: list[tuple[Any, ...]] = []
        self.inFlight = 0
        self.keyCount = 0
        self.requests = 0
        self.failures = 0  # requests Redis did not answer (refused while unlinked, or failed)
        self.committedWrites = 0

    def open(self) -> None:
        """Connect once the reactor runs (the address was probed at start)."""
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        self.link.start()
        self.firstLink.start()

    def close(self) -> defer.Deferred[Any]:
        self.firstLink.open()
        return self.link.stop()

    # -- asking Redis -----------------------------------------------------------

    def _ask(self, send: Callable[[Any], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        connection = self.link.command
        if connection is None and self.firstLink.pending and len(self.firstLink) < MAX_IN_FLIGHT:
            return self.firstLink.wait().addCallback(lambda _: self._ask(send))
        if connection is None:
            return defer.fail(Unavailable(f"no link to Redis at {self.address.display}"))
        if self.inFlight >= MAX_IN_FLIGHT:
            return defer.fail(Unavailable("too many requests waiting for Redis"))
        self.inFlight += 1

        def answered(result: Any) -> Any:
            self.inFlight -= 1
            return result

        return send(connection).addBoth(answered)

    def _queue(self, kind: int, argument: Any, then: Any = None) -> Any:
        """
        Queue a request for this turn; its answer goes to ``then(result,
        failure)`` (no Deferred on the hot path), else to the Deferred returned.
        """
        if then is None:
            then = defer.Deferred()
        if not self._turn:
            self.reactor.callLater(0, self._sendTurn)
        self._turn.append((kind, argument, then))
        return then

    def _sendTurn(self) -> None:
        """
        Send this turn's requests, in order, in as few commands as that
        allows: reads alone are one MGET, and reads and writes together one
        script call, so Redis does one command where the clients sent
        dozens, whatever the mix.  Each LIST or STATS is a command of its own.
        """
        turn, self._turn = self._turn, []
        self.requests += len(turn)
        for other, group in groupby(turn, _isOther):
            if other:
                for _, send, then in group:
                    self._ask(send).addErrback(self._failedOne).chainDeferred(then)
                continue
            run = list(group)
            keys = [entry[1] for entry in run]
            if all(entry[0] == _GET for entry in run):
                self._spread(run, self._ask(self._mget(keys)))  # MGET: cheaper for Redis than GETs in a script
                continue
            keys.append(self.index)
            args: list[bytes] = [self.valuePrefixLength]
            for entry in run:
                args += _READ_ARGS if entry[0] == _GET else (entry[3], entry[4])  # op letter, value
            self._spread(run, self._ask(self._batch(keys, args)))

    @staticmethod
    def _mget(keys: list[bytes]) -> Callable[[Any], defer.Deferred[Any]]:
        return lambda connection: connection.execute_command("MGET", *keys)

    @staticmethod
    def _batch(keys: list[bytes], args: list[bytes]) -> Callable[[Any], defer.Deferred[Any]]:
        return lambda connection: _BATCH(connection, keys, args)

    def _failedOne(self, failure: Any) -> Any:
        self.failures += 1
        return failure

    def _spread(self, run: list[tuple[Any, ...]], answer: defer.Deferred[Any]) -> None:
        """
        The answers of an MGET or a script call: each read's ``then`` gets
        its value (or None), each write's ``done`` None, or the refusal when
        Redis said 0; on a failure, reads get it and writes SERVER_ERROR.
        """

        def answered(results: list[Any]) -> None:
            committed = 0
            for entry, result in zip(run, results, strict=True):
                if entry[0] == _GET:
                    entry[2](result, None)
                elif result:  # the script's 1 or 0
                    committed += 1
                    entry[2](None)
                else:
                    entry[2](_REFUSALS[entry[3]])
            self.committedWrites += committed

        def failed(failure: Any) -> None:
            self.failures += len(run)
            writes = sum(1 for entry in run if entry[0] == _WRITE)
            if writes and not failure.check(Unavailable):
                log.warn("kv store: Redis did not take {count} writes: {reason}", count=writes, reason=failure.value)
            for entry in run:
                if entry[0] == _GET:
                    entry[2](None, failure)
                else:
                    entry[2](Code.SERVER_ERROR)

        answer.addCallbacks(answered, failed)

    def fetch(self, key: bytes, then: Callable[[bytes | None, Any], None]) -> None:
        """``then(value or None, None)``, or ``then(None, failure)``: a read without a Deferred (the hot path)."""
        # _queue, inline: every read's path (counted in requests by _sendTurn).
        turn = self._turn
        if not turn:
            self.reactor.callLater(0, self._sendTurn)
        turn.append((_GET, self.valuePrefix + key, then))

    def listKeys(self, prefix: bytes) -> defer.Deferred[list[bytes]]:
        """Keys starting with ``prefix``, in byte order."""
        low = b"[" + prefix if prefix else b"-"
        high = b"(" + _successor(prefix) if prefix and _successor(prefix) else b"+"
        return self._queue(
            _OTHER, lambda c: c.execute_command("ZRANGEBYLEX", self.index, low, high)
        )

    def count(self) -> defer.Deferred[int]:
        def counted(count: Any) -> int:
            self.keyCount = int(count)
            return self.keyCount

        return self._queue(_OTHER, lambda c: c.execute_command("ZCARD", self.index)).addCallback(counted)

    def write(self, op: int, key: bytes, value: bytes, done: Callable[[int | None], None]) -> int | None:
        """Queued for this turn's script call; ``done`` is called when Redis answers (see _spread)."""
        # _queue, inline: every write's path (counted in requests by _sendTurn).
        turn = self._turn
        if not turn:
            self.reactor.callLater(0, self._sendTurn)
        turn.append((_WRITE, self.valuePrefix + key, done, _OP_LETTERS[op], value))
        return None

    def __len__(self) -> int:
        """The key count last seen (STATS asks Redis afresh)."""
        return self.keyCount

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "keys": self.keyCount,
            "linked": int(self.link.up),
            "committed_writes": self.committedWrites,
            "requests": self.requests,
            "failures": self.failures,
            "in_flight": self.inFlight,
        }


def _successor(prefix: bytes) -> bytes:
    """The least byte string greater than every string starting with ``prefix`` (b"" if none is)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b""
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
