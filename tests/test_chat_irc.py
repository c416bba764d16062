"""The chat's IRC face without sockets: registration, commands, numerics, rendering of the hub's events."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st
from twisted.cred import checkers
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.words.protocols import irc as ircwords

from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.irc import IRC_LINE, IrcFactory, ircLine, splitText
from sockproto.chat.login import ChatRealm
from sockproto.chat.protocol import ChatFactory

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Setup:
    def __init__(self, auth: bool = False, floodRate: float = 0.0) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.hub = ChatHub(self.clock, History(MEMORY, self.clock))
        portal = None
        if auth:
            users = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"hunter2")
            portal = Portal(ChatRealm(), [users])
        self.chat = ChatFactory(self.clock, self.hub, portal=portal, floodRate=0)
        self.factory = IrcFactory(self.clock, self.hub, loginGate=self.chat.loginGate, serverName="irc.test",
                                  floodRate=floodRate, floodBurst=3)

    def connect(self) -> Client:
        proto = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return Client(self, proto, transport)

    def line(self):
        """A line-chat (nc) member of the same hub."""
        proto = self.chat.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport


class Client:
    def __init__(self, setup: Setup, proto, transport) -> None:
        self.setup = setup
        self.proto = proto
        self.transport = transport

    def send(self, *lines: str) -> None:
        self.proto.dataReceived("".join(line + "\r\n" for line in lines).encode())

    def take(self) -> list[tuple[str, str, list[str]]]:
        """What the server wrote since last asked, parsed (tags dropped)."""
        self.setup.hub.flush()
        data = self.transport.value().decode()
        self.transport.clear()
        parsed = []
        for raw in data.split("\r\n"):
            if raw.startswith("@"):
                raw = raw.partition(" ")[2]
            if raw:
                parsed.append(ircwords.parsemsg(raw))
        return parsed

    def commands(self) -> list[str]:
        return [command for _, command, _ in self.take()]

    def register(self, nick: str, *before: str, join: str = "") -> list[tuple[str, str, list[str]]]:
        self.send(*before, f"NICK {nick}", "USER u 0 * :Real Name", *([f"JOIN {join}"] if join else []))
        return self.take()


class RegistrationTests(unittest.TestCase):
    def test_welcomeBurst(self):
        setup = Setup()
        client = setup.connect()
        got = client.register("alice")
        commands = [c for _, c, _ in got]
        for numeric in ("001", "002", "003", "004", "005", "251", "375", "372", "376"):
            self.assertIn(numeric, commands)
        # An IRC client is in no channel until its first JOIN (the line and web faces start in #lobby).
        self.assertNotIn("JOIN", commands)
        self.assertEqual(setup.hub.roomsOf(client.proto), [])
        self.assertEqual(commands[0], "001")
        self.assertEqual(got[0][2][0], "alice")
        isupport = " ".join(" ".join(p) for _, c, p in got if c == "005")
        for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "PREFIX=(ov)@+", "CHANMODES=", "NICKLEN=24",
                      "CHANNELLEN=33", "TOPICLEN=300", "NETWORK=sockproto"):
            self.assertIn(token, isupport)
        self.assertEqual(setup.hub.nicks["alice"], client.proto)
        client.send("JOIN #lobby")
        got = client.take()
        self.assertEqual([(p, c, a) for p, c, a in got][0], ("alice!~u@irc.sockproto", "JOIN", ["#lobby"]))
        self.assertEqual([c for _, c, _ in got][1:], ["353", "366"])

    def test_commandsBeforeRegistrationAreRefused(self):
        client = Setup().connect()
        client.send("JOIN #dev")
        self.assertEqual(client.commands(), ["451"])

    def test_nickRefusals(self):
        setup = Setup()
        setup.connect().register("alice")
        other = setup.connect()
        other.send("NICK alice", "NICK bad!nick", "NICK")
        self.assertEqual(other.commands(), ["433", "432", "431"])

    def test_nickWithIrcSpecials(self):
        setup = Setup()
        got = setup.connect().register("[alice]|x")
        self.assertEqual(got[0][1:], ("001", ["[alice]|x", got[0][2][1]]))
        other = setup.connect()
        other.send("NICK [ALICE]|X", "NICK {alice}|x", "USER u 0 * :R")
        self.assertEqual([c for _, c, _ in other.take()][:2], ["433", "001"])

    def test_userNeedsFourParameters(self):
        client = Setup().connect()
        client.send("USER u 0")
        self.assertEqual(client.commands(), ["461"])

    def test_capNegotiationHoldsRegistration(self):
        setup = Setup()
        client = setup.connect()
        client.send("CAP LS 302", "NICK alice", "USER u 0 * :R")
        got = client.take()
        self.assertEqual([c for _, c, _ in got], ["CAP"])
        caps = got[0][2][2].split()
        for cap in ("multi-prefix", "server-time", "away-notify", "echo-message", "message-tags"):
            self.assertIn(cap, caps)
        self.assertNotIn("sasl", " ".join(caps))  # no logins on this server
        client.send("CAP REQ :server-time echo-message", "CAP REQ :nonsense")
        self.assertEqual([(c, p[1]) for _, c, p in client.take()], [("CAP", "ACK"), ("CAP", "NAK")])
        client.send("CAP END")
        self.assertIn("001", client.commands())

    def test_serverTimeTagsMessages(self):
        setup = Setup()
        alice = setup.connect()
        alice.register("alice", "CAP LS 302", "CAP REQ server-time", "CAP END", join="#lobby")
        bob = setup.connect()
        bob.register("bob", join="#lobby")
        alice.take()
        bob.send("PRIVMSG #lobby :hello")
        setup.hub.flush()
        data = alice.transport.value().decode()
        self.assertRegex(data, r"^@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z :bob!~u@irc\.sockproto PRIVMSG "
                               r"#lobby :hello\r\n$")

    def test_passwordLogin(self):
        setup = Setup(auth=True)
        client = setup.connect()
        got = client.register("whatever", "PASS alice:secret")
        self.assertEqual(got[0][1], "001")
        self.assertEqual(got[0][2][0], "alice")
        self.assertIn("alice", setup.hub.identities)

    def test_wrongPasswordIsRefusedAfterTheBackoff(self):
        setup = Setup(auth=True)
        client = setup.connect()
        client.register("alice", "PASS alice:wrong")
        setup.clock.advance(60)
        commands = client.commands()
        self.assertEqual(commands, ["464", "ERROR"])
        self.assertTrue(client.transport.disconnecting)

    def test_loginRequired(self):
        setup = Setup(auth=True)
        client = setup.connect()
        self.assertEqual([c for _, c, _ in client.register("alice")], ["464", "ERROR"])

    def test_saslPlain(self):
        setup = Setup(auth=True)
        client = setup.connect()
        client.send("CAP LS 302")
        self.assertIn("sasl=PLAIN", client.take()[0][2][2])
        client.send("CAP REQ :sasl", "AUTHENTICATE PLAIN")
        self.assertEqual([c for _, c, _ in client.take()], ["CAP", "AUTHENTICATE"])
        client.send("AUTHENTICATE " + base64.b64encode(b"\0bob\0hunter2").decode())
        self.assertEqual([c for _, c, _ in client.take()], ["900", "903"])
        got = client.register("bob", "CAP END")
        self.assertEqual(got[0][1], "001")
        self.assertIn("bob", setup.hub.identities)

    def test_saslFailure(self):
        setup = Setup(auth=True)
        client = setup.connect()
        client.send("CAP REQ :sasl", "AUTHENTICATE PLAIN",
                    "AUTHENTICATE " + base64.b64encode(b"\0bob\0nope").decode())
        setup.clock.advance(60)
        self.assertEqual([c for _, c, _ in client.take()][-1], "904")
        self.assertFalse(client.transport.disconnecting)


class CommandTests(unittest.TestCase):
    def setUp(self):
        self.setup = Setup()
        self.alice = self.setup.connect()
        self.alice.register("alice", join="#lobby")
        self.bob = self.setup.connect()
        self.bob.register("bob", join="#lobby")
        self.alice.take()

    def test_pingEchoesTheToken(self):
        self.alice.send("PING :some token")
        self.assertEqual(self.alice.take(), [("irc.test", "PONG", ["irc.test", "some token"])])

    def test_unknownCommand(self):
        self.alice.send("FROBNICATE x")
        self.assertEqual(self.alice.take(), [("irc.test", "421", ["alice", "FROBNICATE", "Unknown command"])])

    def test_channelMessageReachesOthersNotTheSender(self):
        self.alice.send("PRIVMSG #lobby :hi all")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "PRIVMSG", ["#lobby", "hi all"])])
        self.assertEqual(self.alice.take(), [])

    def test_echoMessage(self):
        self.alice.send("CAP REQ echo-message")
        self.alice.take()
        self.alice.send("PRIVMSG #lobby :hi all", "PRIVMSG bob :psst")
        got = self.alice.take()
        self.assertEqual([(c, p) for _, c, p in got], [("PRIVMSG", ["#lobby", "hi all"]), ("PRIVMSG", ["bob", "psst"])])

    def test_actionIsCtcpAction(self):
        self.alice.send("PRIVMSG #lobby :\x01ACTION waves\x01")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "PRIVMSG", ["#lobby", "\x01ACTION waves\x01"])])

    def test_privateMessage(self):
        self.alice.send("PRIVMSG bob :psst", "PRIVMSG nobody :hello")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "PRIVMSG", ["bob", "psst"])])
        self.assertEqual([c for _, c, _ in self.alice.take()], ["401"])

    def test_noticeIsANoticeToIrcAndAMessageToTheOtherFaces(self):
        line, transport = self.setup.line()  # in #lobby
        self.alice.take()
        self.bob.take()
        transport.clear()
        self.alice.send("CAP REQ echo-message")
        self.alice.take()
        self.alice.send("NOTICE #lobby :bot here", f"NOTICE {line.nick} :for you", "NOTICE bob :and you")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "NOTICE", ["#lobby", "bot here"]),
                                           ("alice!~u@irc.sockproto", "NOTICE", ["bob", "and you"])])
        self.assertEqual([(c, p) for _, c, p in self.alice.take()], [
            ("NOTICE", ["#lobby", "bot here"]), ("NOTICE", [line.nick, "for you"]), ("NOTICE", ["bob", "and you"])])
        said = transport.value().decode().splitlines()
        self.assertTrue(said[0].endswith("<alice> bot here"), said)
        self.assertTrue(said[1].endswith("*alice* for you"), said)
        self.assertEqual(self.setup.hub.history.recent("#lobby", 1)[0].kind, "say")

    def test_noticeGetsNoErrorReply(self):
        self.alice.send("NOTICE nobody :hello", "NOTICE #nowhere :hello")
        self.assertEqual(self.alice.take(), [])

    def test_messageRefusals(self):
        self.alice.send("PRIVMSG", "PRIVMSG #lobby", "PRIVMSG #nowhere :x", "PRIVMSG a,b,c,d,e :x")
        self.assertEqual(self.alice.commands(), ["411", "412", "401", "407"])

    def test_joinKeepsTheOtherChannels(self):
        self.alice.send("JOIN #dev,#ops")
        got = self.alice.take()
        self.assertEqual([(c, p[0]) for _, c, p in got if c == "JOIN"], [("JOIN", "#dev"), ("JOIN", "#ops")])
        self.assertEqual([c for _, c, _ in got], ["JOIN", "353", "366", "JOIN", "353", "366"])
        names = next(p for _, c, p in got if c == "353")
        self.assertEqual(names[-1], "@alice")
        self.assertEqual(self.bob.take(), [])  # still in #lobby with bob
        self.assertEqual([r.name for r in self.setup.hub.roomsOf(self.alice.proto)], ["#lobby", "#dev", "#ops"])
        self.bob.send("PRIVMSG #lobby :still here?")
        self.assertEqual(self.alice.take(), [("bob!~u@irc.sockproto", "PRIVMSG", ["#lobby", "still here?"])])
        self.alice.send("PRIVMSG #dev :one", "PRIVMSG #lobby :two")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "PRIVMSG", ["#lobby", "two"])])

    def test_partLeavesOneChannel(self):
        self.alice.send("JOIN #dev")
        self.bob.send("JOIN #dev")
        self.alice.take()
        self.bob.take()
        self.alice.send("PART #dev :bye now")
        self.assertEqual(self.alice.take(), [("alice!~u@irc.sockproto", "PART", ["#dev", "bye now"])])
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "PART", ["#dev", "bye now"])])
        self.alice.send("PART #dev", "PART #lobby")
        self.assertEqual(self.alice.commands(), ["442", "PART"])
        self.assertEqual(self.setup.hub.roomsOf(self.alice.proto), [])
        self.alice.send("PRIVMSG #lobby :x", "PRIVMSG #dev :x")
        self.assertEqual(self.alice.commands(), ["404", "404"])

    def test_joinZeroLeavesEveryChannel(self):
        self.alice.send("JOIN #dev,#ops", "JOIN 0")
        parts = [(c, p) for _, c, p in self.alice.take() if c == "PART"]
        self.assertEqual([p[0] for _, p in parts], ["#lobby", "#dev", "#ops"])
        self.assertEqual(self.setup.hub.roomsOf(self.alice.proto), [])
        self.assertNotIn("#dev", self.setup.hub.rooms)

    def test_quitAndNickAreToldOnceToThoseSharingChannels(self):
        carol = self.setup.connect()
        carol.register("carol", join="#other")
        line, transport = self.setup.line()  # in #lobby, with alice
        self.alice.send("JOIN #dev")
        self.bob.send("JOIN #dev")
        carol.take()
        self.alice.take()
        self.bob.take()
        transport.clear()
        self.alice.send("NICK alicia")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "NICK", ["alicia"])])
        self.assertEqual(self.alice.take(), [("alice!~u@irc.sockproto", "NICK", ["alicia"])])
        self.assertEqual(carol.take(), [])
        self.assertEqual(transport.value().count(b"alicia"), 1)
        transport.clear()
        self.alice.send("QUIT :done")
        self.assertEqual(self.bob.take(), [("alicia!~u@irc.sockproto", "QUIT", ["Quit: done"])])
        self.assertEqual(transport.value().count(b"alicia"), 1)
        self.assertEqual(carol.take(), [])
        self.assertNotIn(self.alice.proto, self.setup.hub.extraRooms)

    def test_partRefusals(self):
        self.alice.send("PART #nowhere", "PART")
        self.assertEqual(self.alice.commands(), ["403", "461"])

    def test_badChannelName(self):
        self.alice.send("JOIN #has.dot")
        self.assertEqual(self.alice.commands(), ["403"])

    def test_lobbyHasNoOperators(self):
        # Nobody but server operators is an operator of #lobby: its modes, kicks and +o are refused there.
        self.alice.send("MODE #lobby +m", "KICK #lobby bob", "MODE #lobby +z", "MODE #lobby +o bob")
        self.assertEqual(self.alice.commands(), ["482", "482", "472", "482"])

    def test_queries(self):
        self.alice.send("TOPIC #lobby", "MODE #lobby", "MODE #lobby b", "MODE alice", "MODE bob")
        self.assertEqual(self.alice.commands(), ["331", "324", "329", "368", "221", "502"])

    def test_whoisAndWho(self):
        self.alice.send("WHOIS bob")
        got = self.alice.take()
        self.assertEqual([c for _, c, _ in got], ["311", "319", "312", "317", "318"])
        self.assertEqual(got[0][2][:4], ["alice", "bob", "~u", "irc.sockproto"])
        self.alice.send("WHO #lobby")
        got = self.alice.take()
        self.assertEqual(sorted(p[5] for _, c, p in got if c == "352"), ["alice", "bob"])
        self.assertEqual(got[-1][1], "315")
        self.alice.send("WHOIS nobody")
        self.assertEqual(self.alice.commands(), ["401", "318"])

    def test_isonUserhostLusers(self):
        self.alice.send("ISON bob nobody", "USERHOST bob")
        got = self.alice.take()
        self.assertEqual(got[0][2][-1], "bob")
        self.assertEqual(got[1][2][-1], "bob=+~u@irc.sockproto")
        self.alice.send("LUSERS")
        got = self.alice.take()
        self.assertIn("2 users", got[0][2][-1])
        self.assertEqual([c for _, c, _ in got], ["251", "252", "254", "255", "265", "266"])

    def test_awayIsShownToWhoisAndPrivateMessages(self):
        self.bob.send("CAP REQ away-notify")
        self.bob.take()
        self.alice.send("AWAY :lunch")
        self.assertEqual(self.alice.commands(), ["306"])
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "AWAY", ["lunch"])])
        self.bob.send("WHOIS alice")
        self.assertIn(("301", ["bob", "alice", "lunch"]), [(c, p) for _, c, p in self.bob.take()])
        self.alice.send("AWAY")
        self.assertEqual(self.alice.commands(), ["305"])

    def test_privateMessageToAnAwayMemberIsAnswered301(self):
        self.bob.send("AWAY :lunch")
        self.bob.take()
        self.alice.send("PRIVMSG bob :there?", "NOTICE bob :psst")
        self.assertEqual([(c, p) for _, c, p in self.alice.take()], [("301", ["alice", "bob", "lunch"])])
        self.bob.send("AWAY")
        self.alice.send("PRIVMSG bob :back?")
        self.assertEqual(self.alice.take(), [])

    def test_userhostInNames(self):
        self.alice.send("CAP REQ userhost-in-names", "NAMES #lobby")
        got = [(c, p) for _, c, p in self.alice.take()]
        self.assertEqual(got[1], ("353", ["alice", "=", "#lobby", "alice!~u@irc.sockproto bob!~u@irc.sockproto"]))
        self.bob.send("NAMES #lobby")
        self.assertEqual(self.bob.take()[0][2][-1], "alice bob")

    def test_awayMemberJoiningIsToldToAwayNotifyClients(self):
        self.bob.send("CAP REQ away-notify", "JOIN #dev")
        self.alice.send("AWAY :lunch")
        self.bob.take()
        self.alice.send("JOIN #dev")
        self.assertEqual([(p, c, a) for p, c, a in self.bob.take()], [
            ("alice!~u@irc.sockproto", "JOIN", ["#dev"]), ("alice!~u@irc.sockproto", "AWAY", ["lunch"])])

    def test_tooManyTagsAreRefused(self):
        self.alice.send("@+x=" + "a" * 4091 + " PRIVMSG #lobby :fits", "@+x=" + "a" * 4092 + " PRIVMSG #lobby :no")
        self.assertEqual(self.alice.commands(), ["417"])
        self.assertEqual([p[-1] for _, _, p in self.bob.take()], ["fits"])

    def test_whowas(self):
        self.bob.send("NICK robert")
        self.bob.send("QUIT :bye")
        self.alice.take()
        self.alice.send("WHOWAS bob", "WHOWAS robert 1", "WHOWAS nobody", "WHOWAS")
        got = [(c, p) for _, c, p in self.alice.take()]
        self.assertEqual([c for c, _ in got], ["314", "312", "369", "314", "312", "369", "406", "369", "431"])
        self.assertEqual(got[0][1], ["alice", "bob", "~u", "irc.sockproto", "*", "Real Name"])
        self.assertEqual(got[3][1][:2], ["alice", "robert"])
        self.assertEqual(got[4][1][:3], ["alice", "robert", "irc.test"])

    def test_whowasKeepsTheLatestFirstAndIsBounded(self):
        for n in range(3):
            client = self.setup.connect()
            client.send("NICK again", f"USER id{n} 0 * :R")
            client.send("QUIT")
        self.alice.send("WHOWAS again 2")
        users = [p[2] for _, c, p in self.alice.take() if c == "314"]
        self.assertEqual(users, ["~id2", "~id1"])
        self.assertLessEqual(self.setup.factory.whowas.maxlen, 200)

    def test_identIsTheUserOfTheMask(self):
        client = self.setup.connect()
        client.send("NICK carol", "USER a-very-long~name 0 * :R", "JOIN #lobby")
        self.assertEqual(self.alice.take()[0][0], "carol!~a-very-lo@irc.sockproto")

    def test_nickChange(self):
        self.alice.send("NICK alicia")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "NICK", ["alicia"])])
        self.assertIn("alicia", self.setup.hub.nicks)
        self.alice.send("NICK bob")
        self.assertEqual(self.alice.commands(), ["NICK", "433"])

    def test_quit(self):
        self.alice.send("QUIT :gone fishing")
        self.assertEqual(self.alice.commands(), ["ERROR"])
        self.assertTrue(self.alice.transport.disconnecting)
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "QUIT", ["Quit: gone fishing"])])

    def test_tooLongLine(self):
        self.alice.send("PRIVMSG #lobby :" + "x" * 600)
        self.assertEqual(self.alice.commands(), ["417"])
        self.assertEqual(self.bob.take(), [])

    def test_lineUsersShareTheRoom(self):
        line, transport = self.setup.line()
        self.alice.take()
        line.dataReceived(b"hello from nc\n/me waves\n")
        got = self.alice.take()
        nick = line.nick
        self.assertEqual(got, [
            (f"{nick}!line@line.sockproto", "PRIVMSG", ["#lobby", "hello from nc"]),
            (f"{nick}!line@line.sockproto", "PRIVMSG", ["#lobby", "\x01ACTION waves\x01"]),
        ])
        transport.clear()
        self.alice.send("PRIVMSG #lobby :hi nc", f"PRIVMSG {nick} :private")
        self.setup.hub.flush()
        self.assertIn(b"<alice> hi nc", transport.value())
        self.assertIn(b"*alice* private", transport.value())

    def test_historyIsReplayedOnJoin(self):
        self.bob.send("JOIN #dev", "PRIVMSG #dev :first")
        self.alice.send("JOIN #dev")
        got = self.alice.take()
        said = [(p, c, a) for p, c, a in got if c == "PRIVMSG"]
        self.assertEqual(said[0][0], "bob")
        self.assertTrue(said[0][2][1].endswith("] first"), said)


class FloodTests(unittest.TestCase):
    def test_fakeLagDelaysAndLosesNothing(self):
        setup = Setup(floodRate=1.0)
        client = setup.connect()
        client.register("alice")
        setup.clock.advance(10)
        client.send(*[f"PING :{n}" for n in range(6)])
        first = [p[-1] for _, c, p in client.take() if c == "PONG"]
        self.assertLess(len(first), 6)
        setup.clock.advance(10)
        rest = [p[-1] for _, c, p in client.take() if c == "PONG"]
        self.assertEqual(first + rest, [str(n) for n in range(6)])


class FormatTests(unittest.TestCase):
    def test_ircLineTrailing(self):
        self.assertEqual(ircLine("srv", "PRIVMSG", "#a", "one"), b":srv PRIVMSG #a :one\r\n")
        self.assertEqual(ircLine("", "PONG", "srv", "tok"), b"PONG srv tok\r\n")
        self.assertEqual(ircLine("", "PONG", "srv", "two words"), b"PONG srv :two words\r\n")

    @given(st.text(min_size=1, max_size=300), st.integers(min_value=4, max_value=100))
    def test_splitTextKeepsEverything(self, text, room):
        pieces = splitText(text, room)
        self.assertEqual("".join(pieces), text)
        self.assertTrue(all(len(p.encode()) <= room for p in pieces))

    def test_longMessagesAreSplitUnder512(self):
        setup = Setup()
        alice = setup.connect()
        alice.register("alice", join="#lobby")
        line, _ = setup.line()
        alice.take()
        line.dataReceived(("é" * 250 + "\n").encode())
        setup.hub.flush()
        raw = alice.transport.value().split(b"\r\n")[:-1]
        self.assertGreater(len(raw), 1)
        self.assertTrue(all(len(r) + 2 <= IRC_LINE for r in raw))


class OptionTests(unittest.TestCase):
    def test_ircOption(self):
        from twisted.python import usage

        from sockproto.chat.service import Options

        options = Options()
        options.parseOptions(["--irc", "tcp:6667", "--irc", "tcp:6668"])
        self.assertIn(("chat-irc", ["tcp:6667", "tcp:6668"]), options.listeners())
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--irc", "nonsense:1"])
        self.assertIn("--irc", str(caught.exception))


class ModerationTests(unittest.TestCase):
    """Topics, modes, kicks, invitations and keys: the chat's moderation, the IRC way."""

    def setUp(self):
        self.setup = Setup()
        self.alice = self.setup.connect()
        self.alice.register("alice", join="#dev")  # the first in #dev: its operator
        self.bob = self.setup.connect()
        self.bob.register("bob", join="#dev")
        self.alice.take()

    def test_creatorIsOperatorInNames(self):
        self.bob.send("NAMES #dev")
        got = self.bob.take()
        self.assertEqual(next(p for _, c, p in got if c == "353")[-1].split(), ["@alice", "bob"])

    def test_topicQuerySetAndRefusals(self):
        self.bob.send("TOPIC #dev")
        self.assertEqual(self.bob.commands(), ["331"])
        self.alice.send("MODE #dev +t")
        self.alice.take()
        self.bob.take()
        self.bob.send("TOPIC #dev :mine")
        self.assertEqual(self.bob.take(), [("irc.test", "482", ["bob", "#dev", "You're not channel operator"])])
        self.alice.send("TOPIC #dev :release on friday")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "TOPIC", ["#dev", "release on friday"])])
        self.bob.send("TOPIC #dev")
        got = self.bob.take()
        self.assertEqual([c for _, c, _ in got], ["332", "333"])
        self.assertEqual(got[0][2][-1], "release on friday")
        self.assertEqual(got[1][2][1:3], ["#dev", "alice"])
        self.alice.send("JOIN #ops")
        self.bob.send("TOPIC #ops", "TOPIC #nowhere", "TOPIC")
        self.assertEqual(self.bob.commands(), ["442", "403", "461"])

    def test_topicShownOnJoin(self):
        self.alice.send("TOPIC #dev :hello")
        carol = self.setup.connect()
        got = carol.register("carol", join="#dev")
        commands = [c for _, c, _ in got]
        self.assertLess(commands.index("JOIN"), commands.index("332"))
        self.assertLess(commands.index("333"), commands.index("353"))

    def test_modeChangesAreBroadcastWithTheSettersPrefix(self):
        self.alice.send("MODE #dev +ntk-m sesame")
        expected = [("alice!~u@irc.sockproto", "MODE", ["#dev", "+ntk", "sesame"])]
        self.assertEqual(self.alice.take(), expected)
        self.assertEqual(self.bob.take(), expected)
        self.bob.send("MODE #dev")
        created = str(int(self.setup.hub.rooms["#dev"].created))
        self.assertEqual(created, "1700000000")
        self.assertEqual(self.bob.take(), [("irc.test", "324", ["bob", "#dev", "+ntk", "sesame"]),
                                           ("irc.test", "329", ["bob", "#dev", created])])
        carol = self.setup.connect()
        carol.register("carol")
        carol.send("MODE #dev")  # not a member: the key is not shown
        self.assertEqual(carol.take()[0], ("irc.test", "324", ["carol", "#dev", "+ntk", "*"]))

    def test_modeRefusals(self):
        self.bob.send("MODE #dev +m")
        self.assertEqual(self.bob.take(), [("irc.test", "482", ["bob", "#dev", "You're not channel operator"])])
        carol = self.setup.connect()
        carol.register("carol")
        self.alice.send("MODE #dev +y", "MODE #dev +o carol", "MODE #dev +l lots", "MODE #dev +k",
                        "MODE #dev +v nobody")
        got = self.alice.take()
        self.assertEqual([c for _, c, _ in got], ["472", "441", "696", "461", "401"])
        self.assertEqual(got[0][2][1], "y")
        self.assertEqual(got[1][2][1:3], ["carol", "#dev"])
        self.assertEqual(got[4][2][1], "nobody")
        self.assertEqual(got[2][2][1:4], ["#dev", "l", "lots"])
        self.assertEqual(got[3][2][1], "MODE")
        self.alice.send("MODE #dev +k :two words", "MODE #dev +b :")
        got = self.alice.take()
        self.assertEqual([(c, p[1:4]) for _, c, p in got], [("696", ["#dev", "k", "*"]), ("696", ["#dev", "b", "*"])])
        self.bob.send("PART #dev")
        self.assertEqual(self.bob.commands(), ["PART"])
        self.bob.send("MODE #dev +m", "MODE #nowhere +m")
        self.assertEqual(self.bob.commands(), ["442", "403"])

    def test_opAndVoiceShowInNamesWhoAndWhois(self):
        self.alice.send("MODE #dev +v bob")
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "MODE", ["#dev", "+v", "bob"])])
        self.alice.send("MODE #dev +o bob")
        self.alice.take()
        self.bob.send("NAMES #dev")
        self.assertEqual(next(p for _, c, p in self.bob.take() if c == "353")[-1].split(), ["@alice", "@bob"])
        self.bob.send("CAP REQ multi-prefix", "NAMES #dev", "WHO #dev", "WHOIS bob")
        got = self.bob.take()
        self.assertEqual(next(p for _, c, p in got if c == "353")[-1].split(), ["@alice", "@+bob"])
        self.assertEqual(sorted(p[6] for _, c, p in got if c == "352"), ["H@", "H@+"])
        self.assertEqual(next(p for _, c, p in got if c == "319")[-1], "@+#dev")

    def test_banListAndBans(self):
        self.alice.send("MODE #dev +b bob!*@*")
        self.alice.take()
        self.bob.take()
        self.bob.send("MODE #dev +b")
        got = self.bob.take()
        self.assertEqual([c for _, c, _ in got], ["367", "368"])
        self.assertEqual(got[0][2][1:4], ["#dev", "bob!*@*", "alice"])
        self.bob.send("PRIVMSG #dev :hello")
        self.assertEqual(self.bob.commands(), ["404"])
        self.bob.send("PART #dev", "JOIN #dev")
        got = self.bob.take()
        self.assertEqual([c for _, c, _ in got], ["PART", "474"])

    def test_moderatedRoomRefusesTheUnvoiced(self):
        self.alice.send("MODE #dev +m")
        self.alice.take()
        self.bob.take()
        self.bob.send("PRIVMSG #dev :hi", "NOTICE #dev :hi")  # no reply to a NOTICE
        self.assertEqual(self.bob.commands(), ["404"])
        self.assertEqual(self.alice.take(), [])
        self.alice.send("MODE #dev +v bob")
        self.bob.take()
        self.alice.take()
        self.bob.send("PRIVMSG #dev :hi")
        self.assertEqual(self.alice.take(), [("bob!~u@irc.sockproto", "PRIVMSG", ["#dev", "hi"])])

    def test_kick(self):
        self.bob.send("KICK #dev alice :no")
        self.assertEqual(self.bob.commands(), ["482"])
        self.bob.send("JOIN #lobby")
        self.bob.take()
        carol = self.setup.connect()
        carol.register("carol")
        self.alice.send("KICK #dev nobody", "KICK #dev carol", "KICK #nowhere bob", "KICK #lobby bob", "KICK #dev")
        self.assertEqual(self.alice.commands(), ["401", "441", "403", "442", "461"])
        self.alice.send("KICK #dev bob :spam")
        expected = [("alice!~u@irc.sockproto", "KICK", ["#dev", "bob", "spam"])]
        self.assertEqual(self.alice.take(), expected)
        self.assertEqual(self.bob.take(), expected)
        self.assertEqual([room.name for room in self.setup.hub.roomsOf(self.bob.proto)], ["#lobby"])
        self.bob.send("JOIN #dev")
        self.bob.take()
        self.alice.take()
        self.alice.send("KICK #dev bob")  # no reason: the kicker's nick
        self.assertEqual(self.bob.take(), [("alice!~u@irc.sockproto", "KICK", ["#dev", "bob", "alice"])])

    def test_kickALineUser(self):
        proto, transport = self.setup.line()  # a guest in #lobby
        proto.dataReceived(b"/join #dev\r\n")
        self.alice.take()
        self.alice.send(f"KICK #dev {proto.nick} :bye")
        self.assertEqual(self.alice.take(), [("alice!~u@irc.sockproto", "KICK", ["#dev", proto.nick, "bye"])])
        self.assertEqual(proto.room.name, "#lobby")

    def test_inviteOnlyAndInvite(self):
        self.alice.send("MODE #dev +i")
        self.alice.take()
        self.bob.take()
        carol = self.setup.connect()
        carol.register("carol")
        carol.send("JOIN #dev")
        self.assertEqual(carol.commands(), ["473"])
        self.bob.send("INVITE carol #dev")
        self.assertEqual(self.bob.commands(), ["482"])
        self.alice.send("INVITE carol #dev")
        self.assertEqual(self.alice.take(), [("irc.test", "341", ["alice", "carol", "#dev"])])
        self.assertEqual(carol.take(), [("alice!~u@irc.sockproto", "INVITE", ["carol", "#dev"])])
        carol.send("JOIN #dev")
        self.assertEqual(carol.commands()[0], "JOIN")
        self.alice.take()
        self.bob.send("JOIN #lobby")
        self.alice.send("INVITE bob #dev", "INVITE nobody #dev", "INVITE carol #lobby")
        self.assertEqual(self.alice.commands(), ["443", "401", "442"])

    def test_inviteALineUser(self):
        proto, transport = self.setup.line()
        transport.clear()
        self.alice.send(f"INVITE {proto.nick} #dev")
        self.assertEqual(self.alice.commands(), ["341"])
        self.setup.hub.flush()
        self.assertIn(b"#dev", transport.value())

    def test_joinWithKeysAndLimits(self):
        self.alice.send("JOIN #ops", "MODE #ops +k sesame", "MODE #dev +l 2")
        self.alice.take()
        carol = self.setup.connect()
        carol.register("carol")
        carol.send("JOIN #ops,#dev wrong")
        self.assertEqual(carol.commands(), ["475", "471"])
        carol.send("JOIN #dev,#ops x,sesame")
        got = carol.take()
        self.assertEqual(got[0][1], "471")
        self.assertEqual(got[1][1:], ("JOIN", ["#ops"]))
