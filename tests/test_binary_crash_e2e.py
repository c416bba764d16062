"""kill -9 at random moments under a write load: every restart serves every acknowledged write."""

import random
import shutil
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import ServiceProcess, fillDisk, smallDisk

CREATE, READ, UPDATE = 0x10, 0x11, 0x12
_HEADER = struct.Struct(">IBI")


def request(op, requestId, key, value=b""):
    payload = struct.pack(">H", len(key)) + key + value
    return _HEADER.pack(len(payload) + 5, op, requestId) + payload


class Writer(threading.Thread):
    """
    One connection writing its own keys, pipelined ``window`` requests at a
    time, until the server goes away.  Values carry a sequence number, so
    after a crash each key must hold its last acknowledged value or one
    sent after it (committed, but killed before the acknowledgement left).
    """

    def __init__(self, port, prefix, keys=600, window=32):
        super().__init__(daemon=True)
        self.port, self.window = port, window
        self.keys = [b"%s-%02d" % (prefix, i) for i in range(keys)]
        self.acked = {}  # key -> last acknowledged sequence number
        self.sent = {}  # key -> last sent sequence number
        self.error = None

    def run(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                self.loop(sock)
        except (OSError, EOFError):
            pass  # the kill
        except Exception as e:  # pragma: no cover - reported by the test
            self.error = e

    def loop(self, sock):
        buffer = b""
        sequence = 0
        while True:
            batch = []
            for _ in range(self.window):
                key = self.keys[sequence % len(self.keys)]
                op = UPDATE if key in self.sent else CREATE
                self.sent[key] = sequence
                batch.append((key, sequence))
                sock.sendall(request(op, sequence, key, b"%d" % sequence))
                sequence += 1
            for key, number in batch:
                while len(buffer) < 4 or len(buffer) < 4 + struct.unpack_from(">I", buffer)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError
                    buffer += chunk
                length = struct.unpack_from(">I", buffer)[0]
                body, buffer = buffer[4 : 4 + length], buffer[4 + length :]
                op, requestId = struct.unpack_from(">BI", body)
                if (op & 0x7F, requestId) not in ((CREATE, number), (UPDATE, number)) or op == 0xFF:
                    raise AssertionError(f"unexpected reply {body!r} to request {number}")
                self.acked[key] = number


class KillDuringWritesTests(unittest.TestCase):
    rounds = 4

    def startServer(self, db, fsync):
        service = ServiceProcess("sockproto-binary", "--listen", "tcp:0", "--db", str(db), "--fsync", fsync)
        self.addCleanup(service.stop, signal.SIGKILL)
        return service.start(timeout=60)

    def killDuringStartup(self, db, fsync, rng):
        """A start killed before it listens: while it opens, folds or checkpoints the database."""
        service = ServiceProcess("sockproto-binary", "--listen", "tcp:0", "--db", str(db), "--fsync", fsync)
        service.start(endpoints=0)
        time.sleep(rng.uniform(0.05, 0.6))
        service.stop(signal.SIGKILL)

    def verify(self, port, writers):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            keys = [(key, writer) for writer in writers for key in writer.sent]
            sock.sendall(b"".join(request(READ, i, key) for i, (key, _) in enumerate(keys)))
            buffer = b""
            for key, writer in keys:
                while len(buffer) < 4 or len(buffer) < 4 + struct.unpack_from(">I", buffer)[0]:
                    chunk = sock.recv(65536)
                    self.assertTrue(chunk, "the restarted server closed the connection")
                    buffer += chunk
                length = struct.unpack_from(">I", buffer)[0]
                body, buffer = buffer[4 : 4 + length], buffer[4 + length :]
                acked = writer.acked.get(key)
                if body[0] == 0xFF:
                    self.assertIsNone(acked, f"{key!r}: acknowledged as {acked}, now missing")
                    continue
                self.assertEqual(body[0], 0x91)
                value = int(body[5:])
                low = -1 if acked is None else acked
                self.assertTrue(low <= value <= writer.sent[key], f"{key!r}: {value}, acknowledged {acked}")

    def crashLoop(self, fsync, powerLoss=False):
        rng = random.Random()
        db = Path(self.mktemp()).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        writers = []
        for round in range(self.rounds):
            service = self.startServer(db, fsync)
            fresh = [Writer(service.tcpPort(), b"r%dc%d" % (round, n)) for n in range(8)]
            for writer in fresh:
                writer.start()
            # Before, during or after the first fold (a second after the first write).
            time.sleep(rng.uniform(0.3, 1.5))
            service.stop(signal.SIGKILL)
            if powerLoss:
                # What a power loss leaves: only what was synced.  The kill
                # stands in for it; the copy has no -shm, as after a reboot.
                image = db.with_name(db.name + f".image{round}")
                for suffix in ("", "-wal"):
                    if Path(str(db) + suffix).exists():
                        shutil.copyfile(str(db) + suffix, str(image) + suffix)
                db = image
            for writer in fresh:
                writer.join(30)
                self.assertIsNone(writer.error)
            self.assertTrue(any(writer.acked for writer in fresh), "the load was acknowledged")
            writers += fresh
            self.killDuringStartup(db, fsync, rng)
            again = self.startServer(db, fsync)
            self.verify(again.tcpPort(), writers)
            again.stop()

    def test_fsyncNormal(self):
        """--fsync normal: every acknowledged write survives kill -9, also during startup."""
        self.crashLoop("normal")

    def test_fsyncAlways(self):
        """--fsync always: the same for the files as a power loss leaves them."""
        self.crashLoop("always", powerLoss=True)


class FullDiskTests(unittest.TestCase):
    """The server whose disk filled, killed and started again on it (a real 4 MB tmpfs; root only)."""

    def exchange(self, sock, requests):
        """Send ``requests`` at once; their replies as (op, request id, payload)."""
        sock.sendall(b"".join(requests))
        replies, buffer = [], b""
        while len(replies) < len(requests):
            while len(buffer) < 4 or len(buffer) < 4 + struct.unpack_from(">I", buffer)[0]:
                chunk = sock.recv(65536)
                self.assertTrue(chunk, "the server closed the connection")
                buffer += chunk
            length = struct.unpack_from(">I", buffer)[0]
            body, buffer = buffer[4 : 4 + length], buffer[4 + length :]
            replies.append((body[0], struct.unpack_from(">I", body, 1)[0], body[5:]))
        return replies

    def test_aFullDiskRefusesWritesAndTheServerStartsOnIt(self):
        disk = smallDisk(self, "4m")
        db = disk / "kv.sqlite3"
        service = ServiceProcess("sockproto-binary", "--listen", "tcp:0", "--db", str(db))
        self.addCleanup(service.stop, signal.SIGKILL)
        service.start(timeout=60)
        acked, refused = {}, []
        with socket.create_connection(("127.0.0.1", service.tcpPort()), timeout=30) as sock:
            for window in range(1000):
                keys = [b"k%d-%d" % (window, i) for i in range(32)]
                values = [random.randbytes(800) for _ in keys]
                replies = self.exchange(sock, [request(CREATE, i, key, value) for i, (key, value)
                                               in enumerate(zip(keys, values, strict=True))])
                for (op, _, payload), key, value in zip(replies, keys, values, strict=True):
                    if op == 0xFF:
                        refused.append((struct.unpack_from(">H", payload)[0], payload[2:].decode()))
                    else:
                        acked[key] = value
                if refused:
                    break
        self.assertGreater(len(acked), 1000)
        code, message = refused[-1]
        self.assertEqual(code, 7)  # SERVER_ERROR
        self.assertIn("disk is full", message)
        service.waitForLog("is full")
        self.assertEqual(service.log.count("kv store: the disk holding"), 1, service.log)  # said once
        self.assertNotIn("Traceback", service.log)
        service.stop(signal.SIGKILL)
        fillDisk(disk)  # whatever room the kill left

        # It starts on the full disk (it did not: the start-up fold needed room), serves every
        # acknowledged write, and refuses writes with the reason.
        again = ServiceProcess("sockproto-binary", "--listen", "tcp:0", "--db", str(db))
        self.addCleanup(again.stop, signal.SIGKILL)
        again.start(timeout=60)
        with socket.create_connection(("127.0.0.1", again.tcpPort()), timeout=30) as sock:
            keys = list(acked)
            replies = self.exchange(sock, [request(READ, i, key) for i, key in enumerate(keys)])
            self.assertEqual({key: payload for key, (_, _, payload) in zip(keys, replies, strict=True)}, acked)
            [(op, _, payload)] = self.exchange(sock, [request(CREATE, 0, b"new", b"v")])
            self.assertEqual(op, 0xFF)
            self.assertIn("disk is full", payload[2:].decode())
        self.assertNotIn("Traceback", again.log)
