"""The Redis link: its reply conversion, its preparation of connections, and a stalled Redis."""

import os
import signal

import txredisapi
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from sockproto.server.redis import RedisLink, Script, _CommandProtocol, _Preparation, parseRedisURL
from tests.redisserver import RedisServer, waitUntil

values = st.recursive(
    st.one_of(st.binary(max_size=50), st.integers(), st.none()),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


class ReplyConversionTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(values)
    def test_theSameValuesAsTxredisapi(self, reply):
        """As the link makes them (no charset, no number conversion): what txredisapi's conversion returns."""
        ours = _CommandProtocol(charset=None, convertNumbers=False)
        theirs = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        self.assertEqual(ours.tryConvertData(reply), theirs.tryConvertData(reply))

    def test_otherSettingsStillConvert(self):
        self.assertEqual(_CommandProtocol(charset="utf-8").tryConvertData([b"\xc3\xa9", b"12"]), ["é", 12])


class StalledRedisTests(unittest.TestCase):
    """A real Redis stopped (SIGSTOP) under a live link, then resumed (SIGCONT)."""

    def setUp(self):
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        self.redis.start()
        self.addCleanup(self.resume)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def resume(self):
        if self.redis.process is not None and self.redis.process.poll() is None:
            os.kill(self.redis.process.pid, signal.SIGCONT)

    def logged(self, text):
        return [e for e in self.events if text in (e.get("log_format") or "")]

    @defer.inlineCallbacks
    def test_reconnectingWhileRedisIsStalledLogsNoCriticalError(self):
        """
        While Redis is stopped, new connections are accepted by its kernel but
        never answered: each one's preparation (loading a script) times out.
        The link retries quietly, and is back once Redis resumes.
        """
        ups = []
        link = RedisLink(reactor, parseRedisURL(self.redis.url), [b"stall:events"], onUp=ups.append,
                         replyTimeout=0.5, scripts=[Script("return 1")])
        link.start()
        self.addCleanup(link.stop)
        yield waitUntil(lambda: link.up)
        os.kill(self.redis.process.pid, signal.SIGSTOP)
        link.command.execute_command("PING").addErrback(lambda failure: None)  # times out: the link is lost
        yield waitUntil(lambda: not link.up)
        # A new connection made and not made ready (or a critical error, without the fix).
        yield waitUntil(lambda: any(p.failures for p in link.preparations)
                         or any(e.get("log_level") == LogLevel.critical for e in self.events))
        os.kill(self.redis.process.pid, signal.SIGCONT)
        yield waitUntil(lambda: link.up)
        self.assertEqual(len(ups), 2)
        critical = [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(critical, [])
        self.assertEqual(len(self.logged("could not be made ready")), 1)  # once for the stall, not per retry
        self.assertEqual((yield link.command.execute_command("PING")), b"PONG")


class PreparationTests(unittest.TestCase):
    """Making a new connection ready, without a reactor."""

    def test_aConnectionNotMadeReadyIsAbortedAndTheRetriesSlowDown(self):
        link = RedisLink(None, parseRedisURL("redis://127.0.0.1"))
        attempts = []
        preparation = _Preparation(link, lambda proto: attempts.pop(0))
        delays = []
        for number in range(4):
            proto = _CommandProtocol(charset=None)
            proto.makeConnection(StringTransport())
            attempts.append(defer.fail(txredisapi.TimeoutError("no answer")))
            result = self.successResultOf(preparation(proto))  # ClientService never sees a failure
            self.assertIsNone(result)
            self.assertTrue(proto.transport.disconnecting, number)
            delays.append(preparation.retryDelay(1))
        self.assertEqual(preparation.failures, 4)
        # Backoff by failures in a row (jitter aside, up to 1 s): 0.2, 0.4, 0.8, 1.6 s.
        for lower, delay in zip((0.2, 0.4, 0.8, 1.6), delays, strict=True):
            self.assertTrue(lower <= delay < lower + 1, (lower, delay))
        ready = _CommandProtocol(charset=None)
        ready.makeConnection(StringTransport())
        attempts.append(defer.succeed(None))
        self.successResultOf(preparation(ready))
        self.assertFalse(ready.transport.disconnecting)
        self.assertEqual(preparation.failures, 0)
