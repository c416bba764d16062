"""The cluster's own logic without a reactor: Redis URLs, history merging, a hub whose bus answers later."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from twisted.cred import checkers
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sockproto.chat import history as historyModule
from sockproto.chat.bus import IChatBus, LocalBus
from sockproto.chat.cluster import (
    BadEvent,
    RedisChatBus,
    checkEvent,
    noticeEvent,
    noticeSubjects,
    noticeWire,
    parseBatch,
)
from sockproto.chat.events import Action, Joined, NickChanged, Parted, PrivateMessage, Quit, Who
from sockproto.chat.history import ClusterHistory, Entry
from sockproto.chat.hub import ChatHub
from sockproto.chat.login import ChatRealm
from sockproto.chat.protocol import ChatFactory
from sockproto.server.redis import PASSWORD_VARIABLE, parseRedisURL
from tests.test_chat import ChatProtocolCase


class RedisURLTests(unittest.TestCase):
    def test_forms(self) -> None:
        plain = parseRedisURL("redis://10.0.0.5")
        self.assertEqual(
            (plain.host, plain.port, plain.db, plain.password, plain.tls), ("10.0.0.5", 6379, 0, None, None)
        )
        full = parseRedisURL("redis://user:p%40ss@redis.example:6380/3")
        self.assertEqual((full.host, full.port, full.db, full.username, full.password),
                         ("redis.example", 6380, 3, "user", "p@ss"))
        self.assertEqual(full.display, "redis://redis.example:6380/3")
        tls = parseRedisURL("rediss://:secret@redis.example?ca=/etc/ca.pem")
        self.assertEqual(tls.tls.ca if tls.tls else None, "/etc/ca.pem")
        self.assertNotIn("secret", tls.display)
        unix = parseRedisURL("unix:/run/redis.sock?db=2&password=pw")
        self.assertEqual(
            (unix.path, unix.db, unix.password, unix.display), ("/run/redis.sock", 2, "pw", "unix:/run/redis.sock")
        )
        self.assertEqual(parseRedisURL("unix:///run/redis.sock").path, "/run/redis.sock")

    def test_passwordFromTheEnvironment(self) -> None:
        self.patch(os, "environ", {PASSWORD_VARIABLE: "from-env"})
        self.assertEqual(parseRedisURL("redis://127.0.0.1").password, "from-env")
        self.assertEqual(parseRedisURL("redis://:given@127.0.0.1").password, "given")

    def test_errorsNameTheProblemButNotThePassword(self) -> None:
        for url, why in [
            ("http://h", "expected redis://"),
            ("redis://:hunter2@h/x", "must be a number"),
            ("redis://:hunter2@h:99999", "not a Redis URL"),
            ("redis://:hunter2@h?frob=1", "unknown option 'frob'"),
            ("unix:", "no socket path"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseRedisURL(url)
            self.assertIn(why, str(caught.exception), url)
            self.assertNotIn("hunter2", str(caught.exception), url)


class ClusterHistoryTests(unittest.TestCase):
    def entry(self, text: str) -> Entry:
        return Entry(1.0, "n", "say", text)

    def test_streamsThenWhatArrivedWhileReadingThem(self) -> None:
        history = ClusterHistory(keep=3)
        history.startLoading()
        history.arrived("#a", "5-0", self.entry("five"))  # also in the stream
        history.arrived("#a", "6-0", self.entry("six"))  # after it
        history.arrived("#b", "7-0", self.entry("new room"))
        history.loaded({"#a": [("3-0", self.entry("three")), ("4-0", self.entry("four")), ("5-0", self.entry("five"))]})
        self.assertEqual([e.text for e in history.recent("#a", 10)], ["four", "five", "six"])
        self.assertEqual([e.text for e in history.recent("#b", 10)], ["new room"])
        self.assertEqual([e.text for e in history.recent("#a", 1)], ["six"])
        self.assertEqual(history.recent("#none", 5), [])

    def test_roomsKeptAreBounded(self) -> None:
        self.patch(historyModule, "MAX_HISTORY_ROOMS", 3)
        history = ClusterHistory()
        for number in range(5):
            history.arrived(f"#r{number}", f"{number}-0", self.entry(str(number)))
        self.assertEqual([history.recent(f"#r{n}", 1) != [] for n in range(5)], [False, False, True, True, True])

    def test_linesSaidWhileUnlinkedAreKeptHere(self) -> None:
        history = ClusterHistory()
        history.record("#a", 1.0, "n", "say", "alone")
        self.assertEqual([e.text for e in history.recent("#a", 5)], ["alone"])

    def test_theBusesProvideTheInterface(self) -> None:
        verifyObject(IChatBus, LocalBus())
        bus = RedisChatBus(None, parseRedisURL("redis://127.0.0.1"), ClusterHistory(), "n1")
        verifyObject(IChatBus, bus)
        self.assertEqual(bus.stats()["node"], "n1")


@implementer(IChatBus)
class LaterBus(LocalBus):
    """A bus that answers name claims only when the test says so (as Redis would, later)."""

    clustered = True

    def __init__(self) -> None:
        self.pending: list[tuple[defer.Deferred[Any], Any]] = []

    def claimNick(self, member: Any, nick: str) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        self.pending.append((d, True))
        return d

    def claimIdentity(self, member: Any, nick: str) -> defer.Deferred[tuple[bool, str | None]]:
        d: defer.Deferred[tuple[bool, str | None]] = defer.Deferred()
        self.pending.append((d, (True, None)))
        return d

    def answer(self, result: Any = None) -> None:
        d, default = self.pending.pop(0)
        d.callback(default if result is None else result)


class AnswersLaterTests(ChatProtocolCase):
    def setUp(self) -> None:
        super().setUp()
        self.bus = LaterBus()
        self.hub = ChatHub(self.clock, self.hub.history, bus=self.bus)
        self.factory = ChatFactory(self.clock, self.hub, floodRate=0, maxLineLength=64)

    def test_linesAfterACommandWaitForItsAnswer(self) -> None:
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        for byte in b"/nick alice\nhello\n/who\n":
            a.dataReceived(bytes([byte]))
        self.assertEqual(self.output(tb), [])  # "hello" waits for the name
        self.bus.answer()
        self.assertEqual(self.output(tb), ["*** guest1 is now known as alice", "<alice> hello"])
        self.assertEqual(self.output(ta), ["*** guest1 is now known as alice", "*** 2 in #lobby: alice guest2"])

    def test_aRefusalIsShownAndTheLinesGoOn(self) -> None:
        a, ta = self.connect()
        b, tb = self.connect()
        self.output(ta), self.output(tb)
        a.dataReceived(b"/nick taken\nstill me\n")
        self.bus.answer(False)
        self.assertEqual(self.output(ta), ["!!! nickname taken is taken"])
        self.assertEqual(self.output(tb), ["<guest1> still me"])

    def test_theLoserOfARaceForItsNameHearsOnlyTheRefusal(self) -> None:
        """Two servers log alice in at once; Redis gives the name to the other: no "logged in as alice" here."""
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.factory = ChatFactory(self.clock, self.hub, floodRate=0, portal=Portal(ChatRealm(), [checker]))
        loser, tLoser = self.connect()
        self.output(tLoser)
        loser.dataReceived(b"/login alice secret\n")
        self.assertEqual(self.output(tLoser), [], "nothing until Redis has answered")
        self.bus.answer((False, None))
        self.assertEqual(self.output(tLoser), ["!!! alice is already connected"])
        winner, tWinner = self.connect(ChatFactory(self.clock, self.hub, portal=Portal(ChatRealm(), [checker])))
        self.output(tWinner)
        winner.dataReceived(b"/login alice secret\n")
        self.bus.answer()
        self.assertEqual(self.output(tWinner)[:2], ["*** logged in as alice", "*** alice joined #lobby"])

    def test_aClientGoneBeforeTheAnswer(self) -> None:
        a, ta = self.connect()
        a.dataReceived(b"/nick alice\n")
        a.connectionLost(None)
        self.bus.answer()
        self.assertEqual(self.hub.nicks, {})


class ChannelMessageTests(unittest.TestCase):
    """What arrives on the cluster's channel, fed to the bus directly (no Redis, no reactor)."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from tests.test_chat import FakeMember

        self.clock = Clock()
        self.history = ClusterHistory()
        self.bus = RedisChatBus(self.clock, parseRedisURL("redis://127.0.0.1"), self.history, "here")
        self.hub = ChatHub(self.clock, self.history, bus=self.bus)
        self.bus.firstLink.open()  # no Redis here: names are decided locally
        self.bus.knownNodes = {"there", "x"}  # as Redis would have said
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.member = FakeMember()
        self.hub.enter(self.member)
        self.clock.advance(0)
        self.member.lines()

    def message(self, ids: bytes, batch: object) -> None:
        self.bus._message(b"sockproto:events", ids + b"\n" + json.dumps(batch).encode())
        self.clock.advance(0)

    def test_linesFromOtherServersReachTheRoomAndTheHistory(self) -> None:
        self.message(b"5-0,5-1", {"n": "there", "t": 0, "e": [["m", "#lobby", 1.0, "bob", "say", "hi", "line"],
                                                             ["m", "#lobby", 1.0, "carol", "me", "waves", "line"]]})
        stamp = r"\[\d\d:\d\d:\d\d\] "
        self.assertRegex("\n".join(self.member.lines()), f"^{stamp}<bob> hi\n{stamp}\\* carol waves$")
        self.assertEqual([e.text for e in self.history.recent("#lobby", 5)], ["hi", "waves"])
        self.assertEqual(self.bus.received, 2)

    def test_ownLinesOnlyGoToTheHistory(self) -> None:
        self.message(b"6-0", {"n": "here", "t": 0, "e": [["m", "#lobby", 1.0, "me", "say", "mine", "line"]]})
        self.assertEqual(self.member.lines(), [])
        self.assertEqual([e.text for e in self.history.recent("#lobby", 5)], ["mine"])

    def test_junkIsDroppedNotFatal(self) -> None:
        for raw in [b"", b"\n", b"not json", b"\n[1, 2]", b"\xff\xfe\n{}", b'\n{"n": "x", "e": 5}',
                    b'\n{"n": "x", "t": "soon", "e": []}']:
            self.bus._message(b"sockproto:events", raw)
        self.message(b"", {"n": "x", "e": [[], ["m"], ["m", "#lobby", "noon", "a", "say", "t", "line"], ["p", "here"],
                                           ["g", "y", 7, "gone"], "junk", ["zz", 1]]})
        self.assertEqual(self.member.lines(), [])
        self.message(b"", {"n": "x", "e": [["m", "#lobby", 1.0, "bob", "say", "still working", "line"]]})
        self.assertTrue(self.member.lines()[-1].endswith("<bob> still working"))


    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.logged if e.get("log_namespace") == "sockproto.chat.cluster"]

    def test_hostileMessagesAreDroppedWithOneLogLineAndTheLinkStays(self) -> None:
        hostile = [
            b"\n" + b"[" * 200_000,  # RecursionError in json.loads
            b"\n" + b'{"n": "x", "e": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}",
            b'\n{"n": "x", "t": 1e300, "e": []}',  # OverflowError in a time stamp
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1e300, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", -1e20, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", NaN, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", Infinity, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1' + b"0" * 5000 + b', "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", true, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "lobby", 1, "bob", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1, "bob smith", "say", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1, "bob", "shout", "hi", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1, "bob", "say", ["hi"], "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["m", "#lobby", 1, "bob", "say", "' + b"a" * 70_000 + b'", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["n", "#lobby", "shout", 1, "bob", "line"]]}',
            b'\n{"n": "x", "t": 0, "e": [["g", "y", [["bob"]], "gone"]]}',
            b'\n{"n": "has space", "t": 0, "e": []}',
            b'\n{"n": "x", "t": 0, "e": [["p", "here", "me", 1, "bob", "hi", "line", "extra"]]}',
            b"1-0,junk\n" + json.dumps({"n": "x", "e": [["m", "#lobby", 1, "bob", "say", "hi", "line"]]}).encode(),
            b'\n{"n": "x", "t": 0, "e": []}\nsignature-without-a-secret',
        ]
        for raw in hostile:
            self.bus._message(b"sockproto:events", raw)
        self.clock.advance(0)
        self.assertEqual(self.member.lines(), [])
        self.assertEqual(self.bus.rejected, len(hostile))
        self.assertEqual(len(self.warnings()), 1)  # one line, however many
        self.assertIn("dropped a message from the channel", self.warnings()[0])
        self.assertEqual(self.history.recent("#lobby", 5), [])
        # Later: one more line, which says how many were not logged.
        self.clock.advance(11)
        self.bus._message(b"sockproto:events", hostile[0])
        self.assertIn(f"and {len(hostile) - 1} more", self.warnings()[-1])
        self.message(b"", {"n": "x", "e": [["m", "#lobby", 1.0, "bob", "say", "still working", "line"]]})
        self.assertEqual([line[11:] for line in self.member.lines()], ["<bob> still working"])

    def test_textFromOtherServersIsCleanedAsLocalTextIs(self) -> None:
        nasty = "\x1b]0;owned\x07\x1b[31mred\u202e txt\r\n*** fake: admin joined\x9b2J"
        self.message(b"7-0", {"n": "there", "t": 0, "e": [["m", "#lobby", 1.0, "bob", "say", nasty, "line"]]})
        # A notice is about a member: one whose name is no nickname is no notice.
        self.message(b"", {"n": "there", "t": 0, "e": [["n", "#lobby", "join", 1.0, "x\r\n*** fake: admin", "line"]]})
        lines = self.member.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("<bob> red txt*** fake: admin joined"), lines)
        self.assertTrue(lines[0].isprintable(), lines)
        self.assertEqual([e.text for e in self.history.recent("#lobby", 5)], ["red txt*** fake: admin joined"])
        self.assertEqual(self.bus.rejected, 1)

    def test_noticesAreTheOnesServersSend(self) -> None:
        # A joiner may have taken another name by the time its join is read, a renamed member another
        # name again: each name must be its server's, or nobody's (never another server's).
        self.assertEqual(noticeSubjects(checkEvent(["n", "#a", "join", 1, "Bob", "web"])), [("bob", True)])
        self.assertEqual(noticeSubjects(checkEvent(["n", "#a", "quit", 1, "bob", "line", "quit: bye (really)"])),
                         [("bob", True)])
        self.assertEqual(noticeSubjects(checkEvent(["n", "#a", "part", 1, "bob", "line", ""])), [("bob", True)])
        self.assertEqual(
            noticeSubjects(checkEvent(["n", "#a", "nick", 1, "guest3", "line", "Alice", "name reserved"])),
            [("guest3", True), ("alice", True)],
        )
        for event in [["n", "#a", "joined", 1, "bob", "line"], ["n", "#a", "join", 1, "bob"],
                      ["n", "#a", "join", 1, "bob", "line", "extra"], ["n", "a", "join", 1, "bob", "line"],
                      ["n", "#a", "join", 1, "b b", "line"], ["n", "#a", "join", 1, "bob", "Web"],
                      ["n", "#a", "nick", 1, "bob", "line", "b b", ""], ["n", "#a", "part", 1, "bob", "line", 5],
                      ["n", "#a", "quit", 1, "bob", "line", "x" * 401], ["n", "#a", ["join"], 1, "bob", "line"],
                      ["n", "#a"], ["n", "#a", "join", "noon", "bob", "line"]]:
            with self.assertRaises(BadEvent, msg=str(event)):
                checkEvent(event)

    def test_whatThisServerSendsIsWhatItTakes(self) -> None:
        """The events a server publishes pass the checks of the others, and come back the same."""
        for event in [Joined("#a", Who("bob", "web"), 1.5), Parted("#a", Who("bob", "line"), 2.0),
                      Quit("#a", Who("bob", "irc"), 3.0, "idle"), NickChanged("#a", Who("bob", "web"), "rob", 4.0,
                                                                               "name reserved")]:
            self.assertEqual(noticeEvent(checkEvent(json.loads(json.dumps(noticeWire(event))))), event)

    def test_eventsAsRedisScriptsWriteThem(self) -> None:
        """cjson writes an empty list as {}: a server without members that leaves."""
        self.assertEqual(parseBatch(b'{"n":"x","t":0,"e":[["g","x",{},"server stopped"]]}'),
                         ("x", 0.0, [["g", "x", [], "server stopped"]]))
        self.assertEqual(parseBatch(b'{"e":[["x","here","alice"]],"t":0,"n":"x"}'),
                         ("x", 0.0, [["x", "here", "alice"]]))

    def test_messagesFromAServerNotOfTheClusterAreDropped(self) -> None:
        self.message(b"", {"n": "intruder", "e": [["n", "#lobby", "join", 1.0, "intruder", "line"]]})
        self.assertEqual(self.member.lines(), [])
        self.assertIn("cannot check a message from 'intruder' without the link", self.warnings()[0])


class SignedChannelTests(ChannelMessageTests):
    """With --cluster-secret-file: only what is signed with the secret is believed."""

    def setUp(self) -> None:
        super().setUp()
        self.bus.secret = b"s" * 32

    def message(self, ids: bytes, batch: object, secret: bytes | None = b"s" * 32) -> None:
        body = json.dumps(batch).encode()
        if secret is not None:
            body += b"\n" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        self.bus._message(b"sockproto:events", ids + b"\n" + body)
        self.clock.advance(0)

    def test_onlySignedEventsAreBelieved(self) -> None:
        said = {"n": "there", "t": 0, "e": [["m", "#lobby", 1.0, "bob", "say", "hi", "line"]]}
        self.message(b"", said, secret=None)
        self.message(b"", said, secret=b"w" * 32)
        renamed = ["n", "#lobby", "nick", 1.0, "mallory", "line", "bob", ""]
        self.message(b"", {"n": "there", "e": [renamed]}, secret=None)
        self.assertEqual(self.member.lines(), [])
        self.assertEqual(self.bus.rejected, 3)
        self.message(b"", said)
        self.assertEqual(len(self.member.lines()), 1)

    def test_remoteEventsArriveAsEvents(self) -> None:
        """
        What other servers' members do reaches this server's faces as the
        events it was, with their faces (signed: notices need no check in Redis).
        """
        got: list[Any] = []

        class RecordingFace:
            name = "rec"

            def render(self, event: Any, recipient: Any) -> bytes:
                got.append(event)
                return b"."

            def membersChanged(self, room: str, members: Any) -> None:
                pass

        self.hub.leave(self.member, "quit")
        self.member.face = RecordingFace()
        self.hub.enter(self.member)
        self.clock.advance(0)
        del got[:]
        self.message(b"8-0", {"n": "there", "t": 0, "e": [
            ["m", "#lobby", 5.0, "bob", "me", "waves", "web"],
            ["n", "#lobby", "nick", 6.0, "bob", "web", "rob", ""],
            ["n", "#lobby", "quit", 7.0, "rob", "web", "connection closed"],
        ]})
        self.message(b"", {"n": "there", "t": 0, "e": [["p", "here", self.member.nick, 8.0, "carol", "psst", "irc"]]})
        self.assertEqual(got, [
            Action("#lobby", Who("bob", "web"), "waves", 5.0),
            NickChanged("#lobby", Who("bob", "web"), "rob", 6.0),
            Quit("#lobby", Who("rob", "web"), 7.0, "connection closed"),
            PrivateMessage(Who("carol", "irc"), self.member.nick, "psst", 8.0),
        ])

    def test_whatThisServerPublishesVerifies(self) -> None:
        notice = ["n", "#lobby", "join", 1.0, "carol", "web"]
        payload = self.bus._signed(json.dumps({"n": "there", "t": 0, "e": [notice]}))
        self.bus._message(b"sockproto:events", b"\n" + payload.encode())
        self.clock.advance(0)
        self.assertEqual(self.member.lines(), ["*** carol joined #lobby"])
        unsigned = RedisChatBus(self.clock, parseRedisURL("redis://127.0.0.1"), ClusterHistory(), "other")
        self.assertEqual(unsigned._signed("{}"), "{}")
