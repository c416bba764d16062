"""The chat's structured events (sockproto.chat.events): values faces render without parsing text."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.chat import events
from sockproto.chat.events import (
    UNKNOWN_FACE,
    Action,
    ChatEvent,
    Joined,
    Membership,
    Message,
    NickChanged,
    Parted,
    PrivateMessage,
    Quit,
    Refusal,
    RefusalCode,
    ServerNotice,
    Who,
    membershipChanged,
)
from sockproto.chat.events import History as HistoryEvent
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from tests.test_chat import FakeMember


class WhoTests(unittest.TestCase):
    def test_mask(self):
        """A member's IRC mask names its face, as user and as host."""
        self.assertEqual(Who("bob", "web").mask, "bob!web@web.sockproto")
        self.assertEqual(Who("alice", "line").mask, "alice!line@line.sockproto")

    def test_unknownFace(self):
        """A name whose face is not known (history) has a mask that says so."""
        self.assertEqual(Who("old").face, UNKNOWN_FACE)
        self.assertEqual(Who("old").mask, "old!sockproto@sockproto")


class EventTests(unittest.TestCase):
    def test_kindsAreUnique(self):
        """Every event class has a kind of its own: faces dispatch on it."""
        classes = [c for c in vars(events).values()
                   if isinstance(c, type) and issubclass(c, ChatEvent) and c is not ChatEvent]
        kinds = [c.kind for c in classes]
        self.assertEqual(len(kinds), len(set(kinds)))
        self.assertNotIn("", kinds)

    def test_values(self):
        """Events are values: equal when what happened is the same, and of no other kind."""
        message = Message("#lobby", Who("bob", "line"), "hi", 1.5)
        self.assertEqual(message, Message("#lobby", Who("bob", "line"), "hi", 1.5))
        self.assertNotEqual(message, Message("#lobby", Who("bob", "web"), "hi", 1.5))
        self.assertNotEqual(message, Action("#lobby", Who("bob", "line"), "hi", 1.5))
        self.assertFalse(hasattr(message, "__dict__"))  # slots: small, quick to make

    def test_membership(self):
        """Joins and nick changes change who is in a room; messages do not."""
        joined = Joined("#lobby", Who("bob"), 1.0)
        said = Message("#lobby", Who("bob"), "hi", 1.0)
        self.assertTrue(membershipChanged([said, joined]))
        self.assertFalse(membershipChanged([said]))
        self.assertTrue(NickChanged(None, Who("a"), "b", 1.0).membership)

    def test_prefix(self):
        """A member list entry has IRC's prefix for its highest status."""
        self.assertEqual([Membership("a", operator=True, voiced=True).prefix, Membership("b", voiced=True).prefix,
                          Membership("c").prefix], ["@", "+", ""])


class RecordingFace:
    """A face that records what it is asked to render, and renders each event as its kind."""

    name = "rec"

    def __init__(self) -> None:
        self.rendered: list[tuple[ChatEvent, object]] = []
        self.changed: list[tuple[str, list[str]]] = []

    def render(self, event, recipient):
        self.rendered.append((event, recipient))
        return event.kind.encode() + b";"

    def membersChanged(self, room, members):
        self.changed.append((room, sorted(m.nick for m in members)))

    def take(self) -> list[tuple[ChatEvent, object]]:
        found, self.rendered = self.rendered, []
        return found


class RecordingMember:
    def __init__(self, face) -> None:
        self.nick = ""
        self.room = None
        self.face = face
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    def take(self) -> list[bytes]:
        found, self.writes = self.writes, []
        return found


class HubEventTests(unittest.TestCase):
    """The hub tells its members what happened as events, rendered once per face for a room."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock))
        self.face = RecordingFace()
        self.a, self.b, self.c = (RecordingMember(self.face) for _ in range(3))
        self.line = FakeMember()
        for member in (self.a, self.b, self.c, self.line):
            self.hub.enter(member)
        self.clock.advance(0)
        self.face.take()
        self.face.changed = []
        for member in (self.a, self.b, self.c):
            member.take()
        self.line.lines()

    def test_aRoomsBatchIsRenderedOncePerFace(self) -> None:
        """Three members of a face, two messages in a turn: two renderings, and one write per member."""
        self.hub.say(self.a, "one")
        self.hub.act(self.a, "two")
        self.clock.advance(0)
        rendered = self.face.take()
        self.assertEqual(rendered, [
            (Message("#lobby", Who("guest1", "rec"), "one", 1000.0), None),
            (Action("#lobby", Who("guest1", "rec"), "two", 1000.0), None),
        ])
        self.assertEqual(self.b.take(), [b"message;action;"])
        self.assertEqual(self.c.take(), [b"message;action;"])
        self.assertEqual(self.a.take(), [])  # one's own lines are not sent back
        self.assertEqual([line[11:] for line in self.line.lines()], ["<guest1> one", "* guest1 two"])

    def test_speakersGetWhatOthersSaid(self) -> None:
        self.hub.say(self.a, "from a")
        self.hub.say(self.b, "from b")
        self.clock.advance(0)
        self.assertEqual(len(self.face.take()), 2)
        self.assertEqual((self.a.take(), self.b.take(), self.c.take()),
                         ([b"message;"], [b"message;"], [b"message;message;"]))

    def test_comingAndGoing(self) -> None:
        """Joins, parts, quits and nick changes are events naming who, with the face it came through."""
        self.hub.join(self.a, "#dev")
        self.hub.changeNick(self.b, "bob")
        self.hub.leave(self.c, "idle")
        self.clock.advance(0)
        events = [event for event, recipient in self.face.take()]
        self.assertEqual(events, [
            Parted("#lobby", Who("guest1", "rec"), 1000.0),
            NickChanged("#lobby", Who("guest2", "rec"), "bob", 1000.0),
            Quit("#lobby", Who("guest3", "rec"), 1000.0, "idle"),
            Joined("#dev", Who("guest1", "rec"), 1000.0),
        ])
        # Once per batch that changed a room's members (#lobby's is written before each of the
        # next changes there), with that face's members there.
        self.assertEqual(self.face.changed, [("#lobby", ["bob", "guest3"]), ("#lobby", ["bob", "guest3"]),
                                             ("#lobby", ["bob"]), ("#dev", ["guest1"])])
        self.hub.say(self.b, "no change")
        self.clock.advance(0)
        self.assertEqual(len(self.face.changed), 4)

    def test_whatIsForOneMemberIsRenderedForIt(self) -> None:
        """A private message, its copy, a history: rendered with their recipient (IRC numerics name it)."""
        self.hub.say(self.line, "before")
        self.hub.privateMessage(self.line, "guest1", "psst")
        self.hub.replay(self.b, 5)
        rendered = self.face.take()
        self.assertEqual(rendered[1:], [
            (PrivateMessage(Who("guest4", "line"), "guest1", "psst", 1000.0), self.a),
            (HistoryEvent("#lobby", (Message("#lobby", Who("guest4"), "before", 1000.0),)), self.b),
        ])
        # The room's message came first (in the batch flushed before the private message).
        self.assertEqual(rendered[0], (Message("#lobby", Who("guest4", "line"), "before", 1000.0), None))
        self.assertEqual(self.a.take(), [b"message;", b"private;"])
        self.assertEqual([line[11:] for line in self.line.lines()], ["-> *guest1* psst"])

    def test_announcementsAreRenderedOncePerFace(self) -> None:
        self.hub.announce("the server is going down")
        self.assertEqual(self.face.take(), [(ServerNotice("the server is going down"), None)])
        self.assertEqual([m.take() for m in (self.a, self.b, self.c)], [[b"server;"]] * 3)
        self.assertEqual(self.line.lines(), ["*** the server is going down"])


class ProvidesTests(unittest.TestCase):
    def test_facesAndMembers(self) -> None:
        """The line and web faces are IChatFaces; a line client is an IChatMember."""
        from twisted.internet.testing import StringTransport
        from zope.interface.verify import verifyObject

        from sockproto.chat.events import IChatFace, IChatMember
        from sockproto.chat.lineface import LINE_FACE
        from sockproto.chat.protocol import ChatFactory
        from sockproto.chat.web import WebChatFactory

        clock = Clock()
        hub = ChatHub(clock, History(MEMORY, clock))
        factory = ChatFactory(clock, hub)
        self.assertTrue(verifyObject(IChatFace, LINE_FACE))
        self.assertTrue(verifyObject(IChatFace, WebChatFactory(factory, []).face))
        member = factory.buildProtocol(None)
        member.makeConnection(StringTransport())
        self.assertTrue(verifyObject(IChatMember, member))
        self.assertEqual(member.face, LINE_FACE)


class RefusalTests(unittest.TestCase):
    """A refusal says why in words (the line face's ``!!!`` line) and as a code other faces map."""

    def setUp(self) -> None:
        from twisted.internet.testing import StringTransport

        from sockproto.chat.protocol import ChatFactory

        self.clock = Clock()
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock))
        self.factory = ChatFactory(self.clock, self.hub)
        self.face = RecordingFace()
        self.members = []
        for _ in range(2):
            member = self.factory.buildProtocol(None)
            member.face = self.face
            member.makeConnection(StringTransport())
            self.members.append(member)
        self.clock.advance(0)
        self.face.take()

    def refusals(self, line: bytes) -> list[tuple[str, RefusalCode]]:
        self.members[0].dataReceived(line + b"\n")
        return [(event.reason, event.code) for event, _ in self.face.take() if isinstance(event, Refusal)]

    def test_codes(self) -> None:
        other = self.members[1].nick
        for line, code in [(b"/nick " + other.encode(), RefusalCode.NICK_IN_USE),
                           (b"/nick bad!", RefusalCode.BAD_NICK),
                           (b"/msg nobody hi", RefusalCode.NO_SUCH_NICK),
                           (b"/join #lobby", RefusalCode.ALREADY_IN_ROOM),
                           (b"/join #Bad", RefusalCode.BAD_ROOM),
                           (b"/msg", RefusalCode.USAGE),
                           (b"/frobnicate", RefusalCode.UNKNOWN_COMMAND),
                           (b"/login a b", RefusalCode.NO_LOGINS),
                           (b"x" * 600, RefusalCode.LINE_TOO_LONG),
                           (b"\x00binary", RefusalCode.BINARY)]:
            found = self.refusals(line)
            self.assertEqual([c for _, c in found], [code], line)
            self.assertTrue(found[0][0], line)  # and in words

    def test_theLineFaceShowsTheWordsOnly(self) -> None:
        from sockproto.chat.lineface import LINE_FACE

        self.assertEqual(LINE_FACE.render(Refusal("nickname bob is taken", RefusalCode.NICK_IN_USE), None),
                         b"!!! nickname bob is taken\n")

    def test_everyCodeIsDistinct(self) -> None:
        values = [code.value for code in RefusalCode]
        self.assertEqual(len(values), len(set(values)))


def everyKind() -> list[ChatEvent]:
    """One event of each kind there is."""
    from sockproto.chat import events as module

    who = Who("bob", "web")
    samples = [
        Message("#a", who, "hi", 1.0), Action("#a", who, "waves", 1.0),
        PrivateMessage(who, "alice", "psst", 1.0), PrivateMessage(who, "alice", "psst", 1.0, echo=True),
        module.Notice("#a", who, "fyi", 1.0), module.PrivateNotice(who, "alice", "fyi", 1.0),
        HistoryEvent("#a", (Message("#a", Who("old"), "then", 0.5),)), HistoryEvent("#a", ()),
        Joined("#a", who, 1.0), Parted("#a", who, 1.0), Quit("#a", who, 1.0, "quit"),
        NickChanged("#a", who, "rob", 1.0), module.TopicChanged("#a", who, "news", 1.0),
        module.Kicked("#a", who, "eve", 1.0, "spam"), module.ModeChanged("#a", who, "+o", ("alice",), 1.0),
        module.Away(who, "lunch"), module.MemberList("#a", (Membership("alice", operator=True), Membership("bob"))),
        module.RoomList((module.RoomInfo("#a", 2, "news"),)), module.Welcome(), module.Welcome("alice"),
        module.Welcome(loginRequired=True), module.LoggedIn("alice"), module.Help((("/x", "does x"),)),
        ServerNotice("link restored"), Refusal("no", RefusalCode.USAGE), module.Goodbye("Goodbye!"),
        module.TopicIs("#a", "news", "alice", 1.0), module.TopicIs("#a", ""), module.Invited("#a", who, "eve"),
        module.Invited("#a", who, "eve", echo=True), module.ModeIs("#a", "+nt"), module.ModeIs("#a", "+"),
        module.BanList("#a", (module.BanEntry("eve!*@*", "bob", 1.0),)), module.BanList("#a", ()),
        module.WhoisReply(who, "@#a", True, True, "lunch"), module.WhoisReply(who, ""),
        module.AwaySet("lunch"), module.AwaySet(""),
    ]
    kinds = {c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, ChatEvent) and c is not ChatEvent}
    assert {type(sample) for sample in samples} == kinds, kinds - {type(sample) for sample in samples}
    return samples


class NoticeTests(unittest.TestCase):
    def test_facesWithoutNoticesShowThemAsMessages(self) -> None:
        """The line and web faces render a notice byte for byte as the message it would otherwise be."""
        from sockproto.chat.lineface import LINE_FACE
        from sockproto.chat.web import jsonEvents

        who = Who("bob", "irc")
        pairs = [(events.Notice("#a", who, "fyi", 1.0), Message("#a", who, "fyi", 1.0)),
                 (events.PrivateNotice(who, "al", "fyi", 1.0), PrivateMessage(who, "al", "fyi", 1.0)),
                 (events.PrivateNotice(who, "al", "fyi", 1.0, echo=True),
                  PrivateMessage(who, "al", "fyi", 1.0, echo=True))]
        for notice, message in pairs:
            self.assertEqual(LINE_FACE.render(notice, None), LINE_FACE.render(message, None))
            self.assertEqual(jsonEvents(notice), jsonEvents(message))
            self.assertNotEqual(notice, message)


class EveryFaceRendersEveryKindTests(unittest.TestCase):
    def test_lineFace(self) -> None:
        from sockproto.chat.lineface import LINE_FACE

        for event in everyKind():
            lines = LINE_FACE.render(event, None).decode().split("\n")
            self.assertEqual(lines[-1], "", event)  # whole lines
            self.assertTrue(all(line and line.isprintable() for line in lines[:-1]), event)

    def test_webFace(self) -> None:
        from sockproto.chat.web import jsonEvents

        for event in everyKind():
            objects = jsonEvents(event)
            self.assertTrue(objects, event)
            self.assertTrue(all(isinstance(o.get("type"), str) for o in objects), event)
            json.dumps(objects)  # JSON, nothing else
