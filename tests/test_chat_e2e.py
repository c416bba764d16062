"""The chat service end to end: the real plugin, several real clients."""

import socket
import subprocess
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import PYTHON, LineClient, ServiceProcess, connectUNIX, startService

STAMP = r"\[\d\d:\d\d:\d\d\] "


class ChatEndToEndTests(unittest.TestCase):
    def startChat(self, *args, endpoints=1):
        return startService(self, "sockproto-chat", "--history", ":memory:", *args, endpoints=endpoints)

    def client(self, port):
        c = LineClient.tcp(port)
        self.addCleanup(c.close)
        c.until("Welcome")
        return c

    def test_broadcastNickRoomsAndPrivateMessages(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        service = self.startChat("--listen", "tcp:0", "--listen", f"unix:{tmp}/chat.sock", endpoints=2)
        port = service.tcpPort()
        a, b = self.client(port), self.client(port)
        c = LineClient(connectUNIX(f"{tmp}/chat.sock"))
        self.addCleanup(c.close)
        c.until("Welcome")
        c.until("joined #lobby")
        a.send("/nick alice\n")
        b.until("is now known as alice")
        c.until("is now known as alice")
        a.send("hello everyone\n")
        self.assertRegex(b.until("hello everyone")[-1], "^" + STAMP + "<alice> hello everyone$")
        self.assertRegex(c.until("hello everyone")[-1], "^" + STAMP + "<alice> hello everyone$")
        c.send("/nick carol\n/join #side\n")
        a.until("carol left #lobby")
        a.send("/msg carol psst\n/rooms\n")
        self.assertRegex(c.until("psst")[-1], "^" + STAMP + r"\*alice\* psst$")
        rooms = a.until("#side")
        self.assertIn("***   #side (1)", rooms)
        a.send("/frob\n")
        self.assertTrue(a.until("!!!")[-1].startswith("!!! unknown command"))
        b.send("/quit see you\n")
        self.assertIn(b"Goodbye", b.closedAfter())
        a.until("left #lobby (see you)")

    def test_historySurvivesARestart(self):
        db = str(Path(self.mktemp()))
        service = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", db, "--flood-rate", "0")
        self.addCleanup(service.stop)
        service.start()
        a = self.client(service.tcpPort())
        a.send("/join #keep\n")
        a.until("joined #keep")
        for i in range(30):
            a.send(f"remember {i}\n")
        a.send("/history 1\n")
        a.until("end of history")
        a.close()
        self.assertIn(service.stop(), (0, -15))  # twist re-raises the signal it stopped on
        self.assertIn("Main loop terminated", service.log)
        service = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", db)
        self.addCleanup(service.stop)
        service.start()
        b = self.client(service.tcpPort())
        b.send("/join #keep\n")
        replay = b.until("end of history of #keep")
        said = [line for line in replay if "remember" in line]
        self.assertEqual(len(said), 20)
        self.assertTrue(said[-1].endswith("<guest1> remember 29"), said[-1])
        # The newcomer is not taken for the guest1 of the replay.
        self.assertIn("*** guest2 joined #keep", replay)

    def test_loginWithMemoryAndHashedFiles(self):
        passwd = Path(self.mktemp())
        subprocess.run(
            [PYTHON, "-m", "sockproto.cli", "passwd", str(passwd), "bob"],
            input="hunter2\n", text=True, check=True, capture_output=True,
        )
        service = self.startChat("--listen", "tcp:0", "--auth", "memory:alice:secret", "--auth", f"hashed:{passwd}")
        a = LineClient.tcp(service.tcpPort())
        self.addCleanup(a.close)
        self.assertIn("log in", a.line())
        a.send("hello\n")
        self.assertTrue(a.line().startswith("!!! please log in"))
        a.send("/login alice nope\n")
        self.assertEqual(a.line(), "!!! login failed: wrong name or password")
        a.send("/login alice secret\n")
        self.assertEqual(a.line(), "*** logged in as alice")
        b = LineClient.tcp(service.tcpPort())
        self.addCleanup(b.close)
        b.line()
        b.send("/login bob hunter2\n")
        self.assertEqual(b.line(), "*** logged in as bob")
        b.send("hi alice\n")
        self.assertRegex(a.until("hi alice")[-1], "<bob> hi alice$")
        self.assertNotIn("secret", service.log)
        self.assertNotIn("hunter2", service.log)

    def test_aHostBackingOffIsRefusedOnEveryFaceUnchecked(self):
        """A failed login on one connection holds the host back on a new one and in the web chat."""
        from tests.wsclient import WebSocketClient

        service = self.startChat("--listen", "tcp:0", "--web", "tcp:0", "--auth", "memory:alice:secret", endpoints=2)
        guesser = LineClient.tcp(service.port("chat"))
        self.addCleanup(guesser.close)
        guesser.line()
        guesser.send("/login alice guess1\n")
        self.assertEqual(guesser.line(), "!!! login failed: wrong name or password")  # a second later
        guesser.send("/login alice guess2\n")
        guesser.close()  # not waiting for the answer: the host now waits 2 s
        service.waitFor(lambda: service.log.count("chat failed login for 'alice'") == 2)
        web = WebSocketClient(service.port("chat-web"))
        self.addCleanup(web.close)
        web.send({"type": "login", "name": "alice", "password": "secret"})
        error = web.until(lambda event: event["type"] == "error")[-1]
        self.assertRegex(error["text"], r"^login refused: too many failed logins from your address: try again in \d s$")
        again = LineClient.tcp(service.port("chat"))
        self.addCleanup(again.close)
        again.line()
        again.send("/login alice secret\n")
        self.assertTrue(again.line().startswith("!!! login refused: too many failed logins"))
        self.assertEqual(service.log.count("chat login by alice"), 0)

    def test_protections(self):
        """Over real TCP: long lines, escape sequences and floods are handled without bothering others."""
        service = self.startChat("--listen", "tcp:0", "--max-line-length", "100", "--flood-burst", "5",
                                 "--flood-rate", "1")
        a, b = self.client(service.tcpPort()), self.client(service.tcpPort())
        a.send("z" * 500 + "\n\x1b[31mred\x1b[0m \u202eevil\n")
        self.assertIn("!!! line too long", a.until("!!!")[-1])
        self.assertTrue(b.until("red")[-1].endswith("<guest1> red evil"))
        a.send("".join(f"spam {i}\n" for i in range(20)))
        self.assertIn("!!! rate limited", a.until("!!!")[-1])
        b.until("spam 0")
        b.sock.settimeout(1.5)
        with self.assertRaises(socket.timeout):
            b.until("spam 9")  # 5 lines of burst, 1 a second after it: never 10 at once
        # A second after the paste, the sender hears how many of its lines were dropped.
        self.assertRegex(a.until("not sent")[-1], r"^!!! rate limited: 1[0-7] lines not sent$")

    def test_clientThatStopsReadingIsDroppedOthersKeepChatting(self):
        service = self.startChat("--listen", "tcp:0", "--flood-rate", "0", "--max-output-buffer", "200000",
                                 "--max-line-length", "2000")
        port = service.tcpPort()
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        self.addCleanup(slow.close)
        talker, listener = self.client(port), self.client(port)
        line = "x" * 1000
        start = time.monotonic()
        notices = []
        for batch in range(100):  # 10 MB: more than the kernel buffers can hide
            talker.send("".join(f"{line} {batch}-{i}\n" for i in range(100)))
            got = listener.until(f"{batch}-99")
            self.assertEqual(len([g for g in got if line in g]), 100)
            notices += [g for g in got if g.startswith("***")]
        self.assertLess(time.monotonic() - start, 60)
        service.waitForLog("dropping slow consumer")
        self.assertIn("*** guest1 left #lobby (too slow)", notices)

    def test_shutdownTellsClients(self):
        service = self.startChat("--listen", "tcp:0")
        a = self.client(service.tcpPort())
        service.stop()
        self.assertIn(b"the server is going down", a.closedAfter())

    def test_badOptions(self):
        """Bad chat options exit non-zero with a usage error, never a traceback."""
        import re

        from tests.support import runService

        for args, why in [
            (["--flood-rate", "-1"], "-1 is not a number of lines a second, 0 or more"),
            (["--max-line-length", "x"], "expected a positive whole number"),
            (["--auth", "nosuch:thing"], "Auth plugin not recognized"),
            (["--listen", "udp:5000"], "this service does not speak UDP"),
            (["--max-clients", "0"], "0 is not a positive whole number"),
        ]:
            result = runService("sockproto-chat", *args)
            self.assertNotEqual(result.returncode, 0, args)
            self.assertNotIn("Traceback", result.stderr, args)
            self.assertTrue(re.search(r"(?i)error", result.stderr), result.stderr)
            self.assertIn(f"sockproto-chat: error: bad {args[0]}", result.stderr)
            self.assertIn(why, result.stderr)
