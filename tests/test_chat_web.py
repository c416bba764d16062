"""The web chat's own logic without sockets: the chat's output lines as events, the origin rule."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from sockproto.chat.history import MEMORY, History
from sockproto.chat.hub import ChatHub
from sockproto.chat.protocol import ChatFactory
from sockproto.chat.web import ChatEvents, WebChatFactory, stampTime


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
