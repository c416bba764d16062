"""The echo service end to end: the real plugin in a subprocess, real sockets."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial import unittest

from tests.support import (
    PYTHON,
    ROOT,
    ServiceProcess,
    connect,
    connectUNIX,
    makeCerts,
    recvAll,
    recvExactly,
    recvUntil,
    runService,
    startService,
    tlsClient,
)


class EchoEndToEndTests(unittest.TestCase):
    def startEcho(self, *args, endpoints=1, twist=()):
        return startService(self, "sockproto-echo", *args, endpoints=endpoints, twist=twist)

    def test_tcpUnixTlsAndUdpAtOnce(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        certs = makeCerts(tmp)
        key, cert = certs / "server.key", certs / "server.crt"
        path = tmp / "echo.sock"
        service = self.startEcho(
            "--listen", "tcp:0:interface=127.0.0.1",
            "--listen", f"unix:{path}",
            "--listen", f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
            "--listen", "udp:0",
            "--log-level", "debug",
            endpoints=4,
            twist=("--log-level", "debug"),  # twist filters by level too
        )
        self.assertTrue(service.addresses[0].startswith("tcp:127.0.0.1:"))
        self.assertEqual(service.addresses[1], f"unix:{path}")
        self.assertTrue(service.addresses[2].startswith("ssl:127.0.0.1:"))
        self.assertTrue(service.addresses[3].startswith("udp:127.0.0.1:"))
        payload = bytes(range(256)) * 64

        with connect(service.tcpPort(0)) as sock:
            sock.sendall(payload)
            self.assertEqual(recvExactly(sock, len(payload)), payload)

        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with connectUNIX(str(path)) as sock:
            sock.sendall(payload)
            self.assertEqual(recvExactly(sock, len(payload)), payload)

        with tlsClient(service.tcpPort(2), certs) as sock:
            self.assertIn(sock.version(), ("TLSv1.2", "TLSv1.3"))
            sock.sendall(payload)
            self.assertEqual(recvExactly(sock, len(payload)), payload)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(b"\x00datagram\xff", ("127.0.0.1", service.tcpPort(3)))
            data, _ = udp.recvfrom(100)
            self.assertEqual(data, b"\x00datagram\xff")
        service.waitForLog("echo connection opened from tcp:127.0.0.1:")  # --log-level debug
        service.waitForLog("echo connection opened from unix:")
        self.assertNotIn("EchoFactory starting on", service.log, "Twisted's port chatter is hidden")

    def test_lineAndUpperModes(self):
        service = self.startEcho("--listen", "tcp:0:interface=127.0.0.1", "--mode", "line", "--max-line-length", "100")
        with connect(service.tcpPort()) as sock:
            self.assertEqual(recvUntil(sock, b"\n"), b"Welcome to echo server!\n")
            sock.sendall(b"hello\r\n" + b"x" * 500 + b"\nstill here\n")
            got = recvUntil(sock, b"still here\n")
            self.assertEqual(got, b"Echo: hello\nERROR line too long: discarded\nEcho: still here\n")
        service.stop()
        service = self.startEcho("--listen", "tcp:0:interface=127.0.0.1", "--mode", "upper")
        with connect(service.tcpPort()) as sock:
            sock.sendall(b"shout\n")
            self.assertEqual(recvUntil(sock, b"\n"), b"SHOUT\n")

    def test_halfCloseGetsEveryReply(self):
        service = self.startEcho("--listen", "tcp:0:interface=127.0.0.1")
        payload = os.urandom(3 * 1024 * 1024)
        with connect(service.tcpPort(), timeout=30) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(recvAll(sock), payload)

    def test_peerThatNeverReadsDoesNotGrowTheServer(self):
        service = self.startEcho("--listen", "tcp:0:interface=127.0.0.1")
        before = service.rss()
        chunk = b"z" * 65536
        with connect(service.tcpPort()) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 3
            # Push until the server stops reading and every buffer is full.
            while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    time.sleep(0.05)
            growth = service.rss() - before
            # Without back-pressure the server would hold most of what was sent.
            self.assertLess(sent, 64 * 1024 * 1024, "the server kept reading from a peer that does not read")
            self.assertLess(growth, 32 * 1024 * 1024)
            # And nothing was lost: reading now gets everything back.
            sock.setblocking(True)
            sock.settimeout(30)
            received = 0
            while received < sent:
                data = sock.recv(1 << 20)
                self.assertTrue(data)
                self.assertEqual(data.strip(b"z"), b"")
                received += len(data)
            self.assertEqual(received, sent)

    def test_refusalPastMaxConnections(self):
        service = self.startEcho("--listen", "tcp:0:interface=127.0.0.1", "--max-connections", "1")
        with connect(service.tcpPort()) as first:
            first.sendall(b"ping")
            self.assertEqual(recvExactly(first, 4), b"ping")
            with connect(service.tcpPort()) as second:
                self.assertEqual(recvAll(second), b"ERROR server busy: too many connections, try again later\n")
            first.sendall(b"still")
            self.assertEqual(recvExactly(first, 5), b"still")

    def test_udpAnswersAreRateLimitedPerAddress(self):
        """--udp-rate: one answer, then silence; the drops are logged once and counted in the metrics."""
        service = self.startEcho("--listen", "udp:0:interface=127.0.0.1", "--udp-rate", "0.01", "--metrics",
                                 "tcp:0:interface=127.0.0.1", endpoints=2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            for number in range(5):
                udp.sendto(b"d%d" % number, ("127.0.0.1", service.port("echo", "udp")))
            self.assertEqual(udp.recvfrom(100)[0], b"d0")
            service.waitFor(lambda: b"{kind=\"udp_rate_limited\",service=\"echo\"} 4.0" in self.metrics(service),
                            what="4 drops counted")
            udp.settimeout(0.1)
            self.assertRaises(TimeoutError, udp.recvfrom, 100)
        self.assertEqual(service.log.count("not answering a UDP datagram from 127.0.0.1:"), 1)

    def metrics(self, service):
        with connect(service.port("metrics")) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            return recvAll(sock)

    def test_badUdpOptionsAreUsageErrors(self):
        result = runService("sockproto-echo", "--udp-rate", "-1")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("bad --udp-rate '-1': -1 is not a number of answers a second, 0 or more",
                      result.stderr + result.stdout)
        result = runService("sockproto-echo", "--udp-rate", "lots")
        self.assertIn("bad --udp-rate 'lots': expected a number of answers a second", result.stderr + result.stdout)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_aStormOfHangupsIsLoggedOnceASecond(self):
        service = self.startEcho()
        for _ in range(100):
            os.kill(service.pid, signal.SIGHUP)
            time.sleep(0.002)
        service.waitForLog("SIGHUP: nothing to reload")
        time.sleep(1.5)  # the gathered reload comes a second after the first
        self.assertLessEqual(service.log.count("nothing to reload"), 3, service.log)
        self.assertIsNone(service.proc.poll())

    def test_atTheDescriptorLimitTheSurplusIsRefusedWithALine(self):
        """
        With RLIMIT_NOFILE at 64, clients past what the process can hold get
        the refusal line (accepted on the reserve descriptor, as nginx does),
        and the log has one summary line a second, not three per client.
        """
        echo = ServiceProcess("sockproto-echo", "--mode", "line", "--listen", "tcp:0:interface=127.0.0.1")
        lower = (
            "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)); os.execv(sys.argv[1], sys.argv[1:])"
        )
        echo.argv = [sys.executable, "-c", lower, *echo.argv]
        self.addCleanup(echo.stop)
        echo.start()
        clients, answers = [], []
        try:
            for _ in range(90):
                client = connect(echo.port("echo"))
                clients.append(client)
                answers.append(recvUntil(client, b"\n"))
            refusal = b"ERROR server busy: too many connections, try again later\n"
            served = answers.count(b"Welcome to echo server!\n")
            self.assertGreater(served, 20)
            self.assertEqual(answers, [b"Welcome to echo server!\n"] * served + [refusal] * (90 - served))
            for client in clients[served:]:
                self.assertEqual(recvAll(client), b"", "closed after the refusal")
            echo.waitForLog("at the file-descriptor limit")
        finally:
            for client in clients:
                client.close()
        with connect(echo.port("echo")) as again:
            self.assertEqual(recvUntil(again, b"\n"), b"Welcome to echo server!\n", "served again once there is room")
        self.assertLessEqual(echo.log.count("at the file-descriptor limit"), 3, echo.log)
        self.assertNotIn("EMFILE recovery", echo.log)
        self.assertNotIn("Could not accept", echo.log)
        self.assertNotIn("Traceback", echo.log)

    def test_badListenIsAUsageError(self):
        result = runService("sockproto-echo", "--listen", "tcp:99999:interfase=x")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("tcp:99999:interfase=x", result.stderr + result.stdout)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_aUsageErrorIsTheLastThingSaid(self):
        """Not above 30 to 90 lines of usage, where it scrolls away: the error, then how to get help."""
        result = runService("sockproto-echo", "--max-connections", "0")
        self.assertEqual(result.returncode, 64)
        lines = (result.stdout + result.stderr).strip().splitlines()
        self.assertEqual(lines, [
            "sockproto-echo: error: bad --max-connections '0': 0 is not a positive whole number",
            "(python -m twisted sockproto-echo --help lists the options)",
        ])
        suite = runService("sockproto", "--config", "/no/such/file.toml")
        self.assertEqual(suite.returncode, 64)
        self.assertIn("/no/such/file.toml", (suite.stdout + suite.stderr).strip().splitlines()[-2])

    def test_portInUseExitsNonZeroNamingTheEndpoint(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            tmp = Path(self.mktemp())
            tmp.mkdir()
            result = runService(
                "sockproto-echo",
                "--listen", f"unix:{tmp}/first.sock",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
            )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1", result.stderr)
        self.assertIn("Address already in use", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_twistdFindsThePlugin(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        twistd = str(Path(PYTHON).parent / "twistd")
        proc = subprocess.run(
            [twistd, "--help"], capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp,
        )
        self.assertIn("sockproto-echo", proc.stdout)


class SlowlorisTests(unittest.TestCase):
    def test_aLineSentByteByByteIsCutAtTheReadTimeout(self):
        """A real client trickling one line a byte at a time is closed after --read-timeout; a normal one is not."""
        from tests.support import startService

        service = startService(self, "sockproto-echo", "--mode", "line", "--read-timeout", "1",
                               "--listen", "tcp:0")
        with socket.create_connection(("127.0.0.1", service.tcpPort()), timeout=10) as slow, \
                socket.create_connection(("127.0.0.1", service.tcpPort()), timeout=10) as normal:
            slow.recv(100), normal.recv(100)  # the greetings
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 5:
                try:
                    slow.sendall(b"x")
                except OSError:
                    closed = True
                    break
                slow.settimeout(0.3)
                try:
                    if slow.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except OSError:  # reset: the server aborted it
                    closed = True
                    break
            self.assertTrue(closed, "the trickling client was not cut off")
            self.assertLess(time.monotonic() - started, 3)
            normal.sendall(b"still here\n")
            self.assertEqual(normal.recv(100), b"Echo: still here\n")
        service.waitForLog("did not finish a line or frame in 1.0 s")
