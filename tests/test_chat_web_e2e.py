"""The web chat end to end: the real plugin with --web, WebSocket clients and line clients in one room."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial import unittest

from tests.support import LineClient, ServiceProcess, connect, makeCerts, recvUntil, runService
from tests.wsclient import WebSocketClient, WebSocketRefused


class WebChatOverTLSTests(unittest.TestCase):
    def test_mutualTLSNameIsTheNickname(self) -> None:
        certs = makeCerts(Path(self.mktemp()), clientName="certuser")
        web = f"mtls:0:privateKey={certs}/server.key:certKey={certs}/server.crt:caCerts={certs}/ca.crt"
        chat = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--web", web, "--history", ":memory:")
        self.addCleanup(chat.stop)
        chat.start(2)
        port = chat.port("chat-web", "mtls")
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
        client = WebSocketClient(port, tls=context)
        self.addCleanup(client.close)
        self.assertEqual(client.until(isType("state"))[-1]["nick"], "certuser")
        with urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=10) as page:
            self.assertIn(b"sockproto chat", page.read())


def isType(kind: str, **fields: object):
    return lambda event: event["type"] == kind and all(event.get(k) == v for k, v in fields.items())


class WebChatTests(unittest.TestCase):
    def setUp(self) -> None:
        self.chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", "tcp:0", "--history", ":memory:", "--flood-rate", "0",
            "--max-line-length", "100",
            # Arrivals announced even in the room of 302 below, so member lists follow them
            # (in a room past --announce-joins-up-to they come on request: tests/test_chat_crowd.py).
            "--announce-joins-up-to", "1000",
        )
        self.addCleanup(self.chat.stop)
        self.chat.start(2)
        self.webPort = self.chat.port("chat-web")

    def web(self) -> WebSocketClient:
        client = WebSocketClient(self.webPort)
        self.addCleanup(client.close)
        client.until(isType("state"))
        return client

    def line(self) -> LineClient:
        client = LineClient.tcp(self.chat.port("chat"))
        self.addCleanup(client.close)
        client.until("joined #lobby")
        return client

    def test_pageHeadersAndNothingElse(self) -> None:
        response = urllib.request.urlopen(f"http://127.0.0.1:{self.webPort}/", timeout=10)
        page = response.read().decode()
        self.assertIn('<script src="chat.js" defer></script>', page)
        self.assertNotIn("<script>", page)  # no inline script: the CSP forbids it
        csp = response.headers["Content-Security-Policy"]
        self.assertIn("default-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertEqual(response.headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response.headers["Referrer-Policy"], "no-referrer")
        self.assertIn('<link rel="icon" href="favicon.svg"', page)
        for path, kind in (
            ("/chat.js", "text/javascript"), ("/chat.css", "text/css"), ("/favicon.svg", "image/svg+xml"),
        ):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webPort}{path}", timeout=10) as r:
                self.assertTrue(r.headers["Content-Type"].startswith(kind))
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{self.webPort}/ws", timeout=10)
        self.assertEqual(caught.exception.code, 426)
        for path in ("/index.html", "/static/chat.js", "/../setup.cfg", "/ws/x", "/metrics"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"http://127.0.0.1:{self.webPort}{path}", timeout=10)
            self.assertEqual(caught.exception.code, 404, path)
            self.assertIn("default-src 'self'", caught.exception.headers["Content-Security-Policy"])

    def test_browserAndLineUsersMeet(self) -> None:
        web = self.web()
        line = self.line()
        line.send("/nick liner\n")
        web.until(lambda event: event.get("text", "").endswith("is now known as liner"))
        web.send({"type": "say", "text": "/nick webby"})
        web.until(isType("state", nick="webby", room="#lobby"))
        line.until("is now known as webby")
        self.assertEqual(sorted(web.until(isType("members"))[-1]["nicks"]), ["liner", "webby"])
        web.send({"type": "say", "text": "hello from a browser"})
        self.assertRegex(line.until("hello from a browser")[-1], r"<webby> hello from a browser$")
        line.send("hello from nc\n/me waves\n/msg webby psst\n")
        message = web.until(isType("message"))[-1]
        self.assertEqual((message["nick"], message["text"]), ("liner", "hello from nc"))
        self.assertIsInstance(message["time"], float)
        self.assertEqual(web.until(isType("me"))[-1]["text"], "waves")
        private = web.until(isType("private"))[-1]
        self.assertEqual((private["from"], private["text"]), ("liner", "psst"))
        web.send({"type": "say", "text": "/msg liner back at you"})
        sent = web.until(isType("private"))[-1]
        self.assertEqual((sent["to"], sent["text"]), ("liner", "back at you"))
        self.assertRegex(line.until("back at you")[-1], r"\*webby\* back at you$")
        web.send({"type": "say", "text": "/quit"})
        line.until("webby left #lobby")

    def test_membersAndRoomsComeWithHistoryAndForABigRoom(self) -> None:
        """
        Entering a room with history to replay, the page gets the member and
        room lists too; in a room of hundreds, the member list in pieces.
        """
        talker = self.line()
        talker.send("/nick talker\nsaid before the page loaded\n/history 1\n")
        talker.until("end of history")
        web = WebSocketClient(self.webPort)
        self.addCleanup(web.close)
        seen = web.until(isType("members"))
        self.assertIn("history", [event["type"] for event in seen])
        me = [event for event in seen if event["type"] == "state"][-1]["nick"]
        self.assertEqual(sorted(seen[-1]["nicks"]), sorted(["talker", me]))
        rooms = [e for e in seen if e["type"] == "rooms"] or web.until(isType("rooms"))
        self.assertEqual(rooms[-1]["rooms"], [{"name": "#lobby", "count": 2}])

        crowd = []
        for _ in range(300):
            member = socket.create_connection(("127.0.0.1", self.chat.port("chat")), timeout=10)
            self.addCleanup(member.close)
            crowd.append(member)
        for _ in range(200):  # until the server has let them all in
            talker.send("/who\n")
            if talker.until(" in #lobby: ")[-1].startswith("*** 302 in #lobby: "):
                break
            time.sleep(0.05)
        while True:  # the last refresh after the joins has everyone
            pieces = [web.until(isType("members", part=1))[-1]]
            while pieces[-1]["part"] != pieces[-1]["parts"]:
                pieces.append(web.until(isType("members"))[-1])
            nicks = [nick for event in pieces for nick in event["nicks"]]
            if len(nicks) == 302:
                break
        self.assertEqual(len(set(nicks)), 302)
        self.assertEqual([(event["part"], event["parts"]) for event in pieces], [(1, 2), (2, 2)])
        web.send({"type": "say", "text": "/who"})  # the answer to /who comes in pieces too
        self.assertEqual(web.until(isType("members", part=2))[-1]["parts"], 2)
        self.assertNotIn("Traceback", self.chat.log)
        self.assertNotIn("exceeding payload limit", self.chat.log)

    def test_historyRoomsErrorsAndHostileText(self) -> None:
        line = self.line()
        line.send("/join #dev\n<img src=x onerror=alert(1)>\njavascript:alert(2)\n")
        line.until("joined #dev")
        web = self.web()
        web.send({"type": "say", "text": "/join #dev"})
        seen = web.until(isType("history"))
        history = seen[-1]
        self.assertEqual(history["room"], "#dev")
        hostile = ["<img src=x onerror=alert(1)>", "javascript:alert(2)"]
        self.assertEqual([e["text"] for e in history["entries"]], hostile)
        rooms = [e for e in seen if e["type"] == "rooms"] or web.until(isType("rooms"))
        self.assertIn({"name": "#dev", "count": 2}, rooms[-1]["rooms"])
        # Errors come as events, and the connection stays.
        web.sendText("{not json")
        self.assertIn("not a chat message", web.until(isType("error"))[-1]["text"])
        web.send({"type": "frob"})
        self.assertIn("unknown message type", web.until(isType("error"))[-1]["text"])
        web.sendBinary(b"\x00\x01")
        self.assertIn("not binary", web.until(isType("error"))[-1]["text"])
        web.send({"type": "say", "text": "x" * 150})
        self.assertIn("line too long", web.until(isType("error"))[-1]["text"])
        web.send({"type": "say", "text": "two\nlines"})
        self.assertRegex(line.until("two")[-1], r"<guest\d+> two lines$")
        # What the page's input takes, in any script: the chat's own refusal, the connection stays.
        web.sendText(json.dumps({"type": "say", "text": "中" * 1200}, ensure_ascii=False))
        self.assertEqual(web.until(isType("error"))[-1]["code"], "line-too-long")
        web.sendText('{"type":"say","text":"a\\ud800b"}')  # valid JSON, not valid Unicode
        self.assertIn("not valid Unicode", web.until(isType("error"))[-1]["text"])
        web.send({"type": "say", "text": "still here"})
        line.until("still here")
        # Far over the limit, as no page sends: the WebSocket itself refuses it.
        web.sendText(json.dumps({"type": "say", "text": "y" * 70_000}))
        try:
            while web.event() is not None:
                pass
            self.assertEqual(web.closeCode, 1009)  # "message too big"
        except ConnectionResetError:
            pass  # closed before the rest of the message was read: the close frame may be lost
        line.until("left #dev")
        self.assertNotIn("Traceback", self.chat.log)
        self.assertNotIn("surrogates", self.chat.log)

    def test_aBrowserThatStopsReadingIsDroppedOthersGoOn(self) -> None:
        stuck = WebSocketClient(self.webPort, receiveBuffer=4096)
        self.addCleanup(stuck.close)
        stuck.until(isType("state"))
        talker, listener = self.line(), self.line()
        rssBefore = self.chat.rss()
        line = "z" * 90
        for batch in range(200):  # up to 18 MB of lines: more than the kernel buffers can hide
            talker.send("".join(f"{line} {batch}-{i}\n" for i in range(1000)))
            listener.until(f"{batch}-999")
            if "dropping slow consumer" in self.chat.log:
                break
        self.chat.waitForLog("dropping slow consumer")
        self.assertLess(self.chat.rss() - rssBefore, 64 << 20)
        talker.send("still here\n")
        listener.until("still here")

    def test_aPingFloodThatNeverReadsIsDropped(self) -> None:
        flooder = WebSocketClient(self.webPort, receiveBuffer=4096)
        self.addCleanup(flooder.close)
        flooder.until(isType("state"))
        rssBefore = self.chat.rss()
        ping = flooder._frame(0x9, b"p" * 125)
        try:
            for _ in range(200):  # up to 26 MB of pings, each answered with a pong nobody reads
                flooder.sock.sendall(ping * 1000)
                if "dropping slow consumer" in self.chat.log:
                    break
        except OSError:
            pass  # dropped while sending
        self.chat.waitForLog("dropping slow consumer")
        self.assertLess(self.chat.rss() - rssBefore, 64 << 20)
        self.line().send("still serving\n")

    def test_crossSiteWebSocketsAreRefused(self) -> None:
        for origin in ("http://evil.example", None, f"https://127.0.0.1:{self.webPort}", "http://127.0.0.1"):
            with self.assertRaises(WebSocketRefused) as caught:
                WebSocketClient(self.webPort, origin=origin)
            self.assertEqual(caught.exception.status, 403, origin)
        with self.assertRaises(WebSocketRefused):  # a sandboxed page or a file: autobahn refuses it itself
            WebSocketClient(self.webPort, origin="null")

    def test_aRebindingPageIsMisdirected(self) -> None:
        # DNS rebinding: evil.example now points here, and its page asks for itself.
        evil = f"evil.example:{self.webPort}"
        for request in (
            f"GET / HTTP/1.1\r\nHost: {evil}\r\n\r\n",
            f"GET /ws HTTP/1.1\r\nHost: {evil}\r\nOrigin: http://{evil}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ):
            sock = connect(self.webPort)
            self.addCleanup(sock.close)
            sock.sendall(request.encode())
            self.assertTrue(recvUntil(sock, b"\r\n").startswith(b"HTTP/1.1 421 "), request)
        self.chat.waitForLog("host name it does not serve")
        with urllib.request.urlopen(f"http://localhost:{self.webPort}/", timeout=10) as page:
            self.assertIn(b"sockproto chat", page.read())

    def test_allowedOriginsAndBadOptions(self) -> None:
        chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", "tcp:0", "--history", ":memory:",
            "--web-origin", "https://chat.example.org", "--web-host", "chat.example.net",
        )
        self.addCleanup(chat.stop)
        chat.start(2)
        port = chat.port("chat-web")
        client = WebSocketClient(port, origin="https://chat.example.org")
        self.addCleanup(client.close)
        client.until(isType("state"))
        with self.assertRaises(WebSocketRefused):
            WebSocketClient(port)  # its own origin is no longer in the list
        for host, status in (("chat.example.net", b"200"), ("chat.example.org", b"200"), ("example.net", b"421")):
            sock = connect(port)
            self.addCleanup(sock.close)
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            self.assertEqual(recvUntil(sock, b"\r\n").split(b" ")[1], status, host)
        for args, message in [
            (("--web", "frob:1"), "--web"),
            (("--web-origin", "chat.example.org"), "expected SCHEME://HOST[:PORT]"),
            (("--web-host", "http://chat.example.org"), "bad --web-host"),
        ]:
            result = runService("sockproto-chat", *args)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(message, result.stdout + result.stderr)
            self.assertNotIn("Traceback", result.stdout + result.stderr)



class WebChatSlowAndDeepTests(unittest.TestCase):
    """--read-timeout on HTTP requests and WebSocket messages; JSON nested past the parser's depth."""

    def test_slowSendersAreCutOffDeepJSONIsAnError(self) -> None:
        chat = ServiceProcess(
            "sockproto-chat", "--listen", "tcp:0", "--web", "tcp:0", "--history", ":memory:", "--read-timeout", "1",
        )
        self.addCleanup(chat.stop)
        chat.start(2)
        port = chat.port("chat-web")
        web = WebSocketClient(port)
        self.addCleanup(web.close)
        web.until(isType("state"))
        web.sendText("[" * 3000)  # an uncaught RecursionError closed the WebSocket
        self.assertIn("not a chat message", web.until(isType("error"))[-1]["text"])
        web.send({"type": "say", "text": "/nick deep"})
        web.until(isType("state", nick="deep"))
        # An upgrade request trickled a byte at a time, and a message begun and
        # never finished while its sender answers pings: both cut off.
        trickler = connect(port)
        self.addCleanup(trickler.close)
        slow = WebSocketClient(port)
        self.addCleanup(slow.close)
        slow.until(isType("state"))
        slow.sock.sendall(slow._frame(0x1, b'{"type": "say", ', fin=False))
        request = f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode() + b"X: " + b"a" * 1000
        closed = set()
        for index in range(200):  # up to 20 s; the deadline is 1 s
            for name, sock, data in (("http", trickler, request[index : index + 1]),
                                     ("ws", slow.sock, slow._frame(0xA, b"pong"))):
                if name in closed:
                    continue
                try:
                    sock.sendall(data)
                except OSError:
                    closed.add(name)
            if len(closed) == 2:
                break
            time.sleep(0.1)
        self.assertEqual(closed, {"http", "ws"})
        chat.waitForLog("(--read-timeout")
        web.send({"type": "say", "text": "/nick still-here"})
        web.until(isType("state", nick="still-here"))
