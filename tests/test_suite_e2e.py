"""``sockproto``: the seed services in one process, as 'make run' starts them."""

import socket
import struct
from pathlib import Path

from twisted.trial import unittest

from tests.support import LineClient, ServiceProcess, recvExactly, recvUntil

DEFAULT_PORTS = (8124, 5000, 6789, 9000)


def busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class SuiteTests(unittest.TestCase):
    def test_seedServicesOnTheirDefaultPorts(self):
        if any(busy(port) for port in DEFAULT_PORTS):
            raise unittest.SkipTest("a default port is in use on this machine")
        var = Path(self.mktemp()).resolve()
        service = ServiceProcess("sockproto", "--var", str(var))
        self.addCleanup(service.stop)
        service.start(endpoints=4)
        self.assertEqual([a.rsplit(":", 1)[1] for a in service.addresses], [str(p) for p in DEFAULT_PORTS])
        self.assertTrue(all(a.startswith("tcp:127.0.0.1:") for a in service.addresses))
        with socket.create_connection(("127.0.0.1", 8124), timeout=10) as sock:
            sock.sendall(b"raw")
            self.assertEqual(recvExactly(sock, 3), b"raw")
        chat = LineClient.tcp(5000)
        self.addCleanup(chat.close)
        self.assertIn("Welcome", chat.line())
        with socket.create_connection(("127.0.0.1", 6789), timeout=10) as sock:
            self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
        with socket.create_connection(("127.0.0.1", 9000), timeout=10) as sock:
            sock.sendall(struct.pack(">IBI", 5, 0x01, 7))
            self.assertEqual(recvExactly(sock, 9), struct.pack(">IBI", 5, 0x81, 7))
        self.assertTrue((var / "chat.sqlite3").exists())
        self.assertTrue((var / "kv.sqlite3").exists())
        self.assertEqual(var.stat().st_mode & 0o777, 0o700)
