"""Rooms with owners (sockproto.chat.moderation): every mode, command and refusal, without a reactor."""

from __future__ import annotations

import json
import sqlite3

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.chat.events import Kicked, ModeChanged, TopicChanged, Who
from sockproto.chat.history import MEMORY, History
from sockproto.chat.moderation import (
    MAX_BANS,
    MAX_INVITES,
    MAX_MODE_ARGUMENTS,
    Actor,
    RoomState,
    maskPattern,
    normalizeMask,
)


def guest(nick, face="line"):
    return Actor(Who(nick, face))


def user(nick, face="line"):
    return Actor(Who(nick, face), verified=True)


def oper(nick):
    return Actor(Who(nick, "line"), verified=True, serverOperator=True)


def members(*actors):
    return {actor.nick.casefold(): actor for actor in actors}


class MaskTests(unittest.TestCase):
    def test_normalize(self):
        """Masks are completed as IRC clients complete them."""
        self.assertEqual(normalizeMask("bob"), "bob!*@*")
        self.assertEqual(normalizeMask("bob!web"), "bob!web@*")
        self.assertEqual(normalizeMask("*@web.sockproto"), "*!*@web.sockproto")
        self.assertEqual(normalizeMask("b*!*@*"), "b*!*@*")
        for bad in ["", "a b", "a,b", "!x@y", "a!@y", "a!b@", "x" * 101, "a!b!c@d", "a!b@c@d"]:
            self.assertIsNone(normalizeMask(bad), bad)

    def test_wildcardsAndCase(self):
        """* is any run, ? one character, everything else literal, case ignored."""
        pattern = maskPattern("B?b*!*@*")
        self.assertTrue(pattern.fullmatch("bob!line@line.sockproto"))
        self.assertTrue(pattern.fullmatch("bobby!web@web.sockproto"))
        self.assertFalse(pattern.fullmatch("bb!web@web.sockproto"))
        self.assertFalse(maskPattern("a.b!*@*").fullmatch("axb!x@y"))
        self.assertFalse(maskPattern("[a]!*@*").fullmatch("a!x@y"))

    @given(st.text(max_size=40))
    def test_normalizedMasksAreFixedPointsOrRefused(self, text):
        """A normalized mask normalizes to itself, and always compiles."""
        mask = normalizeMask(text)
        if mask is not None:
            self.assertEqual(normalizeMask(mask), mask)
            self.assertTrue(maskPattern(mask).fullmatch(mask.casefold()))


class OwnershipTests(unittest.TestCase):
    def test_creatorIsOperator(self):
        """The first member in a room nobody owns is its operator; the next is not."""
        room = RoomState("#dev")
        self.assertTrue(room.joined(guest("alice"), 0))
        self.assertFalse(room.joined(guest("bob"), 1))
        self.assertTrue(room.isOperator(guest("alice")))
        self.assertFalse(room.isOperator(guest("bob")))

    def test_nobodyOwnsTheLobby(self):
        """#lobby has no creator; server operators are its operators, and +o is refused there."""
        room = RoomState("#lobby")
        self.assertFalse(room.joined(guest("alice"), 0))
        self.assertFalse(room.isOperator(guest("alice")))
        self.assertTrue(room.isOperator(oper("root")))
        outcome = room.applyModes(oper("root"), "+o", ["alice"], members(guest("alice")), 1.0)
        self.assertEqual(outcome.refusals, ["nobody but server operators is an operator of #lobby"])
        self.assertIsNone(outcome.event)

    def test_serverOperatorDoesNotTakeARoom(self):
        """A server operator entering an empty room does not make it owned (it is an operator anyway)."""
        room = RoomState("#dev")
        self.assertFalse(room.joined(oper("root"), 0))
        self.assertFalse(room.owned)

    def test_guestStatusGoesWithTheGuest(self):
        """A guest's operator status ends when it leaves; the next to come in takes the room."""
        room = RoomState("#dev")
        room.joined(guest("alice"), 0)
        room.left(guest("alice"))
        self.assertFalse(room.isOperator(guest("alice")))
        self.assertTrue(room.joined(guest("bob"), 0))

    def test_verifiedOwnerStaysAndIsNotImpersonated(self):
        """A verified creator owns the room for good; a guest with its name is no operator."""
        room = RoomState("#dev")
        room.joined(user("alice"), 0)
        room.left(user("alice"))
        self.assertFalse(room.joined(guest("bob"), 0))
        self.assertFalse(room.isOperator(guest("alice")))
        self.assertTrue(room.isOperator(user("alice")))

    def test_renamedGuestKeepsItsStatus(self):
        """A nick change carries a guest's status and invitation, as on IRC."""
        room = RoomState("#dev")
        room.joined(guest("alice"), 0)
        room.invites["carol"] = None
        room.renamed("alice", "Alicia")
        room.renamed("carol", "caz")
        self.assertTrue(room.isOperator(guest("alicia")))
        self.assertFalse(room.isOperator(guest("alice")))
        self.assertIn("caz", room.invites)


class JoinTests(unittest.TestCase):
    def setUp(self):
        self.room = RoomState("#dev")
        self.op = guest("alice")
        self.room.joined(self.op, 0)
        self.all = members(self.op, guest("bob"))

    def mode(self, modes, *arguments, actor=None):
        return self.room.applyModes(actor or self.op, modes, arguments, self.all, 5.0)

    def test_ban(self):
        """A banned mask neither joins nor speaks; unbanning lets it in; server operators pass."""
        self.mode("+b", "bob")
        self.assertEqual(self.room.mayJoin(guest("BOB"), None, 1), "you are banned from #dev (+b)")
        self.assertEqual(self.room.maySpeak(guest("bob"), True),
                         "you are banned from #dev (+b): you cannot speak there")
        self.assertIsNone(self.room.mayJoin(guest("bobby"), None, 1))
        self.assertIsNone(self.room.mayJoin(oper("bob"), None, 1))
        self.mode("-b", "bob!*@*")
        self.assertIsNone(self.room.mayJoin(guest("bob"), None, 1))

    def test_banByFace(self):
        """A mask's host is the face: *@web.sockproto keeps web members out."""
        self.mode("+b", "*@web.sockproto")
        self.assertIsNotNone(self.room.mayJoin(guest("x", "web"), None, 1))
        self.assertIsNone(self.room.mayJoin(guest("x", "line"), None, 1))

    def test_inviteOnly(self):
        """+i admits the invited, once; inviting takes an operator then."""
        self.mode("+i")
        self.assertEqual(self.room.mayJoin(guest("carol"), None, 1),
                         "#dev is invite only (+i): an operator can /invite you")
        self.assertEqual(self.room.invite(guest("bob"), True, "carol", False), "only operators invite to #dev (+i)")
        self.assertIsNone(self.room.invite(self.op, True, "Carol", False))
        self.assertIsNone(self.room.mayJoin(guest("carol"), None, 1))
        self.room.joined(guest("carol"), 2)
        self.room.left(guest("carol"))
        self.assertIsNotNone(self.room.mayJoin(guest("carol"), None, 1))

    def test_inviteRefusals(self):
        """One must be in the room to invite, and the invited must not be."""
        self.assertEqual(self.room.invite(guest("zed"), False, "carol", False), "you are not in #dev")
        self.assertEqual(self.room.invite(self.op, True, "bob", True), "bob is already in #dev")
        self.assertIsNone(self.room.invite(guest("bob"), True, "carol", False))  # not +i: anyone may

    def test_invitationsAreBounded(self):
        """Invitations waiting are bounded: the oldest is forgotten."""
        for number in range(MAX_INVITES + 5):
            self.room.invite(self.op, True, f"n{number}", False)
        self.assertEqual(len(self.room.invites), MAX_INVITES)
        self.assertNotIn("n0", self.room.invites)
        self.assertIn(f"n{MAX_INVITES + 4}", self.room.invites)

    def test_key(self):
        """+k asks for the key; -k removes it (showing the key removed, as IRC does)."""
        self.mode("+k", "s3cret")
        self.assertEqual(self.room.mayJoin(guest("carol"), None, 1), "#dev needs a key (+k): /join #dev KEY")
        self.assertEqual(self.room.mayJoin(guest("carol"), "wrong", 1), "#dev needs a key (+k): /join #dev KEY")
        self.assertIsNone(self.room.mayJoin(guest("carol"), "s3cret", 1))
        outcome = self.mode("-k")
        self.assertEqual((outcome.event.modes, outcome.event.arguments), ("-k", ("s3cret",)))
        self.assertIsNone(self.room.mayJoin(guest("carol"), None, 1))

    def test_badKey(self):
        outcome = self.mode("+k", "a" * 30)
        self.assertEqual(outcome.refusals, [f"bad key {'a' * 23!r}: 1 to 23 printable characters, no spaces"])
        self.assertIsNone(self.room.key)

    def test_limit(self):
        """+l N admits up to N; -l takes no argument."""
        self.mode("+l", "2")
        self.assertIsNone(self.room.mayJoin(guest("carol"), None, 1))
        self.assertEqual(self.room.mayJoin(guest("carol"), None, 2), "#dev is full (+l 2)")
        outcome = self.mode("-l+t")
        self.assertEqual((outcome.event.modes, outcome.event.arguments), ("-l+t", ()))
        self.assertIsNone(self.room.limit)

    def test_badLimit(self):
        for bad in ["0", "x", "-1", "100001", "²"]:
            self.assertEqual(self.mode("+l", bad).refusals, [f"bad limit {bad!r}: a number from 1 to 100000"])
        self.assertIsNone(self.room.limit)


class SpeakTests(unittest.TestCase):
    def setUp(self):
        self.room = RoomState("#dev")
        self.room.joined(guest("alice"), 0)
        self.all = members(guest("alice"), guest("bob"))

    def test_moderated(self):
        """+m: only operators and voiced members speak."""
        self.room.applyModes(guest("alice"), "+mv", ["bob"], self.all, 1.0)
        self.assertIsNone(self.room.maySpeak(guest("alice"), True))
        self.assertIsNone(self.room.maySpeak(guest("bob"), True))
        self.assertEqual(self.room.maySpeak(guest("carol"), True),
                         "#dev is moderated (+m): only operators and voiced members may speak")

    def test_noOutsideMessages(self):
        """+n: those not in the room cannot speak to it; without it they can."""
        self.assertIsNone(self.room.maySpeak(guest("zed"), False))
        self.room.applyModes(guest("alice"), "+n", [], self.all, 1.0)
        self.assertEqual(self.room.maySpeak(guest("zed"), False),
                         "you are not in #dev, which takes no outside messages (+n)")
        self.assertIsNone(self.room.maySpeak(guest("zed"), True))


class TopicTests(unittest.TestCase):
    def test_topic(self):
        """Anyone sets the topic, until +t; an empty topic clears it."""
        room = RoomState("#dev")
        room.joined(guest("alice"), 0)
        change = room.setTopic(guest("bob"), " Release day ", 10.0)
        self.assertEqual(change, TopicChanged("#dev", Who("bob", "line"), "Release day", 10.0))
        self.assertEqual((room.topic.text, room.topic.setter, room.topic.time), ("Release day", "bob", 10.0))
        room.applyModes(guest("alice"), "+t", [], {}, 11.0)
        self.assertEqual(room.setTopic(guest("bob"), "mine", 12.0), "only operators set the topic of #dev (+t)")
        self.assertEqual(room.topic.text, "Release day")
        self.assertIsInstance(room.setTopic(guest("alice"), "", 13.0), TopicChanged)
        self.assertIsNone(room.topic)


class KickTests(unittest.TestCase):
    def test_kick(self):
        room = RoomState("#dev")
        room.joined(guest("alice"), 0)
        self.assertEqual(room.kick(guest("alice"), guest("bob"), True, " spam ", 3.0),
                         Kicked("#dev", Who("alice", "line"), "bob", 3.0, "spam"))
        self.assertEqual(room.kick(guest("bob"), guest("alice"), True, "", 3.0), "you are not an operator of #dev")
        self.assertEqual(room.kick(guest("alice"), guest("zed"), False, "", 3.0), "zed is not in #dev")
        self.assertEqual(room.kick(guest("alice"), oper("root"), True, "", 3.0),
                         "root is a server operator and cannot be kicked")
        self.assertIsInstance(room.kick(oper("root"), oper("admin"), True, "", 3.0), Kicked)


class ModeTests(unittest.TestCase):
    def setUp(self):
        self.room = RoomState("#dev")
        self.alice, self.bob, self.carol = guest("alice"), guest("bob"), user("carol")
        self.room.joined(self.alice, 0)
        self.all = members(self.alice, self.bob, self.carol)

    def mode(self, modes, *arguments, actor=None):
        return self.room.applyModes(actor or self.alice, modes, arguments, self.all, 7.0)

    def test_severalAtOnce(self):
        """Several modes in one string, arguments in order, written back as IRC does."""
        outcome = self.mode("+tnk-i+ov", "key", "BOB", "carol")
        self.assertEqual(outcome.refusals, [])
        self.assertEqual(outcome.event,
                         ModeChanged("#dev", Who("alice", "line"), "+tnkov", ("key", "bob", "carol"), 7.0))
        self.assertEqual(self.room.modeString, "+ntk key")
        self.assertTrue(self.room.isOperator(self.bob))
        self.assertTrue(self.room.isVoiced(self.carol))

    def test_nothingChangedIsNoEvent(self):
        """Setting what is set already is no change, and nothing is announced."""
        self.mode("+t")
        self.assertIsNone(self.mode("+t").event)
        self.assertIsNone(self.mode("-m").event)

    def test_deop(self):
        outcome = self.mode("+o", "bob")
        outcome = self.mode("-o", "bob")
        self.assertEqual((outcome.event.modes, outcome.event.arguments), ("-o", ("bob",)))
        self.assertFalse(self.room.isOperator(self.bob))
        self.assertEqual(self.mode("-o", "root", actor=oper("x")).refusals, ["root is not in #dev"])
        self.all["root"] = oper("root")
        self.assertEqual(self.mode("-o", "root").refusals, ["root is a server operator, an operator of every room"])

    def test_notAnOperatorIsRefusedOnce(self):
        """A member who is no operator gets one refusal, however many modes it asked for."""
        outcome = self.mode("+tnm", actor=self.bob)
        self.assertEqual(outcome.refusals, ["you are not an operator of #dev"])
        self.assertIsNone(outcome.event)
        self.assertEqual(self.room.flags, set())

    def test_eachProblemRefusedTheRestDone(self):
        """Unknown letters, missing arguments and absent members are refused one by one; the rest is done."""
        outcome = self.mode("+xtoq", "zed")
        self.assertEqual(outcome.refusals, ["unknown mode 'x' (modes: biklmnotv)", "zed is not in #dev",
                                            "unknown mode 'q' (modes: biklmnotv)"])
        self.assertEqual(outcome.event.modes, "+t")
        outcome = self.mode("+o")
        self.assertEqual(outcome.refusals, ["mode +o needs an argument"])

    def test_argumentCap(self):
        """At most MAX_MODE_ARGUMENTS modes with arguments in one /mode."""
        masks = [f"m{number}" for number in range(MAX_MODE_ARGUMENTS + 1)]
        outcome = self.mode("+" + "b" * len(masks), *masks)
        self.assertEqual(len(outcome.event.arguments), MAX_MODE_ARGUMENTS)
        self.assertEqual(outcome.refusals, [f"at most {MAX_MODE_ARGUMENTS} modes with arguments at once"])

    def test_showAndBanList(self):
        """No letters shows the modes; +b without a mask lists the bans (anyone may ask)."""
        self.assertTrue(self.mode("", actor=self.bob).shown)
        self.mode("+b", "spam*")
        outcome = self.mode("+b", actor=self.bob)
        self.assertEqual([(ban.mask, ban.setter, ban.time) for ban in outcome.banList], [("spam*!*@*", "alice", 7.0)])
        self.assertEqual(outcome.refusals, [])

    def test_banRefusals(self):
        self.assertEqual(self.mode("+b", "a b").refusals[0][:12], "bad ban mask")
        self.assertEqual(self.mode("-b", "nobody").refusals, ["nobody!*@* is not banned from #dev"])
        self.assertEqual(self.mode("+b", "x").event.arguments, ("x!*@*",))
        self.assertIsNone(self.mode("+b", "X").event)  # the same mask, any case

    def test_banListIsBounded(self):
        for number in range(MAX_BANS):
            self.room.applyModes(self.alice, "+b", [f"n{number}"], self.all, 1.0)
        outcome = self.mode("+b", "one-more")
        self.assertEqual(outcome.refusals, [f"the ban list of #dev is full ({MAX_BANS})"])
        self.assertEqual(len(self.room.bans), MAX_BANS)

    @given(st.text(alphabet="+-biklmnotvxyz", max_size=12), st.lists(st.text(max_size=8), max_size=8))
    def test_anyModeStringIsAnswered(self, modes, arguments):
        """Whatever the letters and arguments, /mode answers with changes and refusals, never an exception."""
        room = RoomState("#dev")
        room.joined(self.alice, 0)
        outcome = room.applyModes(self.alice, modes, arguments, self.all, 1.0)
        self.assertTrue(outcome.event is not None or outcome.refusals or outcome.banList is not None
                        or outcome.shown or set(modes) <= set("+-imnt") or "-" in modes)


class PersistenceTests(unittest.TestCase):
    def test_roundTrip(self):
        """What outlives the members survives JSON: topic, modes, key, limit, bans, verified statuses."""
        room = RoomState("#dev")
        room.joined(user("carol"), 0)
        room.applyModes(user("carol"), "+tmklbov", ["k", "9", "spam", "bob", "carol"],
                        members(user("carol"), guest("bob")), 4.0)
        room.setTopic(user("carol"), "hello", 5.0)
        copy = RoomState.fromDict("#dev", json.loads(json.dumps(room.toDict())))
        self.assertEqual(copy.toDict(), room.toDict())
        self.assertEqual(copy.modeString, "+mtkl k 9")
        self.assertTrue(copy.isOperator(user("carol")))
        self.assertFalse(copy.isOperator(guest("bob")), "a guest's status is not kept")
        self.assertIsNotNone(copy.banned(Who("spam", "web")))
        self.assertTrue(copy.worthKeeping)
        self.assertFalse(RoomState("#x").worthKeeping)

    def test_garbageIsRefused(self):
        good = RoomState("#dev").toDict()
        for change in [{"flags": "tz"}, {"limit": 0}, {"limit": True}, {"key": "a b"}, {"bans": [["a b", "x", 1]]},
                       {"topic": [1, 2, 3]}, {"operators": [7]}, {"bans": "x"}]:
            with self.assertRaises(ValueError):
                RoomState.fromDict("#dev", dict(good, **change))
        with self.assertRaises(ValueError):
            RoomState.fromDict("#dev", [])


class RoomStoreTests(unittest.TestCase):
    """Rooms' states in the history database: written with the messages, read back at startup."""

    def test_statesSurviveARestart(self):
        path = self.mktemp()
        clock = Clock()
        history = History(path, clock)
        history.open()
        room = RoomState("#dev")
        room.joined(user("carol"), 0)
        room.setTopic(user("carol"), "kept", 1.0)
        history.storeRoom("#dev", room.toDict())
        history.storeRoom("#gone", RoomState("#gone").toDict())
        history.storeRoom("#gone", None)
        history.record("#dev", 2.0, "carol", "say", "hi")
        clock.advance(1)
        history.storeRoom("#dev", dict(room.toDict(), flags="t"))
        d = history.close()

        def restarted(_):
            again = History(path, Clock())
            again.open()
            self.addCleanup(again.close)
            self.assertEqual(sorted(again.roomStates), ["#dev"])
            state = RoomState.fromDict("#dev", again.roomStates["#dev"])
            self.assertEqual((state.topic.text, state.flags), ("kept", {"t"}))
            self.assertTrue(state.isOperator(user("carol")))

        return d.addCallback(restarted)

    def test_memoryStoresNothing(self):
        history = History(MEMORY, Clock())
        history.open()
        history.storeRoom("#dev", {})
        self.assertEqual(history.roomStates, {})

    def test_aCorruptStateIsSkipped(self):
        path = self.mktemp()
        history = History(path, Clock())
        history.open()
        d = history.close()

        def corrupt(_):
            connection = sqlite3.connect(path)
            connection.execute("INSERT INTO room_states VALUES ('#bad', 'not json')")
            connection.commit()
            connection.close()
            again = History(path, Clock())
            again.open()
            self.addCleanup(again.close)
            self.assertEqual(again.roomStates, {})
            self.assertEqual(len(self.flushLoggedErrors()), 0)

        return d.addCallback(corrupt)


class CodeTests(unittest.TestCase):
    def test_refusalsCarryIrcCodes(self):
        """Each refusal says why in words and as a code an IRC face turns into its numeric."""
        from sockproto.chat.events import RefusalCode

        room = RoomState("#dev")
        room.joined(guest("alice"), 0)
        self.assertEqual(room.kick(guest("bob"), guest("alice"), True, "", 1.0).code, RefusalCode.NOT_OPERATOR)
        room.applyModes(guest("alice"), "+iklb", ["k", "1", "eve"], {}, 1.0)
        self.assertEqual(room.mayJoin(guest("eve"), "k", 0).code, RefusalCode.BANNED)
        self.assertEqual(room.mayJoin(guest("zed"), "k", 0).code, RefusalCode.INVITE_ONLY)
        room.invites["zed"] = None
        self.assertEqual(room.mayJoin(guest("zed"), None, 0).code, RefusalCode.BAD_KEY)
        self.assertEqual(room.mayJoin(guest("zed"), "k", 1).code, RefusalCode.ROOM_FULL)
        outcome = room.applyModes(guest("alice"), "+zo", ["nobody"], {}, 1.0)
        self.assertEqual([p.code for p in outcome.refusals], [RefusalCode.UNKNOWN_MODE, RefusalCode.NOT_THERE])
