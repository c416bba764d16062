"""The chat without sockets: text rules, the hub, the protocol, history, passwords."""

import itertools
import re
import sqlite3
from pathlib import Path

from twisted.cred import checkers
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from sockproto.chat import passwords
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatError, ChatHub
from sockproto.chat.login import ChatRealm, LoginGate, LoginThrottle, hostKey
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.text import Stamper, clean, validNick, validRoom
from sockproto.server.ratelimit import TokenBucket

STAMP = r"\[\d\d:\d\d:\d\d\] "


class TextTests(unittest.TestCase):
    def test_cleanKeepsOrdinaryText(self):
        for text in ["hello", "héllo wörld ✓", "日本語", "a  b"]:
            self.assertEqual(clean(text), text)

    def test_cleanRemovesEscapesAndInvisibles(self):
        cases = {
            "\x1b[31mred\x1b[0m": "red",
            "\x1b]0;pwned title\x07ok": "ok",
            "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\": "link",
            "a\x00b\x07c\x08d\x7fe": "abcde",
            "\u202eevil\u202c": "evil",
            "zero\u200bwidth\ufeff": "zerowidth",
            "tab\there": "tab here",
            "\x9b2Jcsi": "csi",
            "line\u2028sep": "linesep",
            "\x1bcreset": "reset",
        }
        for dirty, want in cases.items():
            self.assertEqual(clean(dirty), want, repr(dirty))

    def test_names(self):
        """Nicknames and room names: what is valid and what is not."""
        self.assertTrue(validNick("Alice_9-x"))
        for bad in ["", "a" * 25, "al ice", "ali:ce", "ålice", "a\u200b"]:
            self.assertFalse(validNick(bad), bad)
        self.assertTrue(validRoom("#dev-ops_2"))
        for bad in ["dev", "#", "#Dev", "#" + "a" * 33, "#a b", "##"]:
            self.assertFalse(validRoom(bad), bad)

    def test_stamper(self):
        """A message's time stamp has the [HH:MM:SS] form."""
        self.assertRegex(Stamper()(1795322000.7), "^" + STAMP + "$")


class FakeMember:
    def __init__(self):
        self.nick = ""
        self.room = None
        self.received = b""

    def send(self, data):
        self.received += data

    def lines(self):
        out = self.received.decode().splitlines()
        self.received = b""
        return out


def newHub(clock=None, **kwargs):
    clock = clock or Clock()
    return ChatHub(clock, History(MEMORY, clock), **kwargs), clock


class HubTests(unittest.TestCase):
    def setUp(self):
        self.hub, self.clock = newHub()
        self.a, self.b, self.c = FakeMember(), FakeMember(), FakeMember()
        for m in (self.a, self.b, self.c):
            self.hub.enter(m)
        self.clock.advance(0)
        for m in (self.a, self.b, self.c):
            m.lines()

    def test_guestsAreUniqueAndInTheLobby(self):
        self.assertEqual([m.nick for m in (self.a, self.b, self.c)], ["guest1", "guest2", "guest3"])
        self.assertEqual(self.hub.names(self.a), ["guest1", "guest2", "guest3"])
        d = FakeMember()
        self.hub.enter(d)
        self.clock.advance(0)
        self.assertEqual(self.a.lines(), ["*** guest4 joined #lobby"])

    def test_messageReachesOthersNotTheSender(self):
        before = self.hub.deliveries
        self.hub.say(self.a, "hi")
        self.hub.say(self.b, "yo")
        self.assertEqual(self.c.received, b"")  # written at the end of the turn
        self.clock.advance(0)
        self.assertEqual([re.sub(STAMP, "", x) for x in self.c.lines()], ["<guest1> hi", "<guest2> yo"])
        self.assertEqual([re.sub(STAMP, "", x) for x in self.a.lines()], ["<guest2> yo"])
        self.assertEqual([re.sub(STAMP, "", x) for x in self.b.lines()], ["<guest1> hi"])
        self.assertEqual(self.hub.deliveries - before, 4)

    def test_nick(self):
        """A nick change is announced; nicks are unique case-insensitively, but one's own case may change."""
        self.hub.changeNick(self.a, "Alice")
        self.clock.advance(0)
        self.assertEqual(self.b.lines(), ["*** guest1 is now known as Alice"])
        self.assertRaises(ChatError, self.hub.changeNick, self.b, "alice")
        self.assertRaises(ChatError, self.hub.changeNick, self.b, "bad nick")
        self.hub.changeNick(self.a, "ALICE")  # a case change of one's own nick is fine
        self.assertEqual(self.a.nick, "ALICE")

    def test_rooms(self):
        """Joining a room leaves the old one with notices on both sides; messages stay in their room."""
        self.hub.join(self.a, "#dev")
        self.clock.advance(0)
        self.assertEqual(self.b.lines(), ["*** guest1 left #lobby"])
        self.assertEqual(self.a.lines(), ["*** guest1 joined #dev"])
        self.c.lines()
        self.hub.say(self.a, "only dev")
        self.hub.join(self.b, "#dev")
        self.clock.advance(0)
        self.assertEqual(self.c.lines(), ["*** guest2 left #lobby"])
        bLines = self.b.lines()
        self.assertEqual(bLines[0], "*** guest2 joined #dev")
        self.assertIn("*** last 1 message in #dev:", bLines)
        self.assertEqual(self.hub.roomList(), [("#dev", 2), ("#lobby", 1)])
        self.assertRaises(ChatError, self.hub.join, self.a, "dev")
        self.assertRaises(ChatError, self.hub.join, self.a, "#dev")

    def test_emptyRoomsGoAndTheLimitHolds(self):
        hub, clock = newHub(maxRooms=2)
        m = FakeMember()
        hub.enter(m)
        hub.join(m, "#one")
        self.assertRaises(ChatError, hub.join, m, "#two")
        hub.join(m, "#lobby")
        hub.join(m, "#two")
        self.assertEqual([r for r, _ in hub.roomList()], ["#lobby", "#two"])

    def test_privateMessage(self):
        """/msg reaches one member in any room, case-insensitively, and the sender sees a copy."""
        self.hub.join(self.c, "#elsewhere")
        self.clock.advance(0)
        self.c.lines(), self.b.lines()
        self.hub.privateMessage(self.a, "GUEST3", "psst")
        self.assertRegex(self.c.lines()[0], "^" + STAMP + r"\*guest1\* psst$")
        self.assertRegex(self.a.lines()[-1], "^" + STAMP + r"-> \*guest3\* psst$")
        self.assertEqual(self.b.lines(), [])
        self.assertRaises(ChatError, self.hub.privateMessage, self.a, "nobody", "x")

    def test_orderIsKeptBetweenRoomAndDirectOutput(self):
        self.hub.say(self.a, "first")
        self.hub.privateMessage(self.c, "guest2", "second")
        lines = [re.sub(STAMP, "", x) for x in self.b.lines()]
        self.assertEqual(lines, ["<guest1> first", "*guest3* second"])

    def test_meAndHistory(self):
        """/me is an action, and a replay shows the last N lines of the room in order."""
        for i in range(30):
            self.hub.say(self.a, f"m{i}")
        self.hub.act(self.b, "waves")
        self.clock.advance(0)
        self.c.lines()
        self.hub.replay(self.c, 3)
        lines = [re.sub(STAMP, "", x) for x in self.c.lines()]
        self.assertEqual(lines, ["*** last 3 messages in #lobby:", "<guest1> m28", "<guest1> m29", "* guest2 waves",
                                 "*** end of history of #lobby"])

    def test_aReplayOfOneMessageSaysMessage(self):
        self.hub.say(self.a, "only one")
        self.clock.advance(0)
        self.c.lines()
        self.hub.replay(self.c, 5)
        self.assertEqual(self.c.lines()[0], "*** last 1 message in #lobby:")
        self.hub.say(self.a, "and two")
        self.clock.advance(0)
        self.c.lines()
        self.hub.replay(self.c, 5)
        self.assertEqual(self.c.lines()[0], "*** last 2 messages in #lobby:")

    def test_leave(self):
        """Leaving tells the room with the reason, frees the nick, and is harmless twice."""
        self.hub.leave(self.a, "bye now")
        self.clock.advance(0)
        self.assertEqual(self.b.lines(), ["*** guest1 left #lobby (bye now)"])
        self.assertNotIn("guest1", self.hub.nicks)
        self.hub.leave(self.a, "twice")  # harmless

    def test_identityIsReserved(self):
        """A logged-in identity takes its nick from a guest and cannot be taken or left."""
        self.hub.changeNick(self.a, "alice")
        alice = FakeMember()
        self.hub.enter(alice, identity="alice")
        self.assertEqual(alice.nick, "alice")
        self.assertEqual(self.a.nick, "guest4")
        self.assertRaises(ChatError, self.hub.changeNick, self.b, "Alice")
        self.assertRaises(ChatError, self.hub.changeNick, alice, "bob")
        self.assertRaises(ChatError, self.hub.enter, FakeMember(), "ALICE")
        self.assertRaises(ChatError, self.hub.enter, FakeMember(), "not valid")


class HistoryTests(unittest.TestCase):
    def test_persistsInBatchesAndReloads(self):
        path = str(Path(self.mktemp()))
        clock = Clock()
        history = History(path, clock)
        history.open()
        for i in range(1000):
            history.record("#lobby", 100.0 + i, "alice", "say", f"message {i}")
        history.record("#dev", 5.0, "bob", "me", "codes")
        self.assertEqual(len(history.recent("#lobby", 500)), 500)
        clock.advance(1)
        d = history.close()

        def check(_):
            self.assertLessEqual(history.batchesWritten, 2)
            again = History(path, Clock(), keep=10)
            again.open()
            self.addCleanup(again.close)
            self.assertEqual([e.text for e in again.recent("#lobby", 2)], ["message 998", "message 999"])
            self.assertEqual(again.recent("#dev", 5)[0].kind, "me")
            count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            self.assertEqual(count, 1001)

        return d.addCallback(check)

    def test_guestNumbersGoOnAfterARestart(self):
        """
        After a restart, new guests are numbered after the guests in the
        history that can be replayed: a replayed <guest7> is not the new guest7.
        """
        path = str(Path(self.mktemp()))
        clock = Clock()
        history = History(path, clock)
        history.open()
        history.record("#lobby", 1.0, "guest7", "say", "before the restart")
        history.record("#dev", 2.0, "Guest12", "me", "chose this name")
        history.record("#dev", 3.0, "guest1234567890", "say", "no server gives out ten digits")
        history.record("#dev", 4.0, "guestly", "say", "not a guest")
        d = history.close()

        def restarted(_):
            again = History(path, clock)
            again.open()
            self.addCleanup(again.close)
            self.assertEqual(again.highestGuest(), 12)
            hub = ChatHub(clock, again)
            newcomer = FakeMember()
            hub.enter(newcomer)
            self.assertEqual(newcomer.nick, "guest13")
            replay = newcomer.lines()
            self.assertIn("<guest7> before the restart", replay[-2])

        return d.addCallback(restarted)

    def test_memoryKeepsNothingOnDisk(self):
        history = History(MEMORY, Clock(), keep=3)
        history.open()
        for i in range(5):
            history.record("#r", i, "n", "say", str(i))
        self.assertEqual([e.text for e in history.recent("#r", 10)], ["2", "3", "4"])
        self.assertEqual(history.recent("#none", 10), [])


PEER = IPv4Address("TCP", "127.0.0.1", 4000)


class ChatProtocolCase(unittest.TestCase):
    def setUp(self):
        self.hub, self.clock = newHub()
        self.factory = ChatFactory(self.clock, self.hub, floodRate=5, floodBurst=20, maxLineLength=64)

    def connect(self, factory=None):
        factory = factory or self.factory
        proto = factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def output(self, transport):
        self.clock.advance(0)
        value = transport.value().decode()
        transport.clear()
        return [re.sub(STAMP, "", x) for x in value.splitlines()]


class ProtocolTests(ChatProtocolCase):
    def test_welcomeAndBroadcast(self):
        a, ta = self.connect()
        self.assertEqual(self.output(ta)[0], "Welcome to sockproto chat! Type /help for commands.")
        b, tb = self.connect()
        self.assertEqual(self.output(ta), ["*** guest2 joined #lobby"])
        self.output(tb)
        for byte in b"hello\r\n//slash\n":
            a.dataReceived(bytes([byte]))
        self.assertEqual(self.output(tb), ["<guest1> hello", "<guest1> /slash"])
        self.assertEqual(self.output(ta), [])

    def test_errorsStartWithBangsAndNeverReachOthers(self):
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        a.dataReceived(b"/frobnicate\n/nick bad nick\n/msg nobody hi\n/join no#pe\n/history 9999\n/nick\n")
        out = self.output(ta)
        self.assertEqual(len(out), 6)
        self.assertTrue(all(line.startswith("!!! ") for line in out), out)
        self.assertEqual(self.output(tb), [])
        self.assertFalse(ta.disconnecting)

    def test_commands(self):
        """The slash commands answer the one who asked: /nick, /me, /list, /rooms, /help."""
        a, ta = self.connect()
        b, tb = self.connect()
        a.dataReceived(b"/nick alice\n/me waves\n/list\n/rooms\n/help\n")
        out = self.output(ta)
        self.assertIn("*** 2 in #lobby: alice guest2", out)
        self.assertIn("***   #lobby (2)", out)
        self.assertTrue(any("/msg NICK text" in line for line in out))
        self.assertIn("* alice waves", self.output(tb))
        a.dataReceived(b"/quit gone fishing\n")
        self.assertIn("*** Goodbye!", self.output(ta))
        self.assertTrue(ta.disconnecting)
        self.assertIn("*** alice left #lobby (gone fishing)", self.output(tb))

    def test_longLinesInvalidUtf8AndEscapes(self):
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        a.dataReceived(b"x" * 100 + b"\nok \xff\xfe\n\x1b[2J\x1b]0;t\x07clear\n")
        self.assertEqual(self.output(ta), ["!!! line too long (at most 64 bytes): not sent"])
        self.assertEqual(self.output(tb), ["<guest1> ok \ufffd\ufffd", "<guest1> clear"])

    def test_aLimitOfOneByteIsSingular(self):
        a, ta = self.connect(ChatFactory(self.clock, self.hub, maxLineLength=1))
        self.output(ta)
        a.dataReceived(b"too long\n")
        self.assertEqual(self.output(ta), ["!!! line too long (at most 1 byte): not sent"])

    def test_floodControl(self):
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        a.dataReceived(b"".join(b"line %d\n" % i for i in range(30)))
        self.assertEqual(len(self.output(tb)), 20)
        self.assertEqual(self.output(ta), ["!!! rate limited: too many lines, slow down"])
        self.clock.advance(1)
        a.dataReceived(b"".join(b"more %d\n" % i for i in range(10)))
        self.assertEqual(len(self.output(tb)), 5)

    def test_floodControlSaysHowManyLinesWereNotSent(self):
        """Over the limit: a warning at once, then how many lines were dropped (a paste in pieces: one count)."""
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        paste = b"".join(b"line %d\n" % i for i in range(50))
        a.dataReceived(paste[:200])
        a.dataReceived(paste[200:])
        self.assertEqual(self.output(ta), ["!!! rate limited: too many lines, slow down"])
        self.assertEqual(len(self.output(tb)), 20)
        self.clock.advance(1)
        self.assertEqual(self.output(ta), ["!!! rate limited: 30 lines not sent"])
        # A second of refill is 5 lines: the sixth is dropped, and counted alone.
        a.dataReceived(b"again\n" * 6)
        self.assertEqual(self.output(ta), ["!!! rate limited: too many lines, slow down"])
        self.assertEqual(len(self.output(tb)), 5)
        self.clock.advance(1)
        self.assertEqual(self.output(ta), ["!!! rate limited: 1 line not sent"])
        # Gone before the count is due: nothing is written, nothing is left scheduled.
        a.dataReceived(b"x\n" * 20)
        a.connectionLost(None)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.func == a.reportFloodDrops], [])

    def test_joinWithoutTheHash(self):
        """/join dev means #dev; a name that is not a room's is still refused, as typed with its #."""
        a, ta = self.connect()
        self.output(ta)
        a.dataReceived(b"/join dev\n")
        self.assertEqual(self.output(ta)[0], "*** guest1 joined #dev")
        a.dataReceived(b"/join Dev\n/join #dev\n")
        self.assertEqual(self.output(ta), [
            "!!! bad room name '#Dev': use # and 1 to 32 of a-z 0-9 _ -", "!!! you are already in #dev",
        ])

    def test_floodControlOff(self):
        factory = ChatFactory(self.clock, self.hub, floodRate=0)
        a, ta = self.connect(factory)
        b, tb = self.connect(factory)
        self.output(tb)
        a.dataReceived(b"x\n" * 1000)
        self.assertEqual(len(self.output(tb)), 1000)

    def test_slowConsumerIsDroppedOthersUnaffected(self):
        factory = ChatFactory(self.clock, self.hub, floodRate=0, maxOutputBuffer=10000)
        a, ta = self.connect(factory)
        slow, ts = self.connect(factory)
        c, tc = self.connect(factory)
        aborted = []
        ts.abortConnection = lambda: aborted.append(True)
        ts.producer.pauseProducing()  # what the transport does when its buffer is full
        for _ in range(100):
            a.dataReceived(b"y" * 200 + b"\n")
            self.clock.advance(0)
        self.assertEqual(aborted, [True])
        self.assertEqual(factory.slowConsumers, 1)
        self.assertEqual(len([x for x in self.output(tc) if "<guest1>" in x]), 100)
        slow.connectionLost(None)
        self.assertIn("*** guest2 left #lobby (too slow)", self.output(tc))

    def test_loginRequired(self):
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        factory = ChatFactory(self.clock, self.hub, portal=Portal(ChatRealm(), [checker]))
        a, ta = self.connect(factory)
        self.assertIn("/login", self.output(ta)[0])
        a.dataReceived(b"hello\n/join #x\n/nick zed\n")
        self.assertEqual([x[:4] for x in self.output(ta)], ["!!! "] * 3)
        a.dataReceived(b"/login alice wrong\n")
        self.clock.advance(1)
        self.assertEqual(self.output(ta), ["!!! login failed: wrong name or password"])
        a.dataReceived(b"/login alice wrong\n")
        self.clock.advance(0.5)
        self.assertEqual(self.output(ta), [])  # the second failure waits longer
        self.clock.advance(2)
        self.assertEqual(self.output(ta), ["!!! login failed: wrong name or password"])
        a.dataReceived(b"/login alice secret\n")
        out = self.output(ta)
        self.assertEqual(out[0], "*** logged in as alice")
        self.assertEqual(a.nick, "alice")
        a.dataReceived(b"/nick bob\n")
        self.assertTrue(self.output(ta)[0].startswith("!!! "))
        b, tb = self.connect(factory)
        b.dataReceived(b"/login alice secret\n")
        self.assertIn("!!! alice is already connected", self.output(tb))


    def test_linesAfterALoginWaitForItsAnswer(self):
        from twisted.cred.credentials import IUsernamePassword
        from twisted.internet import defer

        pending = []

        class SlowChecker:
            credentialInterfaces = (IUsernamePassword,)

            def requestAvatarId(self, creds):
                pending.append(defer.Deferred())
                return pending[-1]

        factory = ChatFactory(self.clock, self.hub, portal=Portal(ChatRealm(), [SlowChecker()]))
        other, tOther = self.connect()
        a, ta = self.connect(factory)
        self.output(ta), self.output(tOther)
        a.dataReceived(b"/login alice secret\nhello everyone\n/me waves\n")
        self.assertEqual(ta.producerState, "paused", "nothing more is read until the login is decided")
        self.assertEqual(self.output(ta), [])
        pending[0].callback(b"alice")
        self.assertEqual(ta.producerState, "producing")
        self.assertEqual(self.output(ta)[0], "*** logged in as alice")
        self.assertEqual(self.output(tOther)[-2:], ["<alice> hello everyone", "* alice waves"])


class ThrottleAndBucketTests(unittest.TestCase):
    def test_throttleGrowsAndForgets(self):
        """After each failure in a row a host waits 1, 2, 4 ... seconds, up to the cap; the count is forgotten."""
        clock = Clock()
        throttle = LoginThrottle(clock, forgetAfter=100, maxDelay=8)
        self.assertEqual(throttle.retryAfter("h"), 0)
        waits = []
        for _ in range(5):
            throttle.failed("h")
            waits.append(throttle.retryAfter("h"))
        self.assertEqual(waits, [1, 2, 4, 8, 8])
        clock.advance(3)
        self.assertEqual(throttle.retryAfter("h"), 5)
        self.assertEqual(throttle.retryAfter("other"), 0)
        clock.advance(101)
        self.assertEqual(throttle.retryAfter("h"), 0)
        throttle.failed("h")
        self.assertEqual(throttle.retryAfter("h"), 1)
        for _ in range(5000):  # a siege of days: 2 ** 4999 would overflow a float
            throttle.failed("h")
        self.assertEqual(throttle.retryAfter("h"), 8)

    def test_hostKeys(self):
        """A failed login counts against an IPv4 address or an IPv6 /64."""
        self.assertEqual(hostKey("192.0.2.7"), "192.0.2.7")
        self.assertEqual(hostKey("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(hostKey("2001:db8:1:2:a::1"), hostKey("2001:db8:1:2:b::9"))
        self.assertEqual(hostKey("2001:db8:1:2::1"), "2001:db8:1:2::/64")
        self.assertEqual(hostKey("/tmp/chat.sock"), "/tmp/chat.sock")

    def test_bucket(self):
        """The token bucket allows a burst, then refills at its rate."""
        bucket = TokenBucket(rate=2, burst=3, now=0)
        self.assertEqual([bucket.take(0) for _ in range(4)], [True, True, True, False])
        self.assertTrue(bucket.take(0.5))
        self.assertFalse(bucket.take(0.5))


class CountingChecker:
    """Checks ``alice``'s password and notes when each password was checked; ``later`` answers when told."""

    from twisted.cred.credentials import IUsernamePassword

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, clock, password=b"secret", later=False):
        self.clock = clock
        self.password = password
        self.later = later
        self.checked = []  # (time, password)
        self.pending = []

    def requestAvatarId(self, creds):
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet import defer

        self.checked.append((self.clock.seconds(), creds.password))
        ok = (creds.username, creds.password) in {(b"alice", self.password), (b"mallory", b"own")}
        result = defer.succeed(creds.username) if ok else defer.fail(UnauthorizedLogin())
        if not self.later:
            return result
        d = defer.Deferred()
        self.pending.append((d, result))
        return d

    def answer(self):
        d, result = self.pending.pop(0)
        result.chainDeferred(d)


def peerAt(host):
    return IPv4Address("TCP", host, 40000)


class LoginGateTests(ChatProtocolCase):
    """Guessing passwords: a host's backoff holds before any password is checked, on every connection."""

    def setUp(self):
        super().setUp()
        self.checker = CountingChecker(self.clock)
        self.factory = ChatFactory(self.clock, self.hub, portal=Portal(ChatRealm(), [self.checker]))

    def connectFrom(self, host="192.0.2.1", factory=None):
        factory = factory or self.factory
        proto = factory.buildProtocol(peerAt(host))
        transport = StringTransport(peerAddress=peerAt(host))
        proto.makeConnection(transport)
        self.output(transport)
        return proto, transport

    def test_aHostBackingOffIsRefusedOnAnyConnectionUnchecked(self):
        a, ta = self.connectFrom()
        a.dataReceived(b"/login alice guess1\n")
        self.assertEqual(len(self.checker.checked), 1)
        a.connectionLost(None)  # it does not wait for the answer
        b, tb = self.connectFrom()
        b.dataReceived(b"/login alice secret\n")
        self.assertEqual(
            self.output(tb), ["!!! login refused: too many failed logins from your address: try again in 1 s"]
        )
        self.assertEqual(len(self.checker.checked), 1, "the password was not checked")
        self.assertEqual(b.nick, "")
        other, tOther = self.connectFrom("192.0.2.2")
        other.dataReceived(b"/login alice secret\n")
        self.assertEqual(self.output(tOther)[0], "*** logged in as alice", "other hosts are not held back")
        other.connectionLost(None)
        self.clock.advance(1)
        b.dataReceived(b"/login alice secret\n")
        self.assertEqual(self.output(tb)[0], "*** logged in as alice")
        self.assertEqual(self.factory.errors["login_refused"], 1)
        self.assertEqual(self.factory.errors["login_failed"], 1)

    def test_aClientThatWaitsForItsAnswerIsNeverRefused(self):
        a, ta = self.connectFrom()
        for round in range(1, 7):
            a.dataReceived(b"/login alice wrong\n")
            self.clock.advance(min(2 ** (round - 1), 30) - 0.01)
            self.assertEqual(self.output(ta), [], f"failure {round} is answered when the host may try again")
            self.clock.advance(0.01)
            self.assertEqual(self.output(ta), ["!!! login failed: wrong name or password"])
        a.dataReceived(b"/login alice secret\n")
        self.assertEqual(self.output(ta)[0], "*** logged in as alice")

    def test_guessesOnFreshConnectionsAbandonedAfter150ms(self):
        """
        The attack of issue 25: /login alice pwNNNN on a new connection, given
        up after 150 ms, 400 times (60 s).  Without the gate each guess was
        checked and pw0399 found; with it, only a few are checked, as far
        apart as the backoff promises.
        """
        self.checker.password = b"pw0399"
        found = []
        for number in range(400):
            proto, transport = self.connectFrom()
            proto.dataReceived(b"/login alice pw%04d\n" % number)
            self.clock.advance(0.15)
            if "*** logged in as alice" in self.output(transport):
                found.append(number)
            proto.connectionLost(None)
        self.assertEqual(found, [])
        times = [when for when, _ in self.checker.checked]
        self.assertLessEqual(len(times), 7, self.checker.checked)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        for number, gap in enumerate(gaps):
            self.assertGreaterEqual(gap, min(2**number, 30), times)
        # At the promised pace the 400th guess would come hours later: 1 + 2 + ... + 30 + 30 ...
        self.assertGreater(sum(min(2**n, 30) for n in range(399)), 3 * 3600)

    def test_anOwnAccountDoesNotResetTheBackoff(self):
        """Logging in as oneself between guesses at another's password does not start the backoff over."""
        a, ta = self.connectFrom()
        a.dataReceived(b"/login alice guess1\n")
        self.clock.advance(1)
        self.assertEqual(self.output(ta), ["!!! login failed: wrong name or password"])
        a.dataReceived(b"/login mallory own\n")
        self.assertEqual(self.output(ta)[0], "*** logged in as mallory")
        b, tb = self.connectFrom()
        b.dataReceived(b"/login alice guess2\n")
        self.assertEqual(self.factory.loginGate.retryAfter("192.0.2.1"), 2, "the second failure: 2 s, not 1")

    def test_parallelGuessesFromOneHostAreCheckedOneAtATime(self):
        self.checker.later = True
        a, ta = self.connectFrom()
        b, tb = self.connectFrom()
        a.dataReceived(b"/login alice one\n")
        b.dataReceived(b"/login alice two\n")
        self.assertEqual([p for _, p in self.checker.checked], [b"one"])
        self.assertEqual(
            self.output(tb), ["!!! login refused: a login from your address is being checked: try again in a moment"]
        )
        self.checker.answer()
        b.dataReceived(b"/login alice two\n")
        self.assertIn("too many failed logins", self.output(tb)[0])
        self.assertEqual(len(self.checker.checked), 1)

    def test_checksAtOnceAreBoundedTheRestWaitOrAreRefused(self):
        self.checker.later = True
        gate = LoginGate(Portal(ChatRealm(), [self.checker]), self.clock, maxChecks=2, maxWaiting=2)
        factory = ChatFactory(self.clock, self.hub, portal=gate.portal, loginGate=gate)
        clients = [self.connectFrom(f"192.0.2.{n}", factory) for n in range(1, 7)]
        for proto, _ in clients[:5]:
            proto.dataReceived(b"/login alice wrong\n")
        self.assertEqual(len(self.checker.checked), 2, "two checks at once")
        self.assertEqual(gate.running, 2)
        self.assertEqual(
            self.output(clients[4][1]), ["!!! login refused: too many login attempts at once: try again later"]
        )
        clients[2][0].connectionLost(None)  # gone while waiting: never checked
        self.checker.answer()
        self.assertEqual(len(self.checker.checked), 3)
        self.assertEqual(self.checker.checked[-1][0], self.clock.seconds())
        self.checker.answer()
        self.checker.answer()
        self.assertEqual(len(self.checker.checked), 3)
        self.assertEqual((gate.running, gate.hosts), (0, set()))
        proto, transport = clients[5]
        self.checker.later = False
        proto.dataReceived(b"/login alice secret\n")
        self.assertEqual(self.output(transport)[0], "*** logged in as alice")

    def test_aClientGoneWhileItsPasswordIsCheckedHearsNothing(self):
        self.checker.later = True
        a, ta = self.connectFrom()
        a.dataReceived(b"/login alice secret\n")
        a.connectionLost(None)
        self.checker.answer()
        self.assertEqual(self.output(ta), [])
        self.assertEqual(self.hub.present, {})
        self.assertEqual(self.factory.loginGate.hosts, set())


class PasswordTests(unittest.TestCase):
    def test_hashAndVerify(self):
        """Passwords are stored hashed and verified; garbage never verifies."""
        stored = passwords.hashPassword("s3cret")
        self.assertNotIn("s3cret", stored)
        self.assertTrue(passwords.verifyPassword("s3cret", stored))
        self.assertFalse(passwords.verifyPassword("wrong", stored))
        self.assertFalse(passwords.verifyPassword("x", "garbage"))

    def test_fileAndChecker(self):
        """A password file made by setPassword logs users in through the checker; secrets never appear in it."""
        from twisted.cred.credentials import UsernamePassword
        from twisted.cred.error import UnauthorizedLogin

        path = Path(self.mktemp())
        # Passwords with a "-", which base64 hashes and salts never contain.
        passwords.setPassword(path, "alice", "pw-one")
        passwords.setPassword(path, "bob", "pw-two")
        passwords.setPassword(path, "alice", "pw-three")
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        stored = path.read_text()
        for password in ("pw-one", "pw-two", "pw-three"):
            self.assertNotIn(password, stored)
        checker = passwords.HashedPasswordCheckerFactory().generateChecker(str(path))
        good = checker.requestAvatarId(UsernamePassword(b"alice", b"pw-three"))
        bad = checker.requestAvatarId(UsernamePassword(b"alice", b"pw-one"))
        unknown = checker.requestAvatarId(UsernamePassword(b"carol", b"pw-one"))
        good.addCallback(self.assertEqual, b"alice")
        bad = self.assertFailure(bad, UnauthorizedLogin)
        unknown = self.assertFailure(unknown, UnauthorizedLogin)
        from twisted.internet.defer import gatherResults

        return gatherResults([good, bad, unknown])

    def test_reloadCountsTheUsers(self):
        """SIGHUP's report: "1 user", "2 users"."""
        from sockproto.chat.login import AnyOfCheckers

        path = Path(self.mktemp())
        passwords.setPassword(path, "alice", "pw-one")
        checker = passwords.HashedPasswordCheckerFactory().generateChecker(str(path))
        clock = Clock()
        factory = ChatFactory(clock, newHub(clock)[0], portal=Portal(ChatRealm(), [AnyOfCheckers([checker])]))
        self.assertEqual(factory.reload(), [f"password file {path}: 1 user"])
        passwords.setPassword(path, "bob", "pw-two")
        self.assertEqual(factory.reload(), [f"password file {path}: 2 users"])

    def test_badFile(self):
        """A password file with a plain-text entry, or a missing one, is refused with a clear error."""
        path = Path(self.mktemp())
        path.write_text("alice:plaintext\n")
        self.assertRaises(passwords.PasswordFileError, passwords.readPasswordFile, path)
        self.assertRaises(ValueError, passwords.HashedPasswordCheckerFactory().generateChecker, "/no/such/file")


class HostileInputTests(ChatProtocolCase):
    def test_binaryJunkIsNotBroadcast(self):
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        a.dataReceived(b"\x89PNG\x00\x01\n" + bytes(range(128, 180)) + b"\nfine \xff\n")
        self.assertEqual(self.output(ta), ["!!! that looks like binary data, not text: not sent"] * 2)
        self.assertEqual(self.output(tb), ["<guest1> fine \ufffd"])

    def test_tlsAndHttpOnThePlainPortAreTurnedAway(self):
        for first in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            a, ta = self.connect()
            ta.clear()
            a.dataReceived(first)
            self.assertTrue(ta.value().startswith(b"!!! this port speaks plain text lines, not "))
            self.assertTrue(ta.disconnecting)


class SocketOptionTests(ChatProtocolCase):
    def test_keepAliveAndNoDelayAreAskedFor(self):
        calls = []

        class TCPishTransport(StringTransport):
            def setTcpKeepAlive(self, on):
                calls.append(("keepalive", on))

            def setTcpNoDelay(self, on):
                calls.append(("nodelay", on))

        for keepAlive, expected in ((True, [("nodelay", 1), ("keepalive", 1)]), (False, [("nodelay", 1)])):
            calls.clear()
            factory = ChatFactory(self.clock, self.hub, keepAlive=keepAlive)
            proto = factory.buildProtocol(PEER)
            proto.makeConnection(TCPishTransport(peerAddress=PEER))
            self.assertEqual(calls, expected)

    def test_maxClients(self):
        factory = ChatFactory(self.clock, self.hub, maxConnections=1)
        self.connect(factory)
        _, transport = self.connect(factory)
        self.assertEqual(transport.value(), b"!!! server full: too many clients, try again later\n")
        self.assertTrue(transport.disconnecting)

    def test_idleClientIsToldAndLeaves(self):
        factory = ChatFactory(self.clock, self.hub, idleTimeout=40)
        a, ta = self.connect(factory)
        b, tb = self.connect(factory)
        self.output(ta), self.output(tb)
        for _ in range(6):
            self.clock.advance(10)
            b.dataReceived(b"still here\n")
        self.assertIn("*** idle too long: goodbye", self.output(ta))
        self.assertTrue(ta.disconnecting)
        self.assertIn("*** guest1 left #lobby (idle)", self.output(tb))
