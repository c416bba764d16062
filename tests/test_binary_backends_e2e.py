"""The same acceptance tests for both stores, SQLite and Redis, through the real binary and crud processes."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

from twisted.trial import unittest

from tests.redisserver import RedisServer
from tests.support import LineClient, ServiceProcess, runService
from tests.test_binary_e2e import CREATE, DELETE, LIST, PING, READ, STATS, UPDATE, key, reply, request

ECHO, ERROR = 0x02, 0xFF
BAD_REQUEST, NOT_FOUND, EXISTS, SERVER_ERROR = 1, 3, 4, 7


def keyList(keys: list[bytes]) -> bytes:
    return struct.pack(">I", len(keys)) + b"".join(key(k) for k in keys)


def code(payload: bytes) -> int:
    return struct.unpack(">H", payload[:2])[0]


class AcceptanceMixin:
    """Tests every store must pass; a subclass says which ``--db`` to use."""

    def db(self) -> str:
        raise NotImplementedError

    def serve(self, plugin: str = "sockproto-binary", *extra: str) -> ServiceProcess:
        service = ServiceProcess(plugin, "--listen", "tcp:0", "--db", self.db(), *extra)
        self.addCleanup(service.stop)
        return service.start()

    def connect(self, service: ServiceProcess) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", service.tcpPort()), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def test_everyOpPipelinedInOrder(self) -> None:
        sock = self.connect(self.serve())
        sock.sendall(
            request(PING, 1) + request(ECHO, 2, b"\x00\xffecho") + request(CREATE, 3, key(b"k1") + b"v1")
            + request(READ, 4, key(b"k1")) + request(UPDATE, 5, key(b"k1")) + request(READ, 6, key(b"k1"))
            + request(CREATE, 7, key(b"k2") + b"v2") + request(LIST, 8, key(b"")) + request(DELETE, 9, key(b"k1"))
            + request(LIST, 10, key(b"k")) + request(STATS, 11)
        )
        replies = [reply(sock) for _ in range(11)]
        self.assertEqual([rid for _, rid, _ in replies], list(range(1, 12)))
        self.assertEqual(
            [(op, payload) for op, _, payload in replies[:10]],
            [(0x81, b""), (0x82, b"\x00\xffecho"), (0x90, b""), (0x91, b"v1"), (0x92, b""), (0x91, b""),
             (0x90, b""), (0x94, keyList([b"k1", b"k2"])), (0x93, b""), (0x94, keyList([b"k2"]))],
        )
        stats = json.loads(replies[10][2])
        self.assertEqual((replies[10][0], stats["keys"]), (0xA0, 1))

    def test_errorCodes(self) -> None:
        sock = self.connect(self.serve())
        sock.sendall(
            request(READ, 1, key(b"none")) + request(UPDATE, 2, key(b"none") + b"x") + request(DELETE, 3, key(b"none"))
            + request(CREATE, 4, key(b"a") + b"1") + request(CREATE, 5, key(b"a") + b"2") + request(READ, 6, b"\x00")
            + request(READ, 7, key(b"a"))
        )
        replies = [reply(sock) for _ in range(7)]
        errors = [(rid, code(payload)) for op, rid, payload in replies if op == ERROR]
        self.assertEqual(
            errors, [(1, NOT_FOUND), (2, NOT_FOUND), (3, NOT_FOUND), (5, EXISTS), (6, BAD_REQUEST)]
        )
        self.assertEqual(replies[-1], (0x91, 7, b"1"))

    def test_listIsInByteOrderWithBinaryKeys(self) -> None:
        sock = self.connect(self.serve())
        # UTF-8 keys whose bytes go up to 0xf4 (U+10FFFF), in no order.
        keys = [k.encode() for k in ("p\U0010ffff", "p\x00", "p", "pa", "p\U0010ffffz", "q", "o\U0010ffff", "p\x7f",
                                     "pé", "p😀")]
        sock.sendall(b"".join(request(CREATE, i, key(k) + b"v") for i, k in enumerate(keys)))
        for i in range(len(keys)):
            self.assertEqual(reply(sock)[:2], (0x90, i))
        top = "p\U0010ffff".encode()
        sock.sendall(request(LIST, 100, key(b"p")) + request(LIST, 101, key(top)) + request(LIST, 102, key(b"")))
        self.assertEqual(reply(sock)[2], keyList(sorted(k for k in keys if k.startswith(b"p"))))
        self.assertEqual(reply(sock)[2], keyList([top, top + b"z"]))
        self.assertEqual(reply(sock)[2], keyList(sorted(keys)))

    def test_interleavedConnectionsEachSeeTheirOwnWritesInOrder(self) -> None:
        """Connections pipelining writes and reads of a key each: every read sees its connection's last write."""
        service = self.serve()
        socks = [self.connect(service) for _ in range(4)]
        for n, sock in enumerate(socks):
            sock.sendall(request(CREATE, 0, key(b"own%d" % n) + b"0"))
        for sock in socks:
            self.assertEqual(reply(sock)[0], 0x90)
        rounds = 60
        for n, sock in enumerate(socks):  # each chunk mixes updates, reads and a create refused
            sock.sendall(
                b"".join(
                    request(UPDATE, 2 * i + 1, key(b"own%d" % n) + b"%d" % i)
                    + request(READ, 2 * i + 2, key(b"own%d" % n))
                    for i in range(rounds)
                )
                + request(CREATE, 999, key(b"own%d" % n) + b"again")
            )
        for sock in socks:
            replies = [reply(sock) for _ in range(2 * rounds + 1)]
            self.assertEqual([rid for _, rid, _ in replies], [*range(1, 2 * rounds + 1), 999])
            reads = [payload for op, _, payload in replies[:-1] if op == 0x91]
            self.assertEqual(reads, [b"%d" % i for i in range(rounds)])
            self.assertEqual((replies[-1][0], code(replies[-1][2])), (ERROR, EXISTS))

    def test_crudSession(self) -> None:
        client = LineClient.tcp(self.serve("sockproto-crud").tcpPort())
        self.addCleanup(client.close)
        client.line()
        client.send("create a 1\ncreate a 2\nread a\nupdate a 3\nread a\ncreate b x\nlist\ndelete a\nread a\n")
        got = [client.line() for _ in range(11)]
        self.assertEqual(
            got, ["OK", "ERR exists", "OK 1", "OK", "OK 3", "OK", "OK 2", "a", "b", "OK", "ERR not found"]
        )


class SQLiteAcceptanceTests(AcceptanceMixin, unittest.TestCase):
    def db(self) -> str:
        if not hasattr(self, "_db"):
            self._db = str(Path(self.mktemp()).resolve())
        return self._db


class RedisAcceptanceTests(AcceptanceMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        self.redis.start()

    def db(self) -> str:
        return self.redis.url + "/0"

    def test_twoProcessesShareTheDataAtOnce(self) -> None:
        one, two = self.serve(), self.serve()
        crud = LineClient.tcp(self.serve("sockproto-crud").tcpPort())
        self.addCleanup(crud.close)
        crud.line()
        a, b = self.connect(one), self.connect(two)
        for i in range(200):
            a.sendall(request(CREATE, i, key(b"k%d" % i) + b"from one"))
            self.assertEqual(reply(a)[:2], (0x90, i))
            b.sendall(request(READ, i, key(b"k%d" % i)))  # no waiting: acknowledged means readable everywhere
            self.assertEqual(reply(b), (0x91, i, b"from one"))
        crud.send("update k7 from crud\n")
        self.assertEqual(crud.line(), "OK")
        a.sendall(request(READ, 1, key(b"k7")))
        self.assertEqual(reply(a), (0x91, 1, b"from crud"))
        b.sendall(request(STATS, 2))
        self.assertEqual(json.loads(reply(b)[2])["store"]["backend"], "redis")

    def test_redisStoppedAndBackMidStream(self) -> None:
        service = self.serve()
        sock = self.connect(service)
        sock.sendall(request(CREATE, 1, key(b"before") + b"1"))
        self.assertEqual(reply(sock)[:2], (0x90, 1))
        self.redis.kill()
        service.waitForLog("lost the link to Redis")
        started = time.monotonic()
        sock.sendall(request(CREATE, 2, key(b"during") + b"x") + request(READ, 3, key(b"before")) + request(PING, 4))
        answers = [reply(sock) for _ in range(3)]
        self.assertLess(time.monotonic() - started, 2)  # answered at once, not after a timeout
        self.assertEqual([(op, rid) for op, rid, _ in answers], [(ERROR, 2), (ERROR, 3), (0x81, 4)])
        self.assertEqual([code(p) for op, _, p in answers[:2]], [SERVER_ERROR, SERVER_ERROR])
        self.redis.start()
        deadline = time.monotonic() + 15
        while True:
            sock.sendall(request(CREATE, 5, key(b"after") + b"y"))
            op, rid, payload = reply(sock)
            if op == 0x90 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual((op, rid), (0x90, 5))
        sock.sendall(request(READ, 6, key(b"after")))
        self.assertEqual(reply(sock), (0x91, 6, b"y"))

    def test_startWithoutRedisAndBadOptions(self) -> None:
        url = self.redis.url + "/0"
        self.redis.stop()
        result = runService("sockproto-binary", "--listen", "tcp:0", "--db", url)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"cannot reach Redis at {url}", result.stdout + result.stderr)
        self.assertIn("(--db-wait SECONDS keeps trying)", result.stdout + result.stderr)
        self.assertNotIn("--cluster-wait", result.stdout + result.stderr)
        result = runService("sockproto-crud", "--db", url, "--fsync", "always")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--fsync is for the SQLite store", result.stdout + result.stderr)
        result = runService("sockproto-binary", "--db", "redis://:pw@127.0.0.1:1/x")
        self.assertIn("the database must be a number", result.stdout + result.stderr)
        self.assertNotIn("pw@", result.stdout + result.stderr)


