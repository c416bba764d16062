"""The web chat's own logic without sockets: the chat's output lines as events, the origin rule."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.web import LIST_PIECE, REFRESH_DELAY, ChatEvents, WebChatFactory, inPieces, refreshDelay, stampTime


def events(*lines: str) -> list[dict]:
    clock = Clock()
    clock.advance(time.time())
    found, _ = ChatEvents(clock).feed("".join(line + "\n" for line in lines).encode())
    return found


class ChatEventsTests(unittest.TestCase):
    def test_eachKindOfLine(self) -> None:
        found = events(
            "[10:00:01] <alice> hi <b>there</b>",
            "[10:00:02] * alice waves",
            "[10:00:03] *bob* psst",
            "[10:00:04] -> *bob* back",
            "*** carol joined #lobby",
            "!!! nickname bob is taken",
            "Welcome to sockproto chat! Type /help for commands.",
            "*** 2 in #lobby: alice bob",
        )
        self.assertEqual([e["type"] for e in found], ["message", "me", "private", "private", "notice", "error",
                                                       "notice", "members"])
        self.assertEqual((found[0]["nick"], found[0]["text"]), ("alice", "hi <b>there</b>"))
        self.assertEqual((found[2]["from"], found[3]["to"]), ("bob", "bob"))
        self.assertEqual(found[5]["text"], "nickname bob is taken")
        self.assertEqual(found[7], {"type": "members", "room": "#lobby", "nicks": ["alice", "bob"]})
        self.assertEqual(time.localtime(found[0]["time"])[3:6], (10, 0, 1))

    def test_blocksOfLines(self) -> None:
        found = events(
            "*** rooms:", "***   #dev (2)", "***   #lobby (5)",
            "*** last 2 messages in #dev:", "[09:00:00] <a> one", "[09:00:01] * b two", "*** end of history of #dev",
        )
        self.assertEqual(found[0], {"type": "rooms", "rooms": [{"name": "#dev", "count": 2},
                                                              {"name": "#lobby", "count": 5}]})
        self.assertEqual(found[1]["type"], "history")
        self.assertEqual([(e["type"], e["text"]) for e in found[1]["entries"]], [("message", "one"), ("me", "two")])

    def test_aHistoryOfOneMessage(self) -> None:
        found = events("*** last 1 message in #dev:", "[09:00:00] <a> one", "*** end of history of #dev")
        self.assertEqual([(e["type"], len(e["entries"])) for e in found], [("history", 1)])

    def test_longListsComeInPieces(self) -> None:
        nicks = [f"n{i}" for i in range(LIST_PIECE * 2 + 1)]
        found = events(f"*** {len(nicks)} in #big: {' '.join(nicks)}", "*** rooms:",
                       *(f"***   #r{i} ({i})" for i in range(LIST_PIECE + 1)))
        self.assertEqual([(e["type"], e.get("part"), e.get("parts")) for e in found], [
            ("members", 1, 3), ("members", 2, 3), ("members", 3, 3), ("rooms", 1, 2), ("rooms", 2, 2),
        ])
        self.assertEqual([nick for e in found[:3] for nick in e["nicks"]], nicks)
        self.assertEqual({e["room"] for e in found[:3]}, {"#big"})
        self.assertEqual([r["name"] for e in found[3:] for r in e["rooms"]], [f"#r{i}" for i in range(LIST_PIECE + 1)])
        # A list that fits is one event, as it always was.
        short = {"type": "members", "room": "#x", "nicks": nicks[:LIST_PIECE]}
        self.assertEqual(inPieces(short), [short])

    def test_membershipChangesAreNoticed(self) -> None:
        clock = Clock()
        for line, changed in [("*** bob joined #x", True), ("*** bob left #x (quit)", True),
                              ("*** bob is now known as rob", True), ("*** link restored", False)]:
            self.assertEqual(ChatEvents(clock).feed(line.encode() + b"\n")[1], changed, line)

    @given(st.text(max_size=200).filter(lambda t: "\n" not in t and "\r" not in t))
    def test_anyMessageTextRoundTrips(self, text: str) -> None:
        found = events(f"[12:00:00] <n> {text}")
        self.assertEqual(found, [{"type": "message", "time": found[0]["time"], "nick": "n", "text": text}])

    def test_stampsBeforeMidnightAreYesterday(self) -> None:
        now = time.mktime((2026, 11, 30, 0, 0, 30, 0, 0, -1))
        self.assertEqual(now - stampTime("23", "59", "50", now), 40)


class OriginTests(unittest.TestCase):
    def factory(self, origins: list[str]) -> WebChatFactory:
        clock = Clock()
        return WebChatFactory(ChatFactory(clock, ChatHub(clock, History(MEMORY, clock))), origins)

    def test_theOwnOriginOnly(self) -> None:
        own = self.factory([])
        self.assertTrue(own.originAllowed("http://chat.example:8000", "chat.example:8000", secure=False))
        self.assertTrue(own.originAllowed("https://chat.example", "chat.example", secure=True))
        for origin, host, secure in [
            ("http://evil.example", "chat.example", False),
            ("http://chat.example", "chat.example", True),  # the page came over https
            ("http://chat.example:8001", "chat.example:8000", False),
            (None, "chat.example", False),
            ("null", "chat.example", False),
        ]:
            self.assertFalse(own.originAllowed(origin, host, secure), (origin, host))

    def test_listedOrigins(self) -> None:
        listed = self.factory(["https://Chat.Example.org/"])
        self.assertTrue(listed.originAllowed("https://chat.example.org", "internal:8000", secure=False))
        self.assertFalse(listed.originAllowed("http://internal:8000", "internal:8000", secure=False))


class Browser:
    """A WebSocket client of a WebChatFactory over a StringTransport: the handshake, then JSON events."""

    def __init__(self, web: WebChatFactory, port: int) -> None:
        peer = IPv4Address("TCP", "127.0.0.1", port)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000), peerAddress=peer)
        self.protocol = web.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Origin: http://127.0.0.1:8000\r\n\r\n"
        )
        head, _, self.pending = self.transport.value().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.transport.clear()
        #: The payload sizes of the frames received.
        self.sizes: list[int] = []

    def events(self) -> list[dict[str, Any]]:
        data, found = self.pending + self.transport.value(), []
        self.transport.clear()
        while len(data) >= 2:
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = struct.unpack("!H", data[2:4])[0], 4
            elif length == 127:
                length, start = struct.unpack("!Q", data[2:10])[0], 10
            if len(data) < start + length:
                break
            assert data[0] == 0x81, data[:2]  # one whole text frame
            self.sizes.append(length)
            found.append(json.loads(data[start : start + length]))
            data = data[start + length :]
        self.pending = data
        return found


class FakeMember:
    nick = ""
    room = None

    def send(self, data: bytes) -> None:
        pass


class WebChatProtocolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(time.time())
        self.history = History(MEMORY, self.clock)
        self.hub = ChatHub(self.clock, self.history)
        self.web = WebChatFactory(ChatFactory(self.clock, self.hub, maxLineLength=512), [])
        # No timers of autobahn's own on the global reactor.
        self.web.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)

    def load(self) -> tuple[Browser, list[dict[str, Any]]]:
        """A page loads: its first events, and those of the refresh that follows."""
        browser = Browser(self.web, 40000)
        self.addCleanup(browser.protocol.onClose, True, 1000, None)
        self.clock.advance(0)
        self.clock.advance(0.05)
        return browser, browser.events()

    def test_membersAndRoomsCome(self) -> None:
        """Whether or not the room has history to replay, the page gets its member list and room list."""
        for said in ([], ["earlier"]):
            for text in said:
                self.history.record("#lobby", self.clock.seconds(), "old", "say", text)
            browser, found = self.load()
            kinds = [event["type"] for event in found]
            self.assertEqual(kinds.count("history"), len(said), kinds)
            nick = browser.protocol.chat.nick
            members = [event for event in found if event["type"] == "members"]
            self.assertIn({"type": "members", "room": "#lobby", "nicks": [nick]}, members, found)
            self.assertIn({"type": "rooms", "rooms": [{"name": "#lobby", "count": 1}]}, found)
            browser.protocol.onClose(True, 1000, None)

    def test_aBigRoomGetsItsMembersInPieces(self) -> None:
        """
        Members and rooms by the thousand: the lists come in pieces of at most
        LIST_PIECE, whatever the limit on what a browser may send.
        """
        # A chat that announces arrivals even in rooms this big (--announce-joins-up-to).
        self.hub.announceJoinsUpTo = 10**6
        crowd = [FakeMember() for _ in range(1000)]
        for number, member in enumerate(crowd):
            self.hub.enter(member)
            if number < 300:
                self.hub.join(member, f"#room{number}")
        self.clock.advance(0)
        browser, found = self.load()
        members = [event for event in found if event["type"] == "members"]
        self.assertEqual([(e["part"], e["parts"]) for e in members], [(1, 4), (2, 4), (3, 4), (4, 4)])
        nicks = [nick for event in members for nick in event["nicks"]]
        self.assertEqual(sorted(nicks), sorted([m.nick for m in crowd[300:]] + [browser.protocol.chat.nick]))
        rooms = [event for event in found if event["type"] == "rooms"]
        self.assertEqual([(e["part"], e["parts"]) for e in rooms], [(1, 2), (2, 2)])
        self.assertEqual(len([room for event in rooms for room in event["rooms"]]), 301)
        self.assertLess(max(browser.sizes), LIST_PIECE * 64)
        # Asked again, by the page, and after someone joins: the same, and nothing logged.
        browser.protocol.onMessage(b'{"type": "members"}', False)
        self.assertEqual(len([e for e in browser.events() if e["type"] == "members"]), 4)
        # A big list waits longer for more arrivals: 1 s in a room of a thousand, 50 ms in a small one.
        self.assertEqual((refreshDelay(10), refreshDelay(1000), refreshDelay(10**6)), (REFRESH_DELAY, 1.05, 3.0))
        self.hub.enter(FakeMember())
        self.clock.advance(0)
        self.clock.advance(refreshDelay(701) - 0.01)
        self.assertEqual([e for e in browser.events() if e["type"] == "members"], [])
        self.clock.advance(0.01)
        self.assertEqual(sum(len(e["nicks"]) for e in browser.events() if e["type"] == "members"), 702)
        # Its own move to another room is not kept waiting by that.
        self.hub.enter(FakeMember())
        self.clock.advance(0)
        browser.protocol.onMessage(b'{"type": "say", "text": "/join #elsewhere"}', False)
        self.clock.advance(0)
        self.clock.advance(REFRESH_DELAY)
        members = [e for e in browser.events() if e["type"] == "members"]
        self.assertEqual(members, [{"type": "members", "room": "#elsewhere", "nicks": [browser.protocol.chat.nick]}])

    def test_aBrowserThatDoesNotReadABigRoomsListsIsDropped(self) -> None:
        """The member lists count against --max-output-buffer like the rest: a browser that does not read goes."""
        self.web.chatFactory.maxOutputBuffer = 100_000
        # A chat that announces arrivals even in rooms this big (--announce-joins-up-to).
        self.hub.announceJoinsUpTo = 10**6
        for _ in range(1000):
            self.hub.enter(FakeMember())
        self.clock.advance(0)
        browser, found = self.load()
        self.assertEqual(sum(len(e["nicks"]) for e in found if e["type"] == "members"), 1001)
        browser.transport.producer.pauseProducing()  # what a full socket buffer does
        for _ in range(100):  # each arrival: a new member list of about 10 KB
            self.hub.enter(FakeMember())
            self.clock.advance(0)
            self.clock.advance(refreshDelay(1100))
        self.assertTrue(browser.protocol.chat.dropped)
        self.assertEqual(self.web.chatFactory.slowConsumers, 1)
        self.assertLess(len(browser.transport.value()), 100_000 + 20_000)
