"""The moderation commands on the line face: every command, mode and refusal, with StringTransport and task.Clock."""

from __future__ import annotations

from pathlib import Path

from twisted.cred import checkers
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial import unittest

from sockproto.chat.history import History
from sockproto.chat.hub import ChatHub
from sockproto.chat.login import ChatRealm
from sockproto.chat.moderator import Moderator
from sockproto.chat.protocol import ChatFactory
from tests.test_chat import ChatProtocolCase


class LineModerationCase(ChatProtocolCase):
    def setUp(self):
        super().setUp()
        self.factory.maxLineLength = 512
        self.factory.floodRate = 0

    def client(self, nick, factory=None):
        proto, transport = self.connect(factory)
        if nick:
            proto.dataReceived(f"/nick {nick}\n".encode())
        self.output(transport)
        return proto, transport

    def say(self, proto, transport, *lines):
        """Lines from a client, and what it was answered."""
        for line in lines:
            proto.dataReceived(line.encode() + b"\n")
        return self.output(transport)


class RoomTests(LineModerationCase):
    def setUp(self):
        super().setUp()
        self.alice, self.ta = self.client("alice")
        self.bob, self.tb = self.client("bob")
        self.say(self.alice, self.ta, "/join #dev")
        self.say(self.bob, self.tb, "/join #dev")
        self.output(self.ta)

    def test_creatorIsMarkedInNames(self):
        """The first in a room is its operator: /names shows @; /list and /who stay as they were."""
        self.assertEqual(self.say(self.bob, self.tb, "/names"), ["*** 2 in #dev: @alice bob"])
        self.assertEqual(self.say(self.bob, self.tb, "/who"), ["*** 2 in #dev: alice bob"])
        self.assertEqual(self.say(self.bob, self.tb, "/names #lobby"), ["*** 0 in #lobby: "])
        self.assertEqual(self.say(self.bob, self.tb, "/names #nowhere"), ["*** 0 in #nowhere: "])
        self.assertEqual(
            self.say(self.bob, self.tb, "/names bad!"), ["!!! bad room name 'bad!': use # and 1 to 32 of a-z 0-9 _ -"]
        )

    def test_topic(self):
        """/topic sets it for everyone to see, shows it, and it is shown on joining and in /rooms."""
        self.assertEqual(self.say(self.bob, self.tb, "/topic"), ["*** no topic in #dev"])
        self.assertEqual(
            self.say(self.bob, self.tb, "/topic  Release day "), ["*** bob set the topic of #dev: Release day"]
        )
        self.assertEqual(self.output(self.ta), ["*** bob set the topic of #dev: Release day"])
        self.assertEqual(self.say(self.alice, self.ta, "/topic"), ["*** topic of #dev: Release day (set by bob)"])
        carol, tc = self.client("carol")
        self.assertIn("***   #dev (2) Release day", self.say(carol, tc, "/rooms"))
        self.assertEqual(
            self.say(carol, tc, "/join #dev")[:2],
            ["*** carol joined #dev", "*** topic of #dev: Release day (set by bob)"],
        )
        self.assertEqual(self.say(carol, tc, "/topic #lobby hi"), ["!!! you are not in #lobby"])

    def test_topicLock(self):
        """+t: only operators set the topic; the refusal is one line, others see nothing."""
        self.assertEqual(self.say(self.alice, self.ta, "/mode #dev +t"), ["*** alice sets mode +t on #dev"])
        self.assertEqual(self.output(self.tb), ["*** alice sets mode +t on #dev"])
        self.assertEqual(self.say(self.bob, self.tb, "/topic mine"), ["!!! only operators set the topic of #dev (+t)"])
        self.assertEqual(self.output(self.ta), [])

    def test_kick(self):
        """An operator's /kick sends the member to #lobby, with the reason, told to the room and to it."""
        self.assertEqual(
            self.say(self.alice, self.ta, "/kick bob enough spam"),
            ["*** bob was kicked from #dev by alice (enough spam)"],
        )
        out = self.output(self.tb)
        self.assertEqual(out[:2], ["*** bob was kicked from #dev by alice (enough spam)", "*** bob joined #lobby"])
        self.assertIs(self.bob.room, self.hub.rooms["#lobby"])
        self.assertEqual(self.say(self.alice, self.ta, "/kick bob"), ["!!! bob is not in #dev"])
        self.assertEqual(
            self.say(self.bob, self.tb, "/kick alice"),
            ["!!! nobody is kicked out of #lobby: ban them (+b) and they cannot speak there"],
        )

    def test_kickRefusals(self):
        self.assertEqual(self.say(self.bob, self.tb, "/kick alice"), ["!!! you are not an operator of #dev"])
        self.assertEqual(self.say(self.bob, self.tb, "/kick"), ["!!! usage: /kick NICK [reason]"])
        self.assertEqual(self.output(self.ta), [])

    def test_opAndVoice(self):
        """/op, /deop, /voice, /devoice are modes, announced as such; only operators give them."""
        self.assertEqual(self.say(self.bob, self.tb, "/op bob"), ["!!! you are not an operator of #dev"])
        self.assertEqual(self.say(self.alice, self.ta, "/voice bob"), ["*** alice sets mode +v bob on #dev"])
        self.output(self.tb)
        self.assertEqual(self.say(self.alice, self.ta, "/names"), ["*** 2 in #dev: @alice +bob"])
        self.say(self.alice, self.ta, "/devoice bob", "/op bob")
        self.assertEqual(
            self.output(self.tb), ["*** alice sets mode -v bob on #dev", "*** alice sets mode +o bob on #dev"]
        )
        self.assertEqual(self.say(self.bob, self.tb, "/deop alice"), ["*** bob sets mode -o alice on #dev"])
        self.output(self.ta)
        self.assertEqual(self.say(self.alice, self.ta, "/op alice"), ["!!! you are not an operator of #dev"])
        self.assertEqual(self.say(self.bob, self.tb, "/op nobody"), ["!!! nobody is not in #dev"])
        self.assertEqual(self.say(self.bob, self.tb, "/op"), ["!!! usage: /op NICK"])

    def test_banKeepsOutAndMutes(self):
        """/ban NICK or MASK: the banned cannot come in, nor speak if in; /unban undoes it."""
        self.assertEqual(self.say(self.alice, self.ta, "/ban bob"), ["*** alice sets mode +b bob!*@* on #dev"])
        self.output(self.tb)
        self.assertEqual(
            self.say(self.bob, self.tb, "hello"), ["!!! you are banned from #dev (+b): you cannot speak there"]
        )
        self.assertEqual(self.output(self.ta), [])
        self.say(self.alice, self.ta, "/kick bob")
        self.output(self.tb)
        self.assertEqual(self.say(self.bob, self.tb, "/join #dev"), ["!!! you are banned from #dev (+b)"])
        self.assertEqual(
            self.say(self.alice, self.ta, "/mode #dev +b"),
            ["*** bans of #dev:", "***   bob!*@* (set by alice)", "*** end of bans of #dev"],
        )
        self.assertEqual(self.say(self.alice, self.ta, "/unban bob"), ["*** alice sets mode -b bob!*@* on #dev"])
        self.assertEqual(self.say(self.bob, self.tb, "/join #dev")[0], "*** bob joined #dev")
        self.output(self.ta)
        self.assertEqual(self.say(self.alice, self.ta, "/unban bob"), ["!!! bob!*@* is not banned from #dev"])
        self.assertEqual(
            self.say(self.alice, self.ta, "/ban *@line.sockproto"),
            ["*** alice sets mode +b *!*@line.sockproto on #dev"],
        )
        self.assertEqual(self.say(self.alice, self.ta, "/ban a b"), ["!!! usage: /ban NICK|MASK"])

    def test_moderated(self):
        """+m: only operators and voiced members speak."""
        self.say(self.alice, self.ta, "/mode #dev +m")
        self.output(self.tb)
        self.assertEqual(
            self.say(self.bob, self.tb, "hi", "/me waves"),
            ["!!! #dev is moderated (+m): only operators and voiced members may speak"] * 2,
        )
        self.say(self.alice, self.ta, "/voice bob")
        self.output(self.tb)
        self.say(self.bob, self.tb, "now I may")
        self.assertEqual(self.output(self.ta), ["<bob> now I may"])

    def test_inviteOnly(self):
        """+i: only the invited come in; the invited is told; /invite refusals."""
        self.say(self.alice, self.ta, "/mode #dev +i")
        self.output(self.tb)
        carol, tc = self.client("carol")
        self.assertEqual(
            self.say(carol, tc, "/join #dev"), ["!!! #dev is invite only (+i): an operator can /invite you"]
        )
        self.assertEqual(self.say(self.bob, self.tb, "/invite carol"), ["!!! only operators invite to #dev (+i)"])
        self.assertEqual(self.say(self.alice, self.ta, "/invite carol"), ["*** invited carol to #dev"])
        self.assertEqual(self.output(tc), ["*** alice invites you to #dev: /join #dev"])
        self.assertEqual(self.say(carol, tc, "/join #dev")[0], "*** carol joined #dev")
        self.output(self.ta)
        self.assertEqual(self.say(self.alice, self.ta, "/invite carol"), ["!!! carol is already in #dev"])
        self.assertEqual(self.say(self.alice, self.ta, "/invite nobody"), ["!!! no such nickname: nobody"])
        self.assertEqual(self.say(self.alice, self.ta, "/invite carol #other"), ["!!! you are not in #other"])
        self.assertEqual(self.say(self.alice, self.ta, "/invite"), ["!!! usage: /invite NICK [#room]"])

    def test_keyAndLimit(self):
        """+k: /join #room KEY; +l: a full room is refused."""
        self.assertEqual(
            self.say(self.alice, self.ta, "/mode #dev +kl s3cret 2"), ["*** alice sets mode +kl s3cret 2 on #dev"]
        )
        carol, tc = self.client("carol")
        self.assertEqual(self.say(carol, tc, "/join #dev"), ["!!! #dev needs a key (+k): /join #dev KEY"])
        self.assertEqual(self.say(carol, tc, "/join #dev s3cret"), ["!!! #dev is full (+l 2)"])
        self.say(self.alice, self.ta, "/mode #dev -l")
        self.assertEqual(self.say(carol, tc, "/join dev s3cret")[0], "*** carol joined #dev")
        self.assertEqual(self.say(carol, tc, "/mode #dev"), ["*** modes of #dev: +k s3cret"])

    def test_noOutsideMessagesAndSeveralModes(self):
        """Several modes at once; each problem is its own refusal, the rest is done."""
        self.assertEqual(
            self.say(self.alice, self.ta, "/mode #dev +ntx-q"),
            [
                "*** alice sets mode +nt on #dev",
                "!!! unknown mode 'x' (modes: biklmnotv)",
                "!!! unknown mode 'q' (modes: biklmnotv)",
            ],
        )
        self.assertEqual(self.say(self.alice, self.ta, "/mode #dev nt"), [])  # set already: nothing to say
        self.output(self.tb)
        self.assertEqual(self.say(self.alice, self.ta, "/mode #lobby +t"), ["!!! you are not in #lobby"])
        self.assertEqual(
            self.say(self.alice, self.ta, "/mode"), ["!!! usage: /mode #room [+|-][t n m i k l b o v] [arguments]"]
        )
        self.assertEqual(self.say(self.bob, self.tb, "/mode #dev -nt"), ["!!! you are not an operator of #dev"])

    def test_part(self):
        """/part leaves for #lobby, with a reason; not from #lobby itself."""
        self.assertEqual(self.say(self.bob, self.tb, "/part #dev see you")[0], "*** bob joined #lobby")
        self.assertEqual(self.output(self.ta), ["*** bob left #dev (see you)"])
        self.assertEqual(self.say(self.bob, self.tb, "/part"), ["!!! you are in #lobby, which you leave with /quit"])
        self.assertEqual(self.say(self.bob, self.tb, "/part #dev"), ["!!! you are not in #dev"])

    def test_operatorStatusOfAGuestEndsWhenItLeaves(self):
        """A guest operator that leaves is no operator when it comes back; the room is taken by the next alone."""
        self.say(self.alice, self.ta, "/part")
        self.say(self.alice, self.ta, "/join #dev")
        self.assertEqual(self.say(self.alice, self.ta, "/names"), ["*** 2 in #dev: alice bob"])
        self.say(self.alice, self.ta, "/part")
        self.say(self.bob, self.tb, "/part")
        self.say(self.bob, self.tb, "/join #dev")
        self.assertEqual(self.say(self.bob, self.tb, "/names"), ["*** 1 in #dev: @bob"])

    def test_nickChangeKeepsStatus(self):
        self.say(self.alice, self.ta, "/nick alicia")
        self.assertEqual(self.say(self.alice, self.ta, "/names"), ["*** 2 in #dev: @alicia bob"])

    def test_whoisAndAway(self):
        """/whois says who and where; /away is shown to whoever messages you, and in /whois."""
        self.assertEqual(
            self.say(self.bob, self.tb, "/whois alice"), ["*** alice (alice!line@line.sockproto): in @#dev"]
        )
        self.assertEqual(self.say(self.alice, self.ta, "/away  at lunch "), ["*** you are away: at lunch"])
        out = self.say(self.bob, self.tb, "/msg alice are you there?")
        self.assertEqual(out[1:], ["*** alice is away: at lunch"])
        self.assertEqual(
            self.say(self.bob, self.tb, "/whois ALICE"),
            ["*** alice (alice!line@line.sockproto): in @#dev, away: at lunch"],
        )
        self.output(self.ta)
        self.assertEqual(self.say(self.alice, self.ta, "/away"), ["*** you are back"])
        self.assertEqual(len(self.say(self.bob, self.tb, "/msg alice back?")), 1)
        self.assertEqual(self.say(self.bob, self.tb, "/whois nobody"), ["!!! no such nickname: nobody"])
        self.assertEqual(self.say(self.bob, self.tb, "/whois"), ["!!! usage: /whois NICK"])

    def test_lobbyHasNoOwner(self):
        """Nobody creates #lobby: no operator there but server operators."""
        self.say(self.alice, self.ta, "/part")
        self.assertEqual(self.say(self.alice, self.ta, "/names"), ["*** 1 in #lobby: alice"])
        self.assertEqual(self.say(self.alice, self.ta, "/mode #lobby +m"), ["!!! you are not an operator of #lobby"])

    def test_helpListsTheCommands(self):
        out = self.say(self.alice, self.ta, "/help")
        for command in ["/topic", "/part", "/names", "/whois", "/away", "/invite", "/kick", "/ban", "/op", "/mode"]:
            self.assertTrue(any(line.startswith(f"***   {command}") for line in out), command)


class VerifiedOwnerTests(LineModerationCase):
    """Logged-in members: rooms they own stay theirs; server operators rule everywhere."""

    def setUp(self):
        super().setUp()
        users = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw", bob=b"pw", root=b"pw")
        self.factory = ChatFactory(self.clock, self.hub, portal=Portal(ChatRealm(), [users]), floodRate=0)
        self.factory.moderator.serverOperators = frozenset({"root"})

    def login(self, name):
        proto, transport = self.connect()
        proto.dataReceived(f"/login {name} pw\n".encode())
        self.clock.advance(5)
        self.output(transport)
        return proto, transport

    def test_ownerStaysOwner(self):
        alice, ta = self.login("alice")
        self.say(alice, ta, "/join #dev", "/part")
        bob, tb = self.login("bob")
        self.say(bob, tb, "/join #dev")
        self.assertEqual(self.say(bob, tb, "/names"), ["*** 1 in #dev: bob"])
        self.say(alice, ta, "/join #dev")
        self.assertEqual(self.say(alice, ta, "/names"), ["*** 2 in #dev: @alice bob"])
        self.output(tb)
        self.assertEqual(
            self.say(bob, tb, "/whois alice"), ["*** alice (alice!line@line.sockproto): in @#dev, logged in"]
        )

    def test_serverOperator(self):
        """A server operator is an operator of every room, #lobby too, and cannot be kicked by others."""
        alice, ta = self.login("alice")
        self.say(alice, ta, "/join #dev")
        root, tr = self.login("root")
        self.assertEqual(self.say(root, tr, "/names"), ["*** 1 in #lobby: @root"])
        self.assertEqual(self.say(root, tr, "/mode #lobby +m"), ["*** root sets mode +m on #lobby"])
        self.assertEqual(self.say(root, tr, "/op root"), ["!!! nobody but server operators is an operator of #lobby"])
        self.say(root, tr, "/join #dev")
        self.output(ta)
        self.assertEqual(self.say(alice, ta, "/kick root"), ["!!! root is a server operator and cannot be kicked"])
        self.assertEqual(self.say(root, tr, "/kick alice bye")[0], "*** alice was kicked from #dev by root (bye)")
        self.assertEqual(
            self.say(root, tr, "/whois root"),
            ["*** root (root!line@line.sockproto): in @#dev, logged in, server operator"],
        )


class RestartTests(LineModerationCase):
    """A room's topic, modes, bans and verified owners are in the history database: they outlive a restart."""

    def test_roomStateSurvivesARestart(self):
        path = str(Path(self.mktemp()))
        clock = Clock()
        history = History(path, clock)
        history.open()
        hub = ChatHub(clock, history)
        Moderator(hub, store=history.storeRoom)
        users = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw", bob=b"pw")
        factory = ChatFactory(clock, hub, portal=Portal(ChatRealm(), [users]), floodRate=0)
        self.clock = clock
        alice, ta = self.connect(factory)
        alice.dataReceived(b"/login alice pw\n/join #dev\n/topic kept\n/mode #dev +tb spammer\n")
        clock.advance(5)
        self.assertIn("*** alice sets mode +tb spammer!*@* on #dev", self.output(ta))
        alice.dataReceived(b"/quit\n")
        d = history.close()

        def restarted(_):
            again = History(path, Clock())
            again.open()
            self.addCleanup(again.close)
            hub = ChatHub(again.clock, again)
            moderator = Moderator(hub, store=again.storeRoom)
            moderator.loadStored(again.roomStates)
            factory = ChatFactory(again.clock, hub, portal=Portal(ChatRealm(), [users]), floodRate=0)
            self.clock = again.clock
            bob, tb = self.connect(factory)
            bob.dataReceived(b"/login bob pw\n/join #dev\n/topic mine\n/names\n/mode #dev +b\n")
            again.clock.advance(5)
            out = self.output(tb)
            self.assertIn("*** topic of #dev: kept (set by alice)", out)
            self.assertIn("!!! only operators set the topic of #dev (+t)", out)
            self.assertIn("*** 1 in #dev: bob", out)
            self.assertIn("***   spammer!*@* (set by alice)", out)

        return d.addCallback(restarted)


class ServerOperatorOptionTests(unittest.TestCase):
    """--operator NAME (repeatable) and operators = [...] in the config file's [chat] table."""

    def test_commandLine(self):
        from sockproto.chat.service import Options

        options = Options()
        options.parseOptions(["--operator", "root", "--operator", "Admin", "--operators", "ops"])
        self.assertEqual(options["operator"], ["root", "Admin", "ops"])
        with self.assertRaisesRegex(usage.UsageError, r"^bad --operator 'a b': not a user name"):
            Options().parseOptions(["--operator", "a b"])
        self.assertEqual(Options()["operator"], [])

    def test_configFile(self):
        from sockproto.suite.config import ConfigError, loadConfig

        path = Path(self.mktemp() + ".toml")
        path.write_text('[chat]\nhistory = ":memory:"\noperators = ["root", "admin"]\n')
        self.assertEqual(loadConfig(str(path)).services[0].options["operator"], ["root", "admin"])
        path.write_text('[chat]\noperators = ["no way"]\n')
        with self.assertRaisesRegex(ConfigError, r"\[chat\] operators: 'no way': not a user name"):
            loadConfig(str(path))

    def test_theServiceMakesThemOperators(self):
        """The service gives the hub a moderator with the server operators, and the stored rooms."""
        from twisted.internet.testing import MemoryReactorClock

        from sockproto.chat.service import Options, buildService

        path = self.mktemp()
        history = History(path, Clock())
        history.open()
        history.storeRoom(
            "#kept",
            {
                "topic": ["kept", "alice", 1.0],
                "flags": "t",
                "key": None,
                "limit": None,
                "bans": [],
                "operators": ["alice"],
                "voiced": [],
            },
        )
        d = history.close()

        def built(_):
            options = Options()
            options.parseOptions(["--history", path, "--operator", "Root", "--listen", "tcp:0:interface=127.0.0.1"])
            top = buildService(options, MemoryReactorClock())
            self.addCleanup([s.resource for s in top if hasattr(s, "resource")][0].close)
            factories = [s.factory for s in top if hasattr(s, "factory")]
            moderator = factories[0].moderator
            self.assertEqual(moderator.serverOperators, frozenset({"root"}))
            self.assertEqual(moderator.topicOf("#kept"), "kept")
            self.assertIs(factories[0].hub.rules, moderator)

        return d.addCallback(built)


class WebObjectsTests(unittest.TestCase):
    """The web face's JSON for rooms with owners (docs/web-chat.rst)."""

    def test_topic(self):
        from sockproto.chat.events import TopicChanged, TopicIs, Who
        from sockproto.chat.web import jsonEvents

        self.assertEqual(
            jsonEvents(TopicIs("#dev", "news", "alice", 5.0))[1],
            {"type": "topic", "room": "#dev", "topic": "news", "nick": "alice", "time": 5.0},
        )
        objects = jsonEvents(TopicChanged("#dev", Who("bob", "web"), "", 6.0))
        self.assertEqual(
            objects,
            [
                {"type": "notice", "kind": "topic", "text": "bob cleared the topic of #dev"},
                {"type": "topic", "room": "#dev", "topic": "", "nick": "bob", "time": 6.0},
            ],
        )

    def test_membersMarkOperatorsAndVoicedPieceByPiece(self):
        from sockproto.chat.events import MemberList, Membership
        from sockproto.chat.web import LIST_PIECE, jsonEvents

        members = [
            Membership(f"n{i:04}", operator=i == 0, voiced=i in (1, LIST_PIECE + 1)) for i in range(LIST_PIECE + 5)
        ]
        first, second = jsonEvents(MemberList("#dev", tuple(members)))
        self.assertEqual((first["operators"], first["voiced"]), (["n0000"], ["n0001"]))
        self.assertNotIn("operators", second)
        self.assertEqual(second["voiced"], [f"n{LIST_PIECE + 1:04}"])
        plain = jsonEvents(MemberList("#dev", (Membership("a"),)))
        self.assertEqual(plain, [{"type": "members", "room": "#dev", "nicks": ["a"]}])

    def test_bans(self):
        from sockproto.chat.events import BanEntry, BanList
        from sockproto.chat.web import jsonEvents

        self.assertEqual(
            jsonEvents(BanList("#dev", (BanEntry("x!*@*", "alice", 1.0),))),
            [{"type": "bans", "room": "#dev", "bans": [{"mask": "x!*@*", "nick": "alice", "time": 1.0}]}],
        )


class WebRefusalCodeTests(LineModerationCase):
    def test_theCodeReachesTheClient(self):
        """A moderation refusal keeps its code on its way out (the web's error events, an IRC face's numerics)."""
        from sockproto.chat.events import RefusalCode
        from sockproto.chat.hub import ChatError

        alice, ta = self.client("alice")
        bob, tb = self.client("bob")
        self.say(alice, ta, "/join #dev")
        self.say(bob, tb, "/join #dev")
        with self.assertRaises(ChatError) as caught:
            self.factory.moderator.kick(bob, "alice", "")
        self.assertEqual(caught.exception.code, RefusalCode.NOT_OPERATOR)
        with self.assertRaises(ChatError) as caught:
            self.factory.moderator.whois(bob, "nobody")
        self.assertEqual(caught.exception.code, RefusalCode.NO_SUCH_NICK)


class BoundTests(LineModerationCase):
    def test_rememberedEmptyRoomsAreBounded(self):
        """Empty rooms remembered for their state are bounded: the longest empty is forgotten, on disk too."""
        stored = []
        moderator = self.factory.moderator
        moderator.maxKeptRooms = 2
        moderator.store = lambda name, state: stored.append((name, state is not None))
        alice, ta = self.client("alice")
        for name in ("#a", "#b", "#c"):
            self.say(alice, ta, f"/join {name}", f"/topic about {name}")
        self.say(alice, ta, "/part")
        self.assertEqual(list(moderator.kept), ["#b", "#c"])
        self.assertEqual(sorted(moderator.states), ["#b", "#c", "#lobby"])
        self.assertIn(("#a", False), stored)
        self.say(alice, ta, "/join #b")
        self.assertEqual(list(moderator.kept), ["#c"])
        self.assertEqual(self.say(alice, ta, "/topic"), ["*** topic of #b: about #b (set by alice)"])

    def test_emptyRoomsWithNothingToRememberAreForgotten(self):
        alice, ta = self.client("alice")
        self.say(alice, ta, "/join #a", "/part")
        self.assertNotIn("#a", self.factory.moderator.states)
        self.assertEqual(self.factory.moderator.kept, {})


class SeveralRoomsTests(LineModerationCase):
    """Members in several rooms at once (the IRC face): the rooms' rules hold on every way in and out."""

    def ircMember(self, nick):
        from sockproto.chat.lineface import LineFace
        from tests.test_chat import FakeMember

        class IrcLikeFace(LineFace):
            name = "irc"

        member = FakeMember()
        member.face = IrcLikeFace()
        self.hub.enter(member)
        self.hub.changeNick(member, nick)
        self.hub.part(member, "#lobby")
        self.clock.advance(0)
        member.lines()
        return member

    def test_joinAlsoAndKick(self):
        from sockproto.chat.hub import ChatError

        alice, ta = self.client("alice")
        self.say(alice, ta, "/join #dev", "/ban ircy")
        ircy = self.ircMember("ircy")
        with self.assertRaisesRegex(ChatError, r"you are banned from #dev \(\+b\)"):
            self.hub.joinAlso(ircy, "#dev")
        self.say(alice, ta, "/unban ircy")
        self.hub.joinAlso(ircy, "#ops")
        self.hub.joinAlso(ircy, "#dev")
        self.clock.advance(0)
        self.assertTrue(self.factory.moderator.states["#ops"].isOperator(self.factory.moderator.actor(ircy)))
        self.output(ta)
        self.assertEqual(self.say(alice, ta, "/kick ircy off"), ["*** ircy was kicked from #dev by alice (off)"])
        self.assertIn("*** ircy was kicked from #dev by alice (off)", ircy.lines())
        self.assertEqual([room.name for room in self.hub.roomsOf(ircy)], ["#ops"])
        # A guest operator leaving a room of several leaves its status there.
        self.hub.part(ircy, "#ops")
        self.assertNotIn("#ops", self.factory.moderator.states)
