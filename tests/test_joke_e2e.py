"""The joke service end to end over TCP and a UNIX socket."""

import json
from pathlib import Path

from twisted.trial import unittest

from tests.support import ServiceProcess, connect, connectUNIX, recvAll, recvUntil, runService


class JokeEndToEndTests(unittest.TestCase):
    def test_dialogOverTcpAndUnix(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        book = tmp / "book.json"
        book.write_text(json.dumps({"jokes": [{"setup": "Tank", "punchline": "You're welcome!"}]}))
        path = tmp / "joke.sock"
        service = ServiceProcess(
            "sockproto-joke", "--listen", "tcp:0", "--listen", f"unix:{path}", "--jokes", str(book)
        )
        self.addCleanup(service.stop)
        service.start(endpoints=2)
        for sock in (connect(service.tcpPort(0)), connectUNIX(str(path))):
            with sock:
                self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
                sock.sendall(b"whos there\r\n")
                self.assertEqual(recvUntil(sock, b">> "), b"Tank\r\n>> ")
                sock.sendall(b"tank?\n")
                self.assertEqual(recvUntil(sock, b">> "), b'Please type "Tank who?".\r\n>> ')
                sock.sendall(b"Tank who?\n")
                self.assertEqual(recvAll(sock), b"You're welcome!\r\n")

    def test_builtinBookAndHalfClose(self):
        service = ServiceProcess("sockproto-joke", "--listen", "tcp:0", "--random-seed", "1")
        self.addCleanup(service.stop)
        service.start()
        with connect(service.tcpPort()) as sock:
            self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
            sock.sendall(b"Who's there?\n")
            setup = recvUntil(sock, b">> ")[: -len(b"\r\n>> ")]
            sock.sendall(setup + b" who?\n")
            sock.shutdown(1)
            punchline = recvAll(sock)
            self.assertTrue(punchline.endswith(b"\r\n") and len(punchline) > 4, punchline)

    def test_badBookStopsStartup(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        book = tmp / "bad.toml"
        book.write_text('[[jokes]]\nsetup = "Boo"\n')
        result = runService("sockproto-joke", "--jokes", str(book))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{book}: joke 1: missing 'punchline'", result.stderr)

    def test_udpIsRefused(self):
        result = runService("sockproto-joke", "--listen", "udp:6789")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("does not speak UDP", result.stderr)
