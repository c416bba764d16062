"""Crowds: joins, leaves and nick changes announced only in rooms up to a size (without sockets)."""

import re

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial import unittest

from sockproto.chat.bus import LocalBus
from sockproto.chat.events import Joined, Message, NickChanged, Parted, Quit, Who
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ANNOUNCE_JOINS_DEFAULT, ChatHub
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.service import Options, buildService
from sockproto.chat.web import REFRESH_DELAY, WebChatFactory, refreshDelay
from sockproto.server.listen import listeningServices
from tests.test_chat import ChatProtocolCase

STAMP = r"\[\d\d:\d\d:\d\d\] "
PEER = IPv4Address("TCP", "192.0.2.7", 4321)


class Member:
    def __init__(self):
        self.nick = ""
        self.room = None
        self.received = b""

    def send(self, data):
        self.received += data

    def lines(self):
        out = [re.sub(STAMP, "", line) for line in self.received.decode().splitlines()]
        self.received = b""
        return out


class RecordingBus(LocalBus):
    """The bus of a server alone, noting the notices it would carry to other servers."""

    def __init__(self):
        self.notices = []

    def noticed(self, event):
        self.notices.append((event.kind, event.room, event.who.nick))


class ThresholdTests(unittest.TestCase):
    """A hub that announces comings and goings in rooms of at most 3."""

    def setUp(self):
        self.clock = Clock()
        self.bus = RecordingBus()
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock), bus=self.bus, announceJoinsUpTo=3)
        self.members = []

    def arrive(self, count=1):
        for _ in range(count):
            member = Member()
            self.hub.enter(member)
            self.members.append(member)
        self.clock.advance(0)
        return self.members[-1]

    def quiet(self):
        self.clock.advance(0)
        for member in self.members:
            member.lines()
        del self.bus.notices[:]

    def test_defaultIsAboutAHundred(self):
        self.assertEqual(ANNOUNCE_JOINS_DEFAULT, 100)
        self.assertEqual(ChatHub(self.clock, History(MEMORY, self.clock)).announceJoinsUpTo, 100)

    def test_arrivalsAnnouncedUpToTheSize(self):
        """The 2nd and 3rd arrivals are announced; the 4th is not, and nothing of it crosses to other servers."""
        first = self.arrive()
        self.quiet()
        self.arrive(2)
        self.assertEqual(first.lines(), ["*** guest2 joined #lobby", "*** guest3 joined #lobby"])
        self.assertEqual(len(self.bus.notices), 2)
        self.quiet()
        fourth = self.arrive()
        self.assertEqual([m.lines() for m in self.members[:3]], [[], [], []])
        self.assertEqual(self.bus.notices, [])
        # The newcomer itself learns its name and room as always.
        self.assertEqual(fourth.lines(), ["*** guest4 joined #lobby"])
        self.assertEqual(self.hub.roomList(), [("#lobby", 4)])

    def test_leavingABigRoomIsQuiet(self):
        """A quit from a room of 4 is not announced; from a room of 3 it is (the one leaving counts)."""
        self.arrive(4)
        self.quiet()
        self.hub.leave(self.members[0], "quit")
        self.clock.advance(0)
        self.assertEqual([m.lines() for m in self.members[1:]], [[], [], []])
        self.assertEqual(self.bus.notices, [])
        self.hub.leave(self.members[1], "connection closed")
        self.clock.advance(0)
        self.assertEqual(self.members[2].lines(), ["*** guest2 left #lobby (connection closed)"])
        self.assertEqual(self.bus.notices, [("quit", "#lobby", "guest2")])

    def test_movingBetweenRooms(self):
        """Leaving a big room for a small one: announced where it is small only."""
        self.arrive(5)
        mover = self.members[4]
        self.hub.join(self.members[0], "#dev")
        self.quiet()
        self.hub.join(mover, "#dev")
        self.clock.advance(0)
        self.assertEqual(self.members[1].lines(), [], "the lobby held 4: no part notice")
        self.assertEqual(self.members[0].lines(), ["*** guest5 joined #dev"])
        self.assertEqual(mover.lines(), ["*** guest5 joined #dev"])
        self.assertEqual(self.bus.notices, [("join", "#dev", "guest5")])
        self.hub.join(self.members[1], "#dev")
        self.clock.advance(0)
        self.assertEqual(self.members[2].lines(), ["*** guest2 left #lobby"], "the lobby held 3")

    def test_nickChangeInABigRoomIsTheMembersAlone(self):
        self.arrive(4)
        self.quiet()
        self.hub.changeNick(self.members[0], "alice")
        self.clock.advance(0)
        self.assertEqual(self.members[0].lines(), ["*** guest1 is now known as alice"])
        self.assertEqual([m.lines() for m in self.members[1:]], [[], [], []])
        self.assertEqual(self.hub.names(self.members[1]), ["alice", "guest2", "guest3", "guest4"])

    def test_theOwnLineComesInOrderAfterTheRoomsBatch(self):
        """A nick change in a big room reaches its member after what the room said before it."""
        self.arrive(4)
        self.quiet()
        self.hub.say(self.members[1], "before")
        self.hub.changeNick(self.members[0], "alice")
        self.clock.advance(0)
        self.assertEqual(self.members[0].lines(), ["<guest2> before", "*** guest1 is now known as alice"])

    def test_messagesStillReachEveryone(self):
        self.arrive(6)
        self.quiet()
        self.hub.say(self.members[0], "hello crowd")
        self.clock.advance(0)
        self.assertEqual([m.lines() for m in self.members[1:]], [["<guest1> hello crowd"]] * 5)

    def test_fromOtherServers(self):
        """
        In a cluster, another server's arrivals and departures are shown only
        in a room small here too; its messages always.
        """
        self.arrive(2)
        self.quiet()
        self.hub.remoteEvent("#lobby", Joined("#lobby", Who("ann", "line"), 1.0))
        self.hub.remoteEvent("#lobby", Quit("#lobby", Who("bob", "web"), 1.0, "quit"))
        self.clock.advance(0)
        self.assertEqual(self.members[0].lines(), ["*** ann joined #lobby", "*** bob left #lobby (quit)"])
        self.arrive(2)
        self.quiet()
        for event in (
            Joined("#lobby", Who("cat", "line"), 1.0),
            Parted("#lobby", Who("ann", "line"), 1.0),
            NickChanged("#lobby", Who("dan", "irc"), "dave", 1.0),
            Message("#lobby", Who("dan", "irc"), "hello from afar", 1.0),
        ):
            self.hub.remoteEvent("#lobby", event)
        self.clock.advance(0)
        self.assertEqual([m.lines() for m in self.members], [["<dan> hello from afar"]] * 4)

    def test_zeroAnnouncesNothing(self):
        self.hub.announceJoinsUpTo = 0
        first = self.arrive()
        self.assertEqual(first.lines(), ["*** guest1 joined #lobby"])
        self.arrive()
        self.assertEqual(first.lines(), [])
        self.hub.leave(self.members[1], "quit")
        self.clock.advance(0)
        self.assertEqual(first.lines(), [])
        self.assertEqual(self.bus.notices, [])


class HistoryHasNoAnnouncementsTests(unittest.TestCase):
    """Replayed history is what was said: never who came and went, in small rooms or big."""

    def check(self, threshold):
        clock = Clock()
        hub = ChatHub(clock, History(MEMORY, clock), announceJoinsUpTo=threshold)
        members = [Member() for _ in range(5)]
        for member in members:
            hub.enter(member)
        hub.say(members[0], "one")
        hub.changeNick(members[1], "bob")
        hub.leave(members[2], "quit")
        hub.act(members[1], "waves")
        hub.join(members[3], "#dev")
        clock.advance(0)
        late = Member()
        hub.enter(late)
        clock.advance(0)
        self.assertEqual(
            late.lines(),
            ["*** guest6 joined #lobby", "*** last 2 messages in #lobby:", "<guest1> one", "* bob waves",
             "*** end of history of #lobby"],
        )
        hub.replay(members[0], 20)
        self.assertEqual(members[0].lines()[-4:], ["*** last 2 messages in #lobby:", "<guest1> one", "* bob waves",
                                                   "*** end of history of #lobby"])

    def test_smallRoom(self):
        self.check(100)

    def test_bigRoom(self):
        self.check(2)


class CountingTransport(StringTransport):
    def __init__(self, *args, **kwargs):
        StringTransport.__init__(self, *args, **kwargs)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        StringTransport.write(self, data)


class ProtocolTests(ChatProtocolCase):
    """Line clients of a chat that announces in rooms of at most 2."""

    def setUp(self):
        self.clock = Clock()
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock), announceJoinsUpTo=2)
        self.factory = ChatFactory(self.clock, self.hub, floodRate=5, floodBurst=20)

    def test_welcomeOfANewcomerToABigRoom(self):
        _, t1 = self.connect()
        _, t2 = self.connect()
        self.assertEqual(self.output(t1)[-1], "*** guest2 joined #lobby")
        self.output(t2)
        _, t3 = self.connect()
        self.assertEqual(self.output(t1), [])
        self.assertEqual(self.output(t2), [])
        self.assertEqual(
            self.output(t3), ["Welcome to sockproto chat! Type /help for commands.", "*** guest3 joined #lobby"]
        )

    def test_theWelcomeIsOneWrite(self):
        """Greeting, one's own arrival and the room's history: one write (one system call) per arrival."""
        speaker, _ = self.connect()
        speaker.dataReceived(b"hello\n")
        self.clock.advance(0)
        for _ in range(3):  # in a room that announces arrivals and in one that does not
            proto = self.factory.buildProtocol(PEER)
            transport = CountingTransport(peerAddress=PEER)
            proto.makeConnection(transport)
            self.assertEqual(transport.writes, 1)
            lines = [re.sub(STAMP, "", line) for line in transport.value().decode().splitlines()]
            self.assertEqual(
                lines,
                ["Welcome to sockproto chat! Type /help for commands.", f"*** {proto.nick} joined #lobby",
                 "*** last 1 message in #lobby:", "<guest1> hello", "*** end of history of #lobby"],
            )

    def test_anIdleMemberKeepsNoWriter(self):
        """
        A member written nothing since its welcome holds no writer of its own
        (memory of a crowd); its first output makes one, and it gets everything.
        """
        clients = [self.connect() for _ in range(4)]
        self.clock.advance(0)
        for _, transport in clients:
            transport.clear()
        # guest1 and guest2 were told guest2's arrival (a room of 2); guest3 and guest4 nothing since.
        self.assertEqual([("_transmit" in vars(proto)) for proto, _ in clients], [True, True, False, False])
        clients[0][0].dataReceived(b"hi all\n")
        for proto, transport in clients[1:]:
            self.assertEqual(self.output(transport), ["<guest1> hi all"])
            self.assertIn("_transmit", vars(proto))

    def test_floodControlFromTheFirstLine(self):
        """The flood bucket is made with the first line read, full: the burst, then refusals."""
        proto, transport = self.connect()
        self.factory.floodBurst = 3
        self.output(transport)
        proto.dataReceived(b"/list\n" * 5)
        lines = self.output(transport)
        self.assertEqual(len([line for line in lines if line.startswith("*** 1 in #lobby")]), 3)
        self.assertIn("!!! rate limited: too many lines, slow down", lines)

    def test_memberListOnRequest(self):
        """Nobody is told of arrivals in a big room; /list and /rooms say who and how many are there."""
        clients = [self.connect() for _ in range(4)]
        proto, transport = clients[0]
        self.output(transport)
        proto.dataReceived(b"/list\n/rooms\n")
        self.assertEqual(
            self.output(transport),
            ["*** 4 in #lobby: guest1 guest2 guest3 guest4", "*** rooms:", "***   #lobby (4)"],
        )

    def test_byteAtATimeAndInChunks(self):
        """A command split over reads or several in one read: the same answers."""
        clients = [self.connect() for _ in range(3)]
        one, t1 = clients[0]
        for _, transport in clients:
            self.output(transport)
        for byte in b"/nick ann\n":
            one.dataReceived(bytes([byte]))
        one.dataReceived(b"/list\n/nick ann2\n")
        self.assertEqual(
            self.output(t1),
            ["*** guest1 is now known as ann", "*** 3 in #lobby: ann guest2 guest3", "*** ann is now known as ann2"],
        )
        self.assertEqual(self.output(clients[1][1]), [], "no nick changes of others in a big room")


class WebFaceTests(unittest.TestCase):
    """A browser in a room too big for announcements: its member list when it enters and when it asks."""

    def setUp(self):
        from tests.test_chat_web import Browser

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock), announceJoinsUpTo=3)
        self.web = WebChatFactory(ChatFactory(self.clock, self.hub), [])
        # No timers of autobahn's own on the global reactor.
        self.web.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
        self.makeBrowser = Browser

    def test_listsOnEnteringAndOnRequestOnly(self):
        for _ in range(5):
            self.hub.enter(Member())
        self.clock.advance(0)
        browser = self.makeBrowser(self.web, 40000)
        self.addCleanup(browser.protocol.onClose, True, 1000, None)
        self.clock.advance(0)
        self.clock.advance(REFRESH_DELAY)
        found = browser.events()
        [members] = [event for event in found if event["type"] == "members"]
        self.assertEqual(len(members["nicks"]), 6)
        self.assertIn({"type": "state", "nick": "guest6", "room": "#lobby"}, found)
        # Arrivals and departures: not told, and no list follows them.
        for _ in range(3):
            self.hub.enter(Member())
        self.hub.leave(next(iter(self.hub.present)), "quit")
        self.clock.advance(0)
        self.clock.advance(refreshDelay(100))
        self.assertEqual(browser.events(), [])
        # Asked for: the whole list, now.
        browser.protocol.onMessage(b'{"type": "members"}', False)
        [members] = [event for event in browser.events() if event["type"] == "members"]
        self.assertEqual(len(members["nicks"]), 8)


class OptionTests(unittest.TestCase):
    def test_default(self):
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["announce-joins-up-to"], ANNOUNCE_JOINS_DEFAULT)

    def test_reachesTheHub(self):
        options = Options()
        options.parseOptions(["--announce-joins-up-to", "7", "--history", MEMORY, "--listen", "tcp:0"])
        top = buildService(options, Clock())
        [listening] = [s for s in listeningServices(top) if s.name == "chat"]
        self.assertEqual(listening.factory.hub.announceJoinsUpTo, 7)

    def test_badValues(self):
        for value in ("-1", "many", "1.5"):
            options = Options()
            with self.assertRaises(usage.UsageError) as caught:
                options.parseOptions(["--announce-joins-up-to", value])
            self.assertIn("--announce-joins-up-to", str(caught.exception))
            self.assertIn("a whole number, 0 or more", str(caught.exception))
