"""Rooms with owners across a cluster: two hubs on a fake shared bus (no reactor), the channel's events, real Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from sockproto.chat.bus import IChatBus, LocalBus
from sockproto.chat.cluster import BadEvent, RedisChatBus, checkEvent
from sockproto.chat.events import Kicked, ModeChanged, TopicChanged
from sockproto.chat.history import MEMORY, ClusterHistory, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.protocol import ChatFactory
from sockproto.server.redis import parseRedisURL
from tests.redisserver import RedisServer
from tests.support import LineClient, ServiceProcess
from tests.test_chat import PEER, FakeMember


class SharedRooms:
    """What Redis holds of the rooms' states, and the servers it tells (the fake cluster)."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[int, Any]] = {}
        self.buses: list[SharedBus] = []
        self.conflicts = 0


@implementer(IChatBus)
class SharedBus(LocalBus):
    """A server of a fake cluster: room states decided in one place, room events relayed at once."""

    clustered = True

    def __init__(self, shared: SharedRooms) -> None:
        self.shared = shared
        shared.buses.append(self)

    def roomChanged(self, room: str, version: int, state: dict[str, Any]) -> defer.Deferred[tuple[bool, int, Any]]:
        current, data = self.shared.states.get(room, (0, None))
        if current != version:
            self.shared.conflicts += 1
            return defer.succeed((False, current, data))
        self.shared.states[room] = (version + 1, json.loads(json.dumps(state)))
        for other in self.shared.buses:
            if other is not self:
                other.hub.rules.adopt(room, version + 1, self.shared.states[room][1])
        return defer.succeed((True, version + 1, None))

    def names(self, room: str, local: list[str]) -> defer.Deferred[list[str]]:
        everyone = [m.nick for bus in self.shared.buses if room in bus.hub.rooms for m in bus.hub.rooms[room].members]
        return defer.succeed(everyone)

    def roomEvent(self, event: Any) -> None:
        for other in self.shared.buses:
            if other is not self:
                if isinstance(event, Kicked):
                    other.hub.rules.remoteKick(event)
                else:
                    other.hub.remoteEvent(event.room, event)


class TwoServersTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.shared = SharedRooms()
        self.factories = []
        for _ in range(2):
            hub = ChatHub(self.clock, History(MEMORY, self.clock), bus=SharedBus(self.shared))
            self.factories.append(ChatFactory(self.clock, hub, floodRate=0))

    def client(self, server: int, nick: str) -> tuple[Any, Any]:
        from twisted.internet.testing import StringTransport

        proto = self.factories[server].buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        proto.dataReceived(f"/nick {nick}\n".encode())
        self.output(transport)
        return proto, transport

    def output(self, transport: Any) -> list[str]:
        self.clock.advance(0)
        lines = transport.value().decode().splitlines()
        transport.clear()
        return lines

    def say(self, client: tuple[Any, Any], *lines: str) -> list[str]:
        for line in lines:
            client[0].dataReceived(line.encode() + b"\n")
        return self.output(client[1])

    def test_aBanOnOneServerHoldsOnTheOther(self) -> None:
        alice, bob = self.client(0, "alice"), self.client(1, "bob")
        self.say(alice, "/join #dev", "/ban bob", "/topic shared", "/mode #dev +k s3cret")
        self.assertEqual(self.say(bob, "/join #dev s3cret"), ["!!! you are banned from #dev (+b)"])
        carol = self.client(1, "carol")
        self.assertEqual(self.say(carol, "/join #dev"), ["!!! #dev needs a key (+k): /join #dev KEY"])
        self.assertEqual(
            self.say(carol, "/join #dev s3cret")[:2],
            ["*** carol joined #dev", "*** topic of #dev: shared (set by alice)"],
        )
        self.assertEqual(self.say(carol, "/topic new"), ["*** carol set the topic of #dev: new"])
        self.assertEqual(
            self.say(alice, "/topic"),
            ["*** carol set the topic of #dev: new", "*** topic of #dev: new (set by carol)"],
        )

    def test_theCreatorOnOneServerOwnsTheRoomOnAll(self) -> None:
        alice, bob = self.client(0, "alice"), self.client(1, "bob")
        self.say(alice, "/join #dev")
        self.say(bob, "/join #dev")
        self.assertEqual(self.say(bob, "/names"), ["*** 2 in #dev: @alice bob"])
        self.assertEqual(self.say(bob, "/mode #dev +m"), ["!!! you are not an operator of #dev"])
        self.say(alice, "/mode #dev +m")
        self.assertEqual(self.say(bob), ["*** alice sets mode +m on #dev"])
        self.assertEqual(
            self.say(bob, "hi"), ["!!! #dev is moderated (+m): only operators and voiced members may speak"]
        )
        self.say(alice, "/voice bob")
        self.assertEqual(
            self.say(bob, "/mode #dev"),
            ["*** alice sets mode +v bob on #dev", "*** modes of #dev: +m"],
        )

    def test_aKickReachesTheOtherServer(self) -> None:
        alice, bob = self.client(0, "alice"), self.client(1, "bob")
        self.say(alice, "/join #dev")
        self.say(bob, "/join #dev")
        self.assertEqual(self.say(alice, "/kick bob bye"), ["*** bob was kicked from #dev by alice (bye)"])
        self.assertEqual(self.say(bob)[:2], ["*** bob was kicked from #dev by alice (bye)", "*** bob joined #lobby"])
        self.assertEqual(bob[0].room.name, "#lobby")

    def test_aChangeMadeMeanwhileElsewhereIsRefusedAndTheNewerStateTaken(self) -> None:
        alice = self.client(0, "alice")
        self.say(alice, "/join #dev")
        moderator = self.factories[0].moderator
        moderator.versions["#dev"] -= 1  # as if another server's change had not reached this one yet
        self.assertEqual(
            self.say(alice, "/topic mine"), ["!!! #dev was changed meanwhile on another server: try again"]
        )
        self.assertEqual(self.shared.conflicts, 1)
        self.assertEqual(self.say(alice, "/topic mine"), ["*** alice set the topic of #dev: mine"])

    def test_aGuestOperatorLeavingIsForgottenEverywhere(self) -> None:
        alice, bob = self.client(0, "alice"), self.client(1, "bob")
        self.say(alice, "/join #dev")
        self.say(bob, "/join #dev")
        self.say(alice, "/part")
        self.assertEqual(self.factories[1].moderator.states["#dev"].operators, {})


class ChannelRoomEventsTests(unittest.TestCase):
    """The room events on the cluster's channel: checked field by field, believed only as other events are."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.history = ClusterHistory()
        self.bus = RedisChatBus(self.clock, parseRedisURL("redis://127.0.0.1"), self.history, "here")
        self.bus.secret = b"s" * 32
        self.hub = ChatHub(self.clock, self.history, bus=self.bus)
        self.factory = ChatFactory(self.clock, self.hub)
        self.bus.firstLink.open()
        self.bus.knownNodes = {"there"}
        self.member = FakeMember()
        self.hub.enter(self.member)
        self.hub.join(self.member, "#dev")
        self.clock.advance(0)
        self.member.lines()

    def message(self, events: list[Any], secret: bytes | None = b"s" * 32) -> None:
        body = json.dumps({"n": "there", "t": 0, "e": events}).encode()
        if secret is not None:
            body += b"\n" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        self.bus._message(b"sockproto:events", b"\n" + body)
        self.clock.advance(0)

    def test_changesOfOtherServersReachTheRoom(self) -> None:
        self.message(
            [["t", "#dev", 1.0, "alice", "web", "news"], ["o", "#dev", 2.0, "alice", "web", "+o", [self.member.nick]]]
        )
        self.assertEqual(
            self.member.lines(),
            ["*** alice set the topic of #dev: news", f"*** alice sets mode +o {self.member.nick} on #dev"],
        )
        self.message([["k", "#dev", 3.0, "alice", "web", self.member.nick, "out"]])
        self.assertEqual(
            self.member.lines()[:2],
            [f"*** {self.member.nick} was kicked from #dev by alice (out)", f"*** {self.member.nick} joined #lobby"],
        )
        self.assertEqual(self.member.room.name, "#lobby")

    def test_unsignedRoomEventsAreNotBelieved(self) -> None:
        self.message([["k", "#dev", 3.0, "mallory", "web", self.member.nick, "forged"]], secret=None)
        self.assertEqual(self.member.room.name, "#dev")
        self.assertEqual(self.bus.rejected, 1)

    def test_whatThisServerSendsIsWhatItTakes(self) -> None:
        from sockproto.chat.events import Who

        sent: list[Any] = []
        self.bus.linked = True
        self.patch(self.bus, "_schedule", lambda: sent.extend(self.bus._batch))
        self.bus.roomEvent(TopicChanged("#dev", Who("a", "line"), "t", 1.0))
        self.bus.roomEvent(ModeChanged("#dev", Who("a", "line"), "+ov-b", ("b", "c", "x!*@*"), 1.0))
        self.bus.roomEvent(Kicked("#dev", Who("a", "irc"), "b", 1.0, "why"))
        self.assertEqual([checkEvent(json.loads(json.dumps(event))) for event in sent], sent)

    def test_junk(self) -> None:
        for event in [
            ["r", "#dev", True],
            ["r", "#dev", 0],
            ["r", "#dev", 2**60],
            ["r", "dev", 1],
            ["t", "#dev", 1.0, "a", "web"],
            ["o", "#dev", 1.0, "a", "web", "+q", []],
            ["o", "#dev", 1.0, "a", "web", "o", []],
            ["o", "#dev", 1.0, "a", "web", "+o", ["x"] * 7],
            ["o", "#dev", 1.0, "a", "web", "+b", [7]],
            ["k", "#dev", 1.0, "a", "web", "no body", ""],
            ["t", "#dev", 1.0, "a", "web", "x" * 301],
        ]:
            with self.assertRaises(BadEvent, msg=event):
                checkEvent(event)
        self.assertEqual(checkEvent(["r", "#dev", 3]), ["r", "#dev", 3])
        self.assertEqual(checkEvent(["o", "#dev", 1.0, "a", "web", "+b", {}]), ["o", "#dev", 1.0, "a", "web", "+b", []])


class RedisRoomsTests(unittest.TestCase):
    """Two real chat servers on a real Redis: a room's state is one, a kick or ban on one holds on both."""

    def setUp(self) -> None:
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        self.redis.start()

    def node(self, name: str) -> ServiceProcess:
        service = ServiceProcess(
            "sockproto-chat",
            "--listen",
            "tcp:0",
            "--history",
            ":memory:",
            "--flood-rate",
            "0",
            "--cluster",
            self.redis.url,
            "--node-name",
            name,
        )
        self.addCleanup(service.stop)
        service.start(1)
        service.waitForLog(f"cluster: {name} joined the chat servers")
        return service

    def client(self, node: ServiceProcess, nick: str) -> LineClient:
        c = LineClient.tcp(node.port("chat"), timeout=20)
        self.addCleanup(c.close)
        c.until("joined #lobby")
        c.send(f"/nick {nick}\n")
        c.until(f"is now known as {nick}")
        return c

    def test_roomStateSpansTheCluster(self) -> None:
        n1, n2 = self.node("n1"), self.node("n2")
        alice, bob, carol = self.client(n1, "alice"), self.client(n2, "bob"), self.client(n2, "carol")
        alice.send("/join #dev\n")
        alice.until("alice joined #dev")
        carol.send("/join #dev\n")
        carol.until("carol joined #dev")
        alice.until("carol joined #dev")
        alice.send("/topic across\n/ban bob\n")
        self.assertEqual(alice.until("+b")[-1], "*** alice sets mode +b bob!*@* on #dev")
        # n2 has read the room's new state from Redis before it tells carol of the change.
        self.assertEqual(
            carol.until("+b")[-2:],
            ["*** alice set the topic of #dev: across", "*** alice sets mode +b bob!*@* on #dev"],
        )
        bob.send("/join #dev\n")
        self.assertEqual(bob.until("!!!")[-1], "!!! you are banned from #dev (+b)")
        carol.send("/topic\n/names\n/mode #dev +t\n")
        self.assertEqual(
            carol.until("!!!")[-3:],
            [
                "*** topic of #dev: across (set by alice)",
                "*** 2 in #dev: @alice carol",
                "!!! you are not an operator of #dev",
            ],
        )
        alice.send("/kick carol enough\n")
        self.assertEqual(carol.until("kicked")[-1], "*** carol was kicked from #dev by alice (enough)")
        carol.until("carol joined #lobby")
        alice.until("kicked")
        # A server that comes later knows the rooms as Redis has them before anyone there joins one.
        n3 = self.node("n3")
        dave = self.client(n3, "dave")
        dave.send("/join #dev\n")
        self.assertEqual(dave.until("topic of #dev")[-1], "*** topic of #dev: across (set by alice)")
