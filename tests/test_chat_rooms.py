"""A chat member in several rooms at once (the hub's joinAlso and part, as IRC uses them), without a reactor."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.chat.events import ChatEvent, Joined, Message, NickChanged, Parted, Quit, RefusalCode, Who
from sockproto.chat.events import History as HistoryEvent
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import LOBBY, ChatError, ChatHub
from sockproto.chat.text import validNick
from tests.test_chat import FakeMember


class EventFace:
    """A face whose rendering is the event itself, kept by the member it is written to."""

    name = "ev"

    def __init__(self) -> None:
        self.pending: dict[int, ChatEvent] = {}

    def render(self, event: ChatEvent, recipient: object) -> bytes:
        key = id(event)
        self.pending[key] = event
        return f"{key};".encode()

    def membersChanged(self, room: str, members: object) -> None:
        pass


class EventMember:
    """A member that records the events it is told, in order."""

    def __init__(self, face: EventFace) -> None:
        self.nick = ""
        self.room = None
        self.face = face
        self.events: list[ChatEvent] = []

    def send(self, data: bytes) -> None:
        self.events += [self.face.pending[int(key)] for key in data.decode().split(";") if key]

    def take(self) -> list[ChatEvent]:
        found, self.events = self.events, []
        return found


class SeveralRoomsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock), maxRooms=5)
        self.face = EventFace()
        self.irc = EventMember(self.face)
        self.other = EventMember(self.face)
        self.line = FakeMember()
        self.hub.enter(self.irc, lobby=False)
        self.hub.enter(self.other, lobby=False)
        self.hub.enter(self.line)  # the line face: in #lobby, one room at a time
        self.clock.advance(0)
        for member in (self.irc, self.other):
            member.take()
        self.line.lines()

    def names(self, member: EventMember) -> list[str]:
        return [room.name for room in self.hub.roomsOf(member)]

    def test_enteringOutsideTheLobby(self) -> None:
        """A member let in with lobby=False is in no room, and no one is told of it."""
        self.assertIsNone(self.irc.room)
        self.assertEqual(self.names(self.irc), [])
        self.assertEqual([m.nick for m in self.hub.rooms[LOBBY].members], [self.line.nick])

    def test_joinAlsoKeepsTheOtherRooms(self) -> None:
        """The first room is the member's room; the next ones are added; each room's members see the join."""
        self.hub.joinAlso(self.irc, "#a")
        self.hub.joinAlso(self.irc, LOBBY)
        self.clock.advance(0)
        self.assertEqual(self.names(self.irc), ["#a", LOBBY])
        self.assertIs(self.irc.room, self.hub.rooms["#a"])
        self.assertEqual([(type(e), e.room) for e in self.irc.take()], [(Joined, "#a"), (Joined, LOBBY)])
        self.assertEqual(self.line.lines(), [f"*** {self.irc.nick} joined {LOBBY}"])

    def test_joinAlsoRefusals(self) -> None:
        """A bad name, a room already joined, and too many rooms are refused with their codes."""
        self.hub.joinAlso(self.irc, "#a")
        for name, code in (("#has.dot", RefusalCode.BAD_ROOM), ("#a", RefusalCode.ALREADY_IN_ROOM)):
            with self.assertRaises(ChatError) as caught:
                self.hub.joinAlso(self.irc, name)
            self.assertEqual(caught.exception.code, code)
        for name in ("#b", "#c", "#d"):
            self.hub.joinAlso(self.irc, name)
        with self.assertRaises(ChatError) as caught:
            self.hub.joinAlso(self.irc, "#e")  # #lobby, #a-#d: maxRooms is 5
        self.assertEqual(caught.exception.code, RefusalCode.TOO_MANY_ROOMS)

    def test_sayToOneOfItsRooms(self) -> None:
        """A message goes to the room named, only to its members; a room not joined is refused."""
        self.hub.joinAlso(self.irc, "#a")
        self.hub.joinAlso(self.irc, LOBBY)
        self.hub.joinAlso(self.other, "#a")
        self.clock.advance(0)
        self.irc.take()
        self.other.take()
        self.line.lines()
        self.hub.say(self.irc, "to the lobby", LOBBY)
        self.hub.act(self.irc, "waves at a", "#a")
        self.clock.advance(0)
        lines = self.line.lines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].endswith(f"<{self.irc.nick}> to the lobby"), lines)
        said = self.other.take()
        self.assertEqual([(type(e), e.room, e.text) for e in said], [(type(said[0]), "#a", "waves at a")])
        self.assertEqual(self.irc.take(), [])
        with self.assertRaises(ChatError) as caught:
            self.hub.say(self.other, "x", LOBBY)
        self.assertEqual(caught.exception.code, RefusalCode.NOT_IN_ROOM)
        self.assertEqual([e.text for e in self.hub.history.recent(LOBBY, 5)], ["to the lobby"])

    def test_noticesToARoomAndToANick(self) -> None:
        """hub.notice and privateMessage(notice=True) tell Notice and PrivateNotice events."""
        from sockproto.chat.events import Notice, PrivateNotice

        self.hub.joinAlso(self.irc, "#a")
        self.hub.joinAlso(self.other, "#a")
        self.clock.advance(0)
        self.other.take()
        self.irc.take()
        self.hub.notice(self.irc, "fyi", "#a")
        self.hub.privateMessage(self.irc, self.other.nick, "psst", notice=True)
        self.clock.advance(0)
        self.assertEqual([type(e) for e in self.other.take()], [Notice, PrivateNotice])
        self.assertEqual([type(e) for e in self.irc.take()], [PrivateNotice])  # its own copy (echo)

    def test_partLeavesOneRoom(self) -> None:
        """Parting: the room hears it, so does the member; its next room becomes its room; empty rooms go."""
        self.hub.joinAlso(self.irc, "#a")
        self.hub.joinAlso(self.irc, LOBBY)
        self.clock.advance(0)
        self.irc.take()
        self.line.lines()
        self.hub.part(self.irc, "#a", "bye")
        self.clock.advance(0)
        self.assertEqual(self.irc.take(), [Parted("#a", Who(self.irc.nick, "ev"), 1000.0, "bye")])
        self.assertIs(self.irc.room, self.hub.rooms[LOBBY])
        self.assertNotIn("#a", self.hub.rooms)
        self.assertNotIn(self.irc, self.hub.extraRooms)
        with self.assertRaises(ChatError) as caught:
            self.hub.part(self.irc, "#a")
        self.assertEqual(caught.exception.code, RefusalCode.NOT_IN_ROOM)
        self.hub.part(self.irc, LOBBY)
        self.clock.advance(0)
        self.assertEqual(self.line.lines(), [f"*** {self.irc.nick} left {LOBBY}"])
        self.assertIsNone(self.irc.room)
        self.assertIn(LOBBY, self.hub.rooms)  # the lobby stays

    def test_quitIsToldOnceToEachWhoSharesARoom(self) -> None:
        """Two shared rooms, one quit told: once to the other member, once to the line member of one room."""
        for name in ("#a", "#b", LOBBY):
            self.hub.joinAlso(self.irc, name)
        for name in ("#a", "#b"):
            self.hub.joinAlso(self.other, name)
        self.clock.advance(0)
        self.other.take()
        self.line.lines()
        self.hub.say(self.other, "before", "#b")
        self.hub.leave(self.irc, "gone")
        self.assertEqual([type(e) for e in self.other.take()], [Quit])
        self.assertEqual(self.line.lines(), [f"*** {self.irc.nick} left {LOBBY} (gone)"])
        self.assertEqual(self.names(self.irc), [])
        self.assertNotIn(self.irc, self.hub.extraRooms)
        self.assertEqual([m.nick for m in self.hub.rooms["#a"].members], [self.other.nick])

    def test_nickChangeIsToldOnce(self) -> None:
        """A rename in two shared rooms: the member and the other one are told once, after what was said."""
        for name in ("#a", "#b"):
            self.hub.joinAlso(self.irc, name)
            self.hub.joinAlso(self.other, name)
        self.clock.advance(0)
        self.irc.take()
        self.other.take()
        old = self.irc.nick
        self.hub.say(self.other, "before", "#b")
        self.hub.changeNick(self.irc, "renamed")
        self.clock.advance(0)
        told = self.irc.take()
        self.assertEqual([type(e) for e in told], [Message, NickChanged])
        self.assertEqual(told[1], NickChanged("#a", Who(old, "ev"), "renamed", 1000.0))
        self.assertEqual([type(e) for e in self.other.take()], [NickChanged])

    def test_historyOfTheRoomJoined(self) -> None:
        """Joining a second room replays that room's history, or leaves it to the face."""
        self.hub.joinAlso(self.other, "#a")
        self.hub.say(self.other, "earlier", "#a")
        self.hub.joinAlso(self.irc, LOBBY)
        self.hub.joinAlso(self.irc, "#a")
        self.clock.advance(0)
        told = self.irc.take()
        self.assertEqual([(type(e), e.room) for e in told], [(Joined, LOBBY), (Joined, "#a"), (HistoryEvent, "#a")])
        replay = [e for e in told if isinstance(e, HistoryEvent)][0]
        self.assertEqual((replay.room, [m.text for m in replay.entries]), ("#a", ["earlier"]))
        self.hub.part(self.irc, "#a")
        self.hub.joinAlso(self.irc, "#a", history=False)
        self.clock.advance(0)
        self.assertNotIn(HistoryEvent, [type(e) for e in self.irc.take()])

    def test_namesOfAnyRoom(self) -> None:
        """The names of a room named, whether or not the asker is in it."""
        self.hub.joinAlso(self.irc, "#a")
        self.assertEqual(self.hub.names(self.other, "#a"), [self.irc.nick])
        self.assertEqual(self.hub.names(self.line), [self.line.nick])
        got: list[list[str]] = []
        self.hub.whenNames(self.line, "#a").addCallback(got.append)
        self.assertEqual(got, [[self.irc.nick]])

    def test_lineFaceStillMoves(self) -> None:
        """The line face's /join moves its member, as before; it never has extra rooms."""
        self.hub.join(self.line, "#a")
        self.assertEqual(self.names(self.line), ["#a"])  # type: ignore[arg-type]
        self.assertEqual(self.hub.extraRooms, {})


class NickCharactersTests(unittest.TestCase):
    def test_ircSpecialsAreNickCharacters(self) -> None:
        """IRC's special characters are valid in nicks on every face; IRC's separators are not."""
        for nick in ("[alice]", "bob|away", "a\\b", "x^", "{y}", "z`", "_-"):
            self.assertTrue(validNick(nick), nick)
        for nick in ("a!b", "a@b", "a,b", "a*b", "a?b", "#a", "a:b", "a.b", "a b"):
            self.assertFalse(validNick(nick), nick)

    def test_uniquenessIsAsciiCaseInsensitive(self) -> None:
        """[Bob] and [bob] are one name; [bob] and {bob} are two (CASEMAPPING=ascii)."""
        clock = Clock()
        hub = ChatHub(clock, History(MEMORY, clock))
        first, second = FakeMember(), FakeMember()
        hub.enter(first)
        hub.enter(second)
        hub.changeNick(first, "[Bob]")
        with self.assertRaises(ChatError) as caught:
            hub.changeNick(second, "[bob]")
        self.assertEqual(caught.exception.code, RefusalCode.NICK_IN_USE)
        hub.changeNick(second, "{bob}")
        self.assertEqual(second.nick, "{bob}")


class BigRoomsTests(unittest.TestCase):
    """Several rooms and --announce-joins-up-to: big rooms hear no joins, parts, quits or renames."""

    def test_bigRoomsAreNotTold(self) -> None:
        clock = Clock()
        hub = ChatHub(clock, History(MEMORY, clock), announceJoinsUpTo=2)
        face = EventFace()
        irc, small, crowd = EventMember(face), EventMember(face), [EventMember(face) for _ in range(3)]
        for member in (irc, small, *crowd):
            hub.enter(member, lobby=False)
        hub.joinAlso(small, "#small")
        for member in crowd:
            hub.joinAlso(member, "#big")
        clock.advance(0)
        for member in (irc, small, *crowd):
            member.take()
        hub.joinAlso(irc, "#small")
        hub.joinAlso(irc, "#big")
        clock.advance(0)
        self.assertEqual([(type(e), e.room) for e in irc.take()], [(Joined, "#small"), (Joined, "#big")])
        self.assertEqual([type(e) for e in small.take()], [Joined])
        self.assertEqual(crowd[0].take(), [])
        hub.changeNick(irc, "renamed")
        clock.advance(0)
        self.assertEqual([type(e) for e in irc.take()], [NickChanged])
        self.assertEqual([type(e) for e in small.take()], [NickChanged])
        self.assertEqual(crowd[0].take(), [])
        hub.part(irc, "#small")
        clock.advance(0)
        self.assertEqual([type(e) for e in irc.take()], [Parted])  # its own PART, always
        hub.leave(irc, "bye")
        self.assertEqual(crowd[0].take(), [])
