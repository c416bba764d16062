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
