"""The IRC face end to end: twisted.words' IRCClient, nc and a browser in one room of the real process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Any

from twisted.internet.protocol import FileWrapper
from twisted.trial import unittest
from twisted.words.protocols import irc

from tests.redisserver import RedisServer
from tests.support import LineClient, ServiceProcess
from tests.wsclient import WebSocketClient


class RecordingClient(irc.IRCClient):
    """twisted.words' IRC client, noting what it is told."""

    heartbeatInterval = None  # no timer left behind in the test's reactor

    def __init__(self, nick: str) -> None:
        self.nickname = nick
        self.username = nick
        self.heard: list[tuple[Any, ...]] = []

    def signedOn(self) -> None:
        self.heard.append(("signedOn",))

    def joined(self, channel: str) -> None:
        self.heard.append(("joined", channel))

    def left(self, channel: str) -> None:
        self.heard.append(("left", channel))

    def privmsg(self, user: str, channel: str, message: str) -> None:
        self.heard.append(("privmsg", user, channel, message))

    def action(self, user: str, channel: str, data: str) -> None:
        self.heard.append(("action", user, channel, data))

    def userJoined(self, user: str, channel: str) -> None:
        self.heard.append(("userJoined", user, channel))

    def irc_RPL_ENDOFNAMES(self, prefix: str, params: list[str]) -> None:
        self.heard.append(("names", params[1]))


class BlockingIRC:
    """An IRCClient driven over a blocking socket (the server is another process)."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.client = RecordingClient(nick)
        self.client.makeConnection(FileWrapper(self.sock.makefile("wb", buffering=0)))

    def until(self, wanted: Any, timeout: float = 10.0) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.client.heard:
                if wanted(event):
                    self.client.heard.remove(event)
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"not heard; heard {self.client.heard}")
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; heard {self.client.heard}")
            self.client.dataReceived(data)

    def close(self) -> None:
        self.sock.close()


def isEvent(*prefix: Any):
    return lambda event: event[: len(prefix)] == prefix


class IrcFaceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", "tcp:0", "--irc", "tcp:0", "--history", ":memory:",
            "--flood-rate", "0",
        )
        self.addCleanup(self.chat.stop)
        self.chat.start(3)

    def irc(self, nick: str) -> BlockingIRC:
        client = BlockingIRC(self.chat.port("chat-irc"), nick)
        self.addCleanup(client.close)
        client.until(isEvent("signedOn"))
        client.client.join("#lobby")  # an IRC client is in no channel until it joins one
        client.until(isEvent("joined", "#lobby"))
        return client

    def test_ircLineAndBrowserUsersShareARoom(self) -> None:
        alice = self.irc("alice")
        line = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        line.send("/nick liner\n")
        web = WebSocketClient(self.chat.port("chat-web"))
        self.addCleanup(web.close)
        web.until(lambda event: event["type"] == "state")
        web.send({"type": "say", "text": "/nick webby"})
        web.until(lambda event: event["type"] == "state" and event.get("nick") == "webby")
        bob = self.irc("bob")

        for client in (alice, bob):
            client.client.join("#dev")
            client.until(isEvent("joined", "#dev"))
        line.send("/join #dev\n")
        web.send({"type": "say", "text": "/join #dev"})
        web.until(lambda event: event["type"] == "state" and event.get("room") == "#dev")
        alice.until(isEvent("userJoined", "webby"))

        alice.client.msg("#dev", "hello from irc")
        self.assertRegex(line.until("hello from irc")[-1], r"<alice> hello from irc$")
        web.until(lambda event: event.get("type") == "message" and event.get("text") == "hello from irc")
        self.assertEqual(bob.until(isEvent("privmsg"))[1:], ("alice!~alice@irc.sockproto", "#dev", "hello from irc"))

        line.send("hello from nc\n/me waves\n")
        self.assertEqual(alice.until(isEvent("privmsg"))[1:], ("liner!line@line.sockproto", "#dev", "hello from nc"))
        self.assertEqual(alice.until(isEvent("action"))[1:], ("liner!line@line.sockproto", "#dev", "waves"))

        web.send({"type": "say", "text": "hello from a browser"})
        said = alice.until(isEvent("privmsg"))
        self.assertEqual(said[1:], ("webby!web@web.sockproto", "#dev", "hello from a browser"))

        alice.client.msg("webby", "psst")
        private = web.until(lambda event: event.get("type") == "private")
        self.assertEqual((private[-1]["from"], private[-1]["text"]), ("alice", "psst"))

    def test_historyOnJoin(self) -> None:
        line = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        line.send("/nick liner\n/join #old\nsaid before\n")
        line.until("joined #old")
        time.sleep(0.1)
        alice = self.irc("alice")
        alice.client.join("#old")
        alice.until(isEvent("joined", "#old"))
        said = alice.until(isEvent("privmsg"))
        self.assertEqual(said[1:3], ("liner", "#old"))
        self.assertTrue(said[3].endswith("said before"))


class ClusterTests(unittest.TestCase):
    """IRC members of a cluster: the other servers see them where they are, and not after they left."""

    def test_otherServersSeeIrcMembersInTheirRoomsOnly(self) -> None:
        redis = RedisServer()
        self.addCleanup(redis.cleanup)
        redis.start()
        nodes = []
        for name, extra in (("n1", ("--irc", "tcp:0")), ("n2", ())):
            node = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", ":memory:", "--flood-rate", "0",
                                  "--cluster", redis.url, "--node-name", name, *extra)
            self.addCleanup(node.stop)
            node.start(1 + len(extra) // 2)
            node.waitForLog(f"cluster: {name} joined the chat servers")
            nodes.append(node)
        line = LineClient.tcp(nodes[1].port("chat"), timeout=20)
        self.addCleanup(line.close)
        line.until("joined #lobby")
        line.send("/nick alice\n")
        line.until("is now known as alice")

        irc = BlockingIRC(nodes[0].port("chat-irc"), "ircy")
        self.addCleanup(irc.close)
        irc.until(isEvent("signedOn"))
        irc.client.join("#dev")
        irc.until(isEvent("joined", "#dev"))
        irc.client.join("#ops")
        irc.until(isEvent("joined", "#ops"))
        # Registered as a guest, renamed, then in #dev: never in #lobby, under any name.
        line.send("/who\n")
        self.assertEqual(line.until("in #lobby")[-1], "*** 1 in #lobby: alice")
        irc.client.part("#dev")
        irc.until(isEvent("left", "#dev"))
        line.send("/rooms\n")
        rooms = line.until("#ops")
        self.assertFalse([r for r in rooms if "#dev" in r], rooms)  # its first room left, shown in the next

        irc.client.quit("bye")
        deadline = time.monotonic() + 10
        while True:
            line.send("/rooms\n")
            shown = line.until("#lobby")
            if not any("#ops" in r for r in shown):
                break
            self.assertLess(time.monotonic(), deadline, shown)
            time.sleep(0.05)
        line.send("/who\n")
        self.assertEqual(line.until("in #lobby")[-1], "*** 1 in #lobby: alice")


class TerminalClientTests(unittest.TestCase):
    """A real terminal IRC client (irssi) in tmux against the real process."""

    def setUp(self) -> None:
        for program in ("irssi", "tmux"):
            if shutil.which(program) is None:
                raise unittest.SkipTest(f"{program} is not installed (Debian: apt-get install irssi tmux)")

    def test_irssiJoinsAndTalks(self) -> None:
        chat = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--irc", "tcp:0", "--history", ":memory:")
        self.addCleanup(chat.stop)
        chat.start(2)
        line = LineClient.tcp(chat.port("chat"))
        self.addCleanup(line.close)
        line.until("joined #lobby")
        session = f"sockproto-irssi-{chat.pid}"
        home = self.mktemp()
        subprocess.run(["mkdir", "-p", home], check=True)
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
             f"irssi --home={home} -n irssiuser -c 127.0.0.1 -p {chat.port('chat-irc')}"],
            check=True,
        )
        self.addCleanup(subprocess.run, ["tmux", "kill-session", "-t", session], check=False)

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True, check=True).stdout

        deadline = time.monotonic() + 10
        while "Welcome to the" not in screen():  # registered: 001 is shown
            if time.monotonic() > deadline:
                raise AssertionError(screen())
            time.sleep(0.1)
        # The joined channel's window becomes the active one, where the text is typed.
        subprocess.run(["tmux", "send-keys", "-t", session, "/join #lobby", "Enter"], check=True)
        line.until("irssiuser joined #lobby")
        subprocess.run(["tmux", "send-keys", "-t", session, "hello from irssi", "Enter"], check=True)
        self.assertRegex(line.until("hello from irssi")[-1], r"<irssiuser> hello from irssi$")
        line.send("hello back from nc\n")
        deadline = time.monotonic() + 10
        while "hello back from nc" not in screen():
            if time.monotonic() > deadline:
                raise AssertionError(screen())
            time.sleep(0.1)
