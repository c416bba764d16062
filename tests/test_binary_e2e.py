"""SPB/1 and the crud twin end to end: real processes, real sockets, SIGKILL."""

import json
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import PYTHON, ROOT, LineClient, connectUNIX, recvExactly, startService

READ, CREATE, UPDATE, DELETE, LIST, STATS, PING = 0x11, 0x10, 0x12, 0x13, 0x14, 0x20, 0x01


def key(k):
    return struct.pack(">H", len(k)) + k


def request(op, rid, payload=b""):
    return struct.pack(">IBI", len(payload) + 5, op, rid) + payload


def reply(sock):
    (length,) = struct.unpack(">I", recvExactly(sock, 4))
    body = recvExactly(sock, length)
    return body[0], struct.unpack(">I", body[1:5])[0], body[5:]


class BinaryEndToEndTests(unittest.TestCase):
    def start(self, *args, endpoints=1, plugin="sockproto-binary"):
        return startService(self, plugin, *args, endpoints=endpoints)

    def test_tcpAndUnix(self):
        """One process serves TCP and UNIX at once; STATS counts both connections."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        service = self.start("--listen", "tcp:0", "--listen", f"unix:{tmp}/kv.sock", "--db", str(tmp / "kv.db"),
                             endpoints=2)
        with socket.create_connection(("127.0.0.1", service.tcpPort())) as tcp, connectUNIX(f"{tmp}/kv.sock") as unix:
            tcp.sendall(request(CREATE, 1, key(b"k") + b"\x00binary\xff") + request(PING, 2))
            self.assertEqual(reply(tcp), (0x90, 1, b""))
            self.assertEqual(reply(tcp), (0x81, 2, b""))
            unix.sendall(request(READ, 9, key(b"k")) + request(LIST, 10, key(b"")) + request(STATS, 11))
            self.assertEqual(reply(unix), (0x91, 9, b"\x00binary\xff"))
            self.assertEqual(reply(unix), (0x94, 10, b"\x00\x00\x00\x01" + key(b"k")))
            op, rid, payload = reply(unix)
            stats = json.loads(payload)
            self.assertEqual((op, rid, stats["keys"], stats["connections"]), (0xA0, 11, 1, 2))

    def acknowledgedWrites(self, port, count, connections=10):
        """Write ``count`` keys over several connections, pipelined; return when all are acknowledged."""
        def worker(index):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                mine = range(index, count, connections)
                sock.sendall(b"".join(request(CREATE, i, key(b"key%05d" % i) + b"value%d" % i) for i in mine))
                for i in mine:
                    self.assertEqual(reply(sock)[:2], (0x90, i))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def test_acknowledgedWritesSurviveSIGKILLAndAreGroupCommitted(self):
        for fsync in ("normal", "always"):
            db = Path(self.mktemp())
            service = self.start("--listen", "tcp:0", "--db", str(db), "--fsync", fsync)
            self.acknowledgedWrites(service.tcpPort(), 2000)
            with socket.create_connection(("127.0.0.1", service.tcpPort())) as sock:
                sock.sendall(request(STATS, 1))
                store = json.loads(reply(sock)[2])["store"]
            self.assertEqual(store["committed_writes"], 2000)
            self.assertLess(store["commits"], 2000 / 4, store)  # grouped, not one transaction per write
            service.stop(signal.SIGKILL)
            again = self.start("--listen", "tcp:0", "--db", str(db))
            with socket.create_connection(("127.0.0.1", again.tcpPort())) as sock:
                sock.sendall(b"".join(request(READ, i, key(b"key%05d" % i)) for i in range(2000)))
                for i in range(2000):
                    self.assertEqual(reply(sock), (0x91, i, b"value%d" % i))
            again.stop()

    def test_foreignProtocolsAreCutQuickly(self):
        service = self.start("--listen", "tcp:0", "--db", ":memory:")
        tlsHello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", tlsHello):
            with socket.create_connection(("127.0.0.1", service.tcpPort()), timeout=5) as sock:
                sock.sendall(junk)
                op, rid, payload = reply(sock)
                self.assertEqual((op, rid, struct.unpack(">H", payload[:2])[0]), (0xFF, 0, 5))
                self.assertEqual(sock.recv(10), b"")

    def test_crudTwinSharesTheDatabaseWithBinary(self):
        db = str(Path(self.mktemp()))
        crud = self.start("--listen", "tcp:0", "--db", db, plugin="sockproto-crud")
        binary = self.start("--listen", "tcp:0", "--db", db)
        client = LineClient.tcp(crud.tcpPort())
        self.addCleanup(client.close)
        self.assertTrue(client.line().startswith("OK"))
        client.send("create shared written by crud\nread shared\n")
        self.assertEqual([client.line(), client.line()], ["OK", "OK written by crud"])
        deadline = time.monotonic() + 5
        with socket.create_connection(("127.0.0.1", binary.tcpPort())) as sock:
            while True:
                sock.sendall(request(READ, 1, key(b"shared")))
                op, _, payload = reply(sock)
                if op == 0x91 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual((op, payload), (0x91, b"written by crud"))
            sock.sendall(request(UPDATE, 2, key(b"shared") + b"by binary"))
            self.assertEqual(reply(sock)[0], 0x92)
        deadline = time.monotonic() + 5
        while True:
            client.send("read shared\n")
            line = client.line()
            if line == "OK by binary" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(line, "OK by binary")

    def test_kvCommand(self):
        """'sockproto kv' does every command and exits with the documented statuses."""
        service = self.start("--listen", "tcp:0", "--db", ":memory:")
        endpoint = f"tcp:127.0.0.1:{service.tcpPort()}"

        def kv(*args, stdin=""):
            return subprocess.run([PYTHON, "-m", "sockproto.cli", "kv", endpoint, *args], input=stdin.encode(),
                                  capture_output=True, timeout=60, cwd=ROOT)

        self.assertEqual(kv("create", "a", "1").returncode, 0)
        self.assertEqual(kv("create", "a", "1").returncode, 1)
        self.assertEqual(kv("update", "a", stdin="from stdin").returncode, 0)
        result = kv("read", "a")
        self.assertEqual((result.returncode, result.stdout), (0, b"from stdin"))
        self.assertEqual(kv("read", "missing").returncode, 1)
        self.assertEqual(kv("list").stdout, b"a\n")
        self.assertEqual(kv("frobnicate").returncode, 2)
        refused = subprocess.run([PYTHON, "-m", "sockproto.cli", "kv", "tcp:127.0.0.1:1", "ping"], capture_output=True,
                                 timeout=60, cwd=ROOT)
        self.assertEqual(refused.returncode, 3)
        self.assertIn(b"cannot connect", refused.stderr)


class NeverReadingClientTests(unittest.TestCase):
    """A client that asks for big replies and never reads them cannot grow the server's memory."""

    def hog(self, sock, requestBytes, seconds=2.0):
        """Send requests for as long as the server takes them (it stops reading: the send blocks)."""
        sock.settimeout(0.2)
        sent, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sent += sock.send(requestBytes)
            except (TimeoutError, BlockingIOError):
                continue
        return sent

    def test_binaryAndCrud(self):
        db = str(Path(self.mktemp()))
        binary = startService(self, "sockproto-binary", "--listen", "tcp:0", "--db", db)
        crud = startService(self, "sockproto-crud", "--listen", "tcp:0", "--db", db + "-crud")
        value = b"x" * ((1 << 20) - 64)  # about the largest a default frame holds
        with socket.create_connection(("127.0.0.1", binary.tcpPort())) as sock:
            sock.sendall(request(CREATE, 1, key(b"big") + value))
            self.assertEqual(reply(sock)[:2], (0x90, 1))
        client = LineClient.tcp(crud.tcpPort())
        self.addCleanup(client.close)
        client.line()
        client.send(b"create big " + value[: 60000] + b"\n")
        self.assertEqual(client.line(), "OK")
        before = {"binary": binary.rss(), "crud": crud.rss()}
        reads = b"".join(request(READ, i, key(b"big")) for i in range(1000))
        with socket.create_connection(("127.0.0.1", binary.tcpPort())) as hogB, \
                socket.create_connection(("127.0.0.1", crud.tcpPort())) as hogC:
            # 10 KB of requests ask for 1 GB of replies.
            self.assertGreater(self.hog(hogB, reads), len(reads))
            self.hog(hogC, b"read big\n" * 1000)
            for name, service in (("binary", binary), ("crud", crud)):
                grown = service.rss() - before[name]
                self.assertLess(grown, 64 << 20, f"{name} grew by {grown} bytes")
            # Everyone else is served as usual meanwhile.
            with socket.create_connection(("127.0.0.1", binary.tcpPort()), timeout=5) as other:
                other.sendall(request(PING, 7) + request(READ, 8, key(b"big")))
                self.assertEqual(reply(other)[:2], (0x81, 7))
                self.assertEqual(reply(other), (0x91, 8, value))
            client.send("read big\n")
            self.assertEqual(client.line(), "OK " + "x" * 60000)
            # And the hog itself still gets correct replies, in order, once it reads.
            hogB.settimeout(10)
            for i in range(20):
                self.assertEqual(reply(hogB), (0x91, i, value))


class BigRepliesOverTLSTests(unittest.TestCase):
    def test_pipelinedBigReadsArriveWholeAndInOrder(self):
        """Over TLS the pause and resume pass through Twisted's TLS layer; nothing is lost or reordered."""
        from tests.support import makeCerts, tlsClient

        certs = makeCerts(Path(self.mktemp()))
        service = startService(
            self, "sockproto-binary", "--db", ":memory:", "--max-output-buffer", "200000",
            "--listen", f"ssl:0:interface=127.0.0.1:privateKey={certs}/server.key:certKey={certs}/server.crt",
        )
        value = bytes(range(256)) * 2000
        with tlsClient(service.tcpPort(), certs) as sock:
            sock.sendall(request(CREATE, 0, key(b"big") + value))
            self.assertEqual(reply(sock)[:2], (0x90, 0))
            sock.sendall(b"".join(request(READ, i, key(b"big")) for i in range(1, 101)))
            time.sleep(0.5)  # the server fills its buffer and waits for us
            for i in range(1, 101):
                self.assertEqual(reply(sock), (0x91, i, value))


class NeverReadingTLSClientTests(unittest.TestCase):
    def test_memoryStaysBoundedOverTLS(self):
        """Over TLS too (where Twisted asks its producer to pause only once), a client that never reads is bounded."""
        from tests.support import makeCerts, tlsClient

        certs = makeCerts(Path(self.mktemp()))
        service = startService(
            self, "sockproto-binary", "--db", ":memory:",
            "--listen", f"ssl:0:interface=127.0.0.1:privateKey={certs}/server.key:certKey={certs}/server.crt",
        )
        value = b"x" * ((1 << 20) - 64)
        with tlsClient(service.tcpPort(), certs) as sock:
            sock.sendall(request(CREATE, 1, key(b"big") + value))
            self.assertEqual(reply(sock)[:2], (0x90, 1))
        before = service.rss()
        with tlsClient(service.tcpPort(), certs) as hog:
            hog.settimeout(0.2)
            reads = b"".join(request(READ, i, key(b"big")) for i in range(1000))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    hog.send(reads)
                except (TimeoutError, ssl.SSLWantWriteError):
                    continue
            grown = service.rss() - before
            self.assertLess(grown, 64 << 20, f"grew by {grown} bytes")
            hog.settimeout(10)
            for i in range(5):
                self.assertEqual(reply(hog), (0x91, i, value))
