"""The web chat's own logic without sockets: the web face's JSON for the hub's events, the origin rule."""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from sockproto.chat.events import (
    Action,
    ChatEvent,
    Goodbye,
    Help,
    Joined,
    LoggedIn,
    MemberList,
    Membership,
    Message,
    NickChanged,
    Parted,
    PrivateMessage,
    Quit,
    Refusal,
    RefusalCode,
    RoomInfo,
    RoomList,
    ServerNotice,
    Welcome,
    Who,
)
from sockproto.chat.events import (
    History as HistoryEvent,
)
from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.lineface import LineFace
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.web import (
    LIST_PIECE,
    NOT_UNICODE,
    REFRESH_DELAY,
    WebChatFactory,
    WebFace,
    hostName,
    inPieces,
    messageLimit,
    readMessage,
    refreshDelay,
    webSite,
)


def events(*happened: ChatEvent) -> list[dict]:
    """What a browser is sent for ``happened``: the frames the web face renders, decoded."""
    frames = b"".join(WebFace(WebChatFactory.frame.__get__(FRAMER)).render(event, None) for event in happened)
    return [json.loads(payload) for payload in unframe(frames)]


def unframe(data: bytes) -> list[bytes]:
    """The payloads of unmasked WebSocket text frames."""
    payloads = []
    while data:
        size = data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        payloads.append(data[start : start + size])
        data = data[start + size :]
    return payloads


_clock = Clock()
FRAMER = WebChatFactory(ChatFactory(_clock, ChatHub(_clock, History(MEMORY, _clock))), [])
ALICE, BOB = Who("alice", "web"), Who("bob", "line")


class WebFaceTests(unittest.TestCase):
    """The web face renders the hub's events as the JSON of docs/web-chat.rst, without parsing text."""

    def test_eachKindOfEvent(self) -> None:
        found = events(
            Message("#lobby", ALICE, "hi <b>there</b>", 1796014528.25),
            Action("#lobby", ALICE, "waves", 1796014529.0),
            PrivateMessage(BOB, "alice", "psst", 1796014530.0),
            PrivateMessage(ALICE, "bob", "back", 1796014531.0, echo=True),
            Joined("#lobby", Who("carol", "line"), 1796014532.0),
            Refusal("nickname bob is taken"),
            Welcome(),
            MemberList("#lobby", (Membership("alice"), Membership("bob"))),
        )
        self.assertEqual([e["type"] for e in found], ["message", "me", "private", "private", "notice", "error",
                                                       "notice", "members"])
        self.assertEqual(found[0], {"type": "message", "time": 1796014528.25, "nick": "alice",
                                    "text": "hi <b>there</b>"})
        self.assertEqual((found[2]["from"], found[3]["to"]), ("bob", "bob"))
        self.assertEqual(found[4], {"type": "notice", "kind": "join", "text": "carol joined #lobby"})
        self.assertEqual(found[5], {"type": "error", "text": "nickname bob is taken"})
        self.assertEqual(found[6]["text"], "Welcome to sockproto chat! Type /help for commands.")
        self.assertEqual(found[7], {"type": "members", "room": "#lobby", "nicks": ["alice", "bob"]})

    def test_errorsSayWhyAsACode(self) -> None:
        """A refusal with a code has it in the error: a client can tell "nickname taken" without reading words."""
        self.assertEqual(events(Refusal("nickname bob is taken", RefusalCode.NICK_IN_USE)),
                         [{"type": "error", "text": "nickname bob is taken", "code": "nick-in-use"}])

    def test_noticesSayWhatLineClientsRead(self) -> None:
        """Every notice has the words of the line face's ``***`` line, and its kind."""
        face = LineFace()
        for event in [Joined("#x", BOB, 1.0), Parted("#x", BOB, 1.0), Quit("#x", BOB, 1.0, "quit"),
                      NickChanged("#x", BOB, "rob", 1.0, "name reserved"), ServerNotice("link restored"),
                      LoggedIn("alice"), Goodbye("Goodbye!")]:
            line = face.text(event)
            self.assertEqual(events(event), [{"type": "notice", "kind": event.kind,
                                              "text": line.removeprefix("*** ").removesuffix("\n")}])

    def test_helpIsOneNoticePerLine(self) -> None:
        help = Help((("/nick NAME", "change your nickname"), ("/login NAME PASSWORD", "log in")))
        lines = LineFace().text(help).splitlines()
        self.assertEqual([e["text"] for e in events(help)], [line.removeprefix("*** ") for line in lines])

    def test_blocksOfLines(self) -> None:
        found = events(
            RoomList((RoomInfo("#dev", 2), RoomInfo("#lobby", 5))),
            HistoryEvent("#dev", (Message("#dev", Who("a"), "one", 1.0), Action("#dev", Who("b"), "two", 2.0))),
        )
        self.assertEqual(found[0], {"type": "rooms", "rooms": [{"name": "#dev", "count": 2},
                                                              {"name": "#lobby", "count": 5}]})
        self.assertEqual(found[1]["type"], "history")
        self.assertEqual([(e["type"], e["text"]) for e in found[1]["entries"]], [("message", "one"), ("me", "two")])

    def test_anEmptyHistory(self) -> None:
        """Asked for, a room without messages says so in a notice."""
        self.assertEqual(events(HistoryEvent("#dev", ())),
                         [{"type": "notice", "kind": "history", "text": "no messages in #dev yet"}])

    def test_aHistoryOfOneMessage(self) -> None:
        found = events(HistoryEvent("#dev", (Message("#dev", Who("a"), "one", 1.0),)))
        self.assertEqual([(e["type"], len(e["entries"])) for e in found], [("history", 1)])

    def test_longListsComeInPieces(self) -> None:
        nicks = [f"n{i}" for i in range(LIST_PIECE * 2 + 1)]
        found = events(MemberList("#big", tuple(Membership(nick) for nick in nicks)),
                       RoomList(tuple(RoomInfo(f"#r{i}", i) for i in range(LIST_PIECE + 1))))
        self.assertEqual([(e["type"], e.get("part"), e.get("parts")) for e in found], [
            ("members", 1, 3), ("members", 2, 3), ("members", 3, 3), ("rooms", 1, 2), ("rooms", 2, 2),
        ])
        self.assertEqual([nick for e in found[:3] for nick in e["nicks"]], nicks)
        self.assertEqual({e["room"] for e in found[:3]}, {"#big"})
        self.assertEqual([r["name"] for e in found[3:] for r in e["rooms"]], [f"#r{i}" for i in range(LIST_PIECE + 1)])
        # A list that fits is one event, as it always was.
        short = {"type": "members", "room": "#x", "nicks": nicks[:LIST_PIECE]}
        self.assertEqual(inPieces(short), [short])

    @given(st.text(max_size=200))
    def test_anyMessageTextRoundTrips(self, text: str) -> None:
        found = events(Message("#x", Who("n"), text, 12.5))
        self.assertEqual(found, [{"type": "message", "time": 12.5, "nick": "n", "text": text}])


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
        nick = browser.protocol.chat.nick  # who opened the room is its operator
        self.assertEqual(members, [{"type": "members", "room": "#elsewhere", "nicks": [nick], "operators": [nick]}])

    def test_aLoneSurrogateIsRefusedAndTheSocketStays(self) -> None:
        """
        JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 holds: each
        string the page sends into the chat (say, login, an unknown type) gets
        an error event, not a dropped connection and a logged traceback.
        """
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        browser, _ = self.load()
        for message in (
            rb'{"type":"say","text":"a\ud800b"}',
            rb'{"type":"login","name":"a\udfff","password":"x"}',
            rb'{"type":"login","name":"a","password":"\udc00"}',
            rb'{"type":"\ud800"}',
        ):
            data = maskedFrame(message)
            browser.protocol.dataReceived(data)  # whole, then a byte at a time
            for i in range(len(data)):
                browser.protocol.dataReceived(data[i : i + 1])
            errors = [event for event in browser.events() if event["type"] == "error"]
            self.assertEqual(len(errors), 2, (message, errors))
            self.assertFalse(browser.transport.disconnecting, message)
            self.assertTrue(errors[0]["text"] == NOT_UNICODE or "unknown message type" in errors[0]["text"], errors)
        self.assertEqual([e for e in logged if e.get("log_level") is not None and e["log_level"].name != "debug"], [])
        # Still a chat client: what comes next is said.
        browser.protocol.dataReceived(maskedFrame(b'{"type":"say","text":"/nick still_here"}'))
        self.assertEqual(browser.protocol.chat.nick, "still_here")

    def test_aLongLineInAnyScriptGetsTheChatsOwnRefusal(self) -> None:
        """
        The page's input takes 2,000 characters; 1,200 of "中" are 3,600 bytes,
        over --max-line-length (512 here): the chat's error event, the page
        told the limit, and the connection stays.
        """
        browser, found = self.load()
        self.assertIn({"type": "limits", "line": 512}, found)
        # The most the page's input (2,000 UTF-16 units) can be, escaped as JSON at its most (\\ud83d\\ude00).
        for text in ("中" * 1200, "😀" * 1000, "\x01" * 2000):
            data = maskedFrame(json.dumps({"type": "say", "text": text}).encode())
            browser.protocol.dataReceived(data)  # whole, then a byte at a time
            for i in range(len(data)):
                browser.protocol.dataReceived(data[i : i + 1])
            errors = [event for event in browser.events() if event["type"] == "error"]
            self.assertEqual([error["code"] for error in errors], ["line-too-long"] * 2, errors)
            self.assertFalse(browser.transport.disconnecting)
        browser.protocol.dataReceived(maskedFrame(b'{"type":"say","text":"/nick still_here"}'))
        self.assertEqual(browser.protocol.chat.nick, "still_here")

    def test_autobahnsOwnFailuresAreOneLineAMinute(self) -> None:
        """Messages over the WebSocket limit drop the connection; what autobahn says of it: a line a minute."""
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        tooBig = maskedFrame(b"x" * (messageLimit(512) + 1))
        for round in range(2):
            for port in range(5):
                browser = Browser(self.web, 41000 + port)
                browser.protocol.dataReceived(tooBig)
                self.assertTrue(browser.transport.disconnecting)
                browser.protocol.connectionLost(Failure(ConnectionDone()))
            said = [e for e in logged if e.get("log_namespace", "").startswith("sockproto.chat.web")
                    or "WebSocket" in e.get("log_format", "")]
            self.assertEqual(len(said), 1 + round, said)
            self.clock.advance(60)
        self.assertIn("exceeds payload limit", said[0]["what"])
        self.assertEqual(said[1]["unsaid"], 9)  # the first round: two lines each, one said, nine not

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


class MessageTests(unittest.TestCase):
    def test_objectsWithATypeOnly(self) -> None:
        self.assertEqual(readMessage(b'{"type": "say", "text": "hi"}'), {"type": "say", "text": "hi"})
        for payload in (b"{not json", b"[1]", b'"say"', b'{"text": "x"}', b'{"type": 5}', b"\xff"):
            self.assertRaises(ValueError, readMessage, payload)

    def test_deeplyNestedJSONIsNotAMessage(self) -> None:
        # json.loads raises RecursionError here, which closed the WebSocket.
        for payload in (b"[" * 3000, b'{"type": ' + b"[" * 3000, b"[" * 3000 + b"]" * 3000):
            self.assertRaises(ValueError, readMessage, payload)


def newSite(readTimeout: float = 5.0, hosts: tuple[str, ...] = (), origins: tuple[str, ...] = ()):
    clock = Clock()
    chat = ChatFactory(clock, ChatHub(clock, History(MEMORY, clock)), readTimeout=readTimeout)
    site = webSite(chat, list(origins), list(hosts))
    # autobahn's own timers run on the global reactor: none in these tests.
    site.webSockets.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    return site, clock


def connectTo(site, host: str = "127.0.0.1"):
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000), hostAddress=IPv4Address("TCP", host, 8000)
    )
    channel = site.buildProtocol(transport.getPeer())
    transport.protocol = channel  # autobahn hands the connection over by this attribute
    channel.makeConnection(transport)
    return channel, transport


def upgradeRequest(host: str = "127.0.0.1:8000", origin: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    origin = origin or f"http://{host}"
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    ).encode()


def maskedFrame(payload: bytes) -> bytes:
    """A browser's text message of any size, in one masked frame."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    elif len(payload) < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, len(payload))
    return head + mask + masked


def clientFrame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload)) + mask + masked


class HostTests(unittest.TestCase):
    """DNS rebinding: only the server's own host names are served, the page and the WebSocket alike."""

    def test_hostNames(self) -> None:
        self.assertEqual(hostName(b"Chat.Example.:8000"), "chat.example")
        self.assertEqual(hostName(b"[::1]:80"), "::1")
        self.assertEqual(hostName(b"127.0.0.1"), "127.0.0.1")
        for bad in (b"", b"a b", b"evil@localhost", b"localhost/x", b"x:y", b"\xff"):
            self.assertIsNone(hostName(bad), bad)

    def test_whichHostsAreServed(self) -> None:
        site, _ = newSite(hosts=("chat.example.org",), origins=("https://www.example.com",))
        for host in (b"localhost:8000", b"LOCALHOST.", b"127.0.0.1:8000", b"[::1]:8000", b"192.0.2.7",
                     b"chat.example.org", b"www.example.com:443", None):
            self.assertTrue(site.servesHost(host), host)
        for host in (b"evil.example:8000", b"localhost.evil.example", b"example.org", b"", b"a b"):
            self.assertFalse(site.servesHost(host), host)

    def request(self, site, data: bytes) -> bytes:
        channel, transport = connectTo(site)
        channel.dataReceived(data)
        return transport.value()

    def test_aRebindingPageGets421(self) -> None:
        site, clock = newSite()
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _ in range(3):
            page = self.request(site, b"GET / HTTP/1.1\r\nHost: evil.example:8000\r\n\r\n")
            self.assertTrue(page.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), page[:80])
            self.assertIn(b"Content-Security-Policy", page)
        socket = self.request(site, upgradeRequest("evil.example:8000"))
        self.assertTrue(socket.startswith(b"HTTP/1.1 421 "), socket[:80])
        self.assertEqual(site.errors["unknown_host"], 4)
        said = [e for e in events if "host name it does not serve" in e.get("log_format", "")]
        self.assertEqual(len(said), 1)  # one line a minute, with how many went unsaid
        clock.advance(60)
        self.request(site, b"GET / HTTP/1.1\r\nHost: evil.example:8000\r\n\r\n")
        said = [e for e in events if "host name it does not serve" in e.get("log_format", "")]
        self.assertEqual([e["unsaid"] for e in said], [0, 3])
        page = self.request(site, b"GET / HTTP/1.1\r\nHost: localhost:8000\r\n\r\n")
        self.assertTrue(page.startswith(b"HTTP/1.1 200 "), page[:80])

    def test_theOwnHostUpgrades(self) -> None:
        site, _ = newSite()
        channel, transport = connectTo(site)
        channel.dataReceived(upgradeRequest())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "), transport.value()[:80])
        transport.protocol.connectionLost(Failure(ConnectionDone()))


class ReadTimeoutTests(unittest.TestCase):
    """--read-timeout: a request, or a WebSocket message, must come whole within it from its first byte."""

    def test_aTrickledRequestIsCutOff(self) -> None:
        site, clock = newSite(readTimeout=5)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        connections = [connectTo(site) for _ in range(20)]
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n" + b"X-Slow: " + b"a" * 100
        for byte in request:  # a byte every half second: twisted.web's own timeout never fires
            for channel, _ in connections:
                channel.dataReceived(bytes([byte]))
            clock.advance(0.5)
            if all(transport.disconnecting for _, transport in connections):
                break
        self.assertTrue(all(transport.disconnecting for _, transport in connections))
        self.assertEqual(clock.seconds(), 5.0)
        self.assertEqual(site.errors["read_timeout"], 20)
        said = [e for e in events if "--read-timeout" in e.get("log_format", "")]
        self.assertEqual(len(said), 1, "one line, not one per connection")

    def test_requestsInTimeOneAfterAnother(self) -> None:
        site, clock = newSite(readTimeout=5)
        channel, transport = connectTo(site)
        request = b"GET /chat.css HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
        for _ in range(4):  # each in 4 s: 16 s in all, each within its own deadline
            for index in range(0, len(request), len(request) // 4 + 1):
                channel.dataReceived(request[index : index + len(request) // 4 + 1])
                clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 4)
        clock.advance(20)  # idle between requests: twisted.web's 30 s timeout, not the read deadline
        self.assertFalse(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))

    def openWebSocket(self, readTimeout: float = 5):
        site, clock = newSite(readTimeout=readTimeout)
        channel, transport = connectTo(site)
        channel.dataReceived(upgradeRequest())
        socket = transport.protocol
        self.addCleanup(socket.connectionLost, Failure(ConnectionDone()))
        transport.clear()
        return site, clock, socket, transport

    def test_aFragmentedMessageWhoseSenderAnswersPingsIsCutOff(self) -> None:
        site, clock, socket, transport = self.openWebSocket()
        socket.dataReceived(clientFrame(0x1, b'{"type": "say", ', fin=False))
        for _ in range(40):
            socket.dataReceived(clientFrame(0xA, b"pong"))  # alive, and the message not a byte further
            clock.advance(0.5)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.seconds(), 5.0)
        self.assertEqual(site.errors["read_timeout"], 1)

    def test_aTrickledFrameIsCutOff(self) -> None:
        site, clock, socket, transport = self.openWebSocket()
        for byte in clientFrame(0x1, json.dumps({"type": "say", "text": "x" * 60}).encode()):
            socket.dataReceived(bytes([byte]))
            clock.advance(0.5)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.seconds(), 5.0)

    def test_messagesInTimeAndWholeOnesGoOn(self) -> None:
        site, clock, socket, transport = self.openWebSocket()
        message = json.dumps({"type": "say", "text": "/nick slowpoke"}).encode()
        first, second = message[:20], message[20:]
        for _ in range(5):  # each message in two fragments 4 s apart: 20 s in all
            socket.dataReceived(clientFrame(0x1, first, fin=False))
            clock.advance(4)
            socket.dataReceived(clientFrame(0x0, second) + clientFrame(0x1, first, fin=False)[:3])
            clock.advance(4)  # the next one begun with the last fragment: its own deadline
            socket.dataReceived(clientFrame(0x1, first, fin=False)[3:] + clientFrame(0x0, second))
            clock.advance(30)  # nothing begun: no deadline
        self.assertFalse(transport.disconnecting)
        self.assertIn(b"slowpoke", transport.value())
        self.assertEqual(site.errors["read_timeout"], 0)

    def test_noDeadlineWithoutAReadTimeout(self) -> None:
        site, clock, socket, transport = self.openWebSocket(readTimeout=0)
        socket.dataReceived(clientFrame(0x1, b'{"type": ', fin=False))
        clock.advance(1000)
        self.assertFalse(transport.disconnecting)
