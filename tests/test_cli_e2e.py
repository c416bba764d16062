"""The client tools and the proxy, end to end on loopback, with certificates from 'sockproto cert'."""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from tests.support import (
    PYTHON,
    ROOT,
    LineClient,
    ServiceProcess,
    connectUNIX,
    makeCerts,
    recvAll,
    recvExactly,
    recvUntil,
    runService,
    startService,
    tlsClient,
)


def tool(*args, stdin=b"", timeout=60):
    return subprocess.run([PYTHON, "-m", "sockproto.cli", *args], input=stdin, capture_output=True, timeout=timeout,
                          cwd=ROOT)


class ToolTests(unittest.TestCase):
    def setUp(self):
        self.certs = makeCerts(Path(self.mktemp()))
        self.echo = ServiceProcess(
            "sockproto-echo", "--mode", "line", "--listen", "tcp:0",
            "--listen", f"ssl:0:privateKey={self.certs}/server.key:certKey={self.certs}/server.crt",
        )
        self.addCleanup(self.echo.stop)
        self.echo.start(endpoints=2)
        self.plain = f"tcp:127.0.0.1:{self.echo.tcpPort(0)}"
        self.tls = f"tls:localhost:{self.echo.tcpPort(1)}"

    def test_connectPlainAndTLS(self):
        result = tool("connect", self.plain, "--keepalive", stdin=b"one\ntwo\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"Welcome to echo server!\nEcho: one\nEcho: two\n"))
        result = tool("connect", self.tls, "--ca", str(self.certs / "ca.crt"), "--linger", "0.5", stdin=b"secure\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"Welcome to echo server!\nEcho: secure\n"))

    def test_connectFailures(self):
        strangers = makeCerts(Path(self.mktemp()))
        untrusted = tool("connect", self.tls, "--ca", str(strangers / "ca.crt"), stdin=b"x\n")
        self.assertEqual(untrusted.returncode, 3)
        self.assertIn(b"TLS handshake failed", untrusted.stderr)
        wrongName = tool("connect", f"tls:127.0.0.2:{self.echo.tcpPort(1)}", "--ca", str(self.certs / "ca.crt"),
                         stdin=b"x\n")
        self.assertEqual(wrongName.returncode, 3)
        refused = tool("connect", "tcp:127.0.0.1:1", stdin=b"")
        self.assertEqual(refused.returncode, 3)
        self.assertIn(b"connection refused", refused.stderr)
        self.assertEqual(tool("connect", "nosuch:thing").returncode, 2)

    def test_endpointsAsPeopleWriteThem(self):
        """tcp:[::1]:PORT as probe prints it; HOST:PORT without a type gets the string to write instead."""
        with socket.socket(socket.AF_INET6) as server:
            server.bind(("::1", 0))
            server.listen()
            port = server.getsockname()[1]
            probed = tool("probe", f"tcp:[::1]:{port}")
            self.assertEqual(probed.returncode, 0, probed.stderr)
            self.assertIn(f"tcp:[::1]:{port}: reachable".encode(), probed.stdout)
        untyped = tool("connect", f"localhost:{self.echo.tcpPort(0)}")
        self.assertEqual(untyped.returncode, 2)
        self.assertIn(f"write tcp:localhost:{self.echo.tcpPort(0)}".encode(), untyped.stderr)
        probed = tool("probe", f"localhost:{self.echo.tcpPort(0)}")
        self.assertEqual(probed.returncode, 2, probed)  # a usage error, not a target found unreachable
        kv = tool("kv", f"127.0.0.1:{self.echo.tcpPort(0)}", "ping")
        self.assertIn(f"write tcp:127.0.0.1:{self.echo.tcpPort(0)}".encode(), kv.stderr)

    def test_usageErrorsAreShortAndLast(self):
        """The error and where to find help, not the whole usage; a forgotten kv ENDPOINT is named."""
        forgot = tool("kv", "read", "greeting")
        self.assertEqual(forgot.returncode, 2)
        self.assertEqual(forgot.stderr.decode().splitlines(), [
            "sockproto kv: the ENDPOINT comes first: sockproto kv tcp:localhost:9000 read greeting",
            "(sockproto kv --help lists the options)",
        ])
        helpText = tool("kv", "--help").stdout.decode()
        self.assertTrue(helpText.startswith("sockproto kv ENDPOINT "), helpText[:80])

    def test_kvReadEndsTheLineOnATerminal(self):
        """On a terminal the value is followed by a newline, so the prompt starts on its own line."""
        import pty

        store = startService(self, "sockproto-binary", "--listen", "tcp:0", "--db", ":memory:")
        endpoint = f"tcp:127.0.0.1:{store.tcpPort()}"
        self.assertEqual(tool("kv", endpoint, "create", "greeting", "hello").returncode, 0)
        piped = tool("kv", endpoint, "read", "greeting")
        self.assertEqual(piped.stdout, b"hello")  # into a pipe: the value exactly
        controller, terminal = pty.openpty()
        self.addCleanup(os.close, controller)
        with subprocess.Popen([PYTHON, "-m", "sockproto.cli", "kv", endpoint, "read", "greeting"], cwd=ROOT,
                              stdout=terminal, stderr=subprocess.PIPE) as reader:
            os.close(terminal)
            self.assertEqual(reader.wait(60), 0)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 1024)
            except OSError:  # the terminal's other side is closed: all is read
                break
            if not chunk:
                break
            shown += chunk
        self.assertEqual(shown, b"hello\r\n")

    def test_connectWithoutTheCertificateAnMtlsServerDemands(self):
        """Exit 3 and words (TLS 1.3 refuses after the client's handshake is done), not 4 and OpenSSL's tuple."""
        c = self.certs
        mtls = startService(self, "sockproto-echo", "--listen",
                            f"mtls:0:privateKey={c}/server.key:certKey={c}/server.crt:caCerts={c}/ca.crt")
        result = tool("connect", f"tls:localhost:{mtls.tcpPort()}", "--ca", str(c / "ca.crt"), stdin=b"hi\n")
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn(b"the server demands a client certificate", result.stderr)
        self.assertNotIn(b"SSL routines", result.stderr)

    def test_probe(self):
        """probe reports reachability, the TLS version and the certificate's names and issuer, as JSON too."""
        result = tool("probe", "--json", self.tls, self.plain, "--ca", str(self.certs / "ca.crt"))
        self.assertEqual(result.returncode, 0, result.stderr)
        tls, plain = json.loads(result.stdout)
        self.assertTrue(tls["reachable"] and plain["reachable"])
        self.assertIn(tls["tls_version"], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(tls["certificate"]["names"], ["localhost", "127.0.0.1"])
        self.assertIn("sockproto development CA", tls["certificate"]["issuer"])
        self.assertGreater(tls["certificate"]["days_left"], 300)
        self.assertTrue(plain["remote"].endswith(f":{self.echo.tcpPort(0)}"))
        result = tool("probe", self.plain, "tcp:127.0.0.1:1")
        self.assertEqual(result.returncode, 3)
        self.assertIn(b"unreachable: connection refused", result.stdout)

    def test_scan(self):
        """scan finds exactly the ports that listen."""
        listeners = []
        for _ in range(3):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            listeners.append(s)
            self.addCleanup(s.close)
        ports = sorted(s.getsockname()[1] for s in listeners)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        shut = closed.getsockname()[1]
        closed.close()  # bound once, now surely closed
        spec = ",".join(str(p) for p in ports) + f",{shut},1-300"
        result = tool("scan", "127.0.0.1", "--ports", spec, "--concurrency", "20", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        found = json.loads(result.stdout)
        self.assertTrue(set(ports) <= set(found["open"]))
        self.assertNotIn(shut, found["open"])
        self.assertEqual(found["scanned"], len(set(ports) | {shut} | set(range(1, 301))))
        self.assertEqual(tool("scan", "127.0.0.1", "--ports", "0-5").returncode, 2)


class ProxyTests(unittest.TestCase):
    def setUp(self):
        self.certs = makeCerts(Path(self.mktemp()))
        self.echo = ServiceProcess(
            "sockproto-echo", "--listen", "tcp:0",
            "--listen", f"ssl:0:privateKey={self.certs}/server.key:certKey={self.certs}/server.crt",
        )
        self.addCleanup(self.echo.stop)
        self.echo.start(endpoints=2)

    def proxy(self, *args, endpoints=1):
        return startService(self, "sockproto-proxy", *args, endpoints=endpoints)

    def test_unixToTcpAndTlsBothWays(self):
        tmp = Path(self.mktemp())
        tmp.mkdir()
        terminate = self.proxy(
            "--listen", f"unix:{tmp}/p.sock",
            "--listen", f"ssl:0:privateKey={self.certs}/server.key:certKey={self.certs}/server.crt",
            "--connect", f"tcp:127.0.0.1:{self.echo.tcpPort(0)}", endpoints=2,
        )
        with connectUNIX(f"{tmp}/p.sock") as sock:
            sock.sendall(b"via unix")
            self.assertEqual(recvExactly(sock, 8), b"via unix")
            sock.shutdown(socket.SHUT_WR)  # the half-close passes through
            self.assertEqual(recvAll(sock), b"")
        with tlsClient(terminate.tcpPort(1), self.certs) as sock:
            sock.sendall(b"terminated")
            self.assertEqual(recvExactly(sock, 10), b"terminated")
        originate = self.proxy("--listen", "tcp:0", "--connect", f"tls:localhost:{self.echo.tcpPort(1)}",
                               "--ca", str(self.certs / "ca.crt"))
        with socket.create_connection(("127.0.0.1", originate.tcpPort()), timeout=10) as sock:
            sock.sendall(b"originated")
            self.assertEqual(recvExactly(sock, 10), b"originated")
        # As 'printf x | nc -N' does: a half-close right after the data ends the TLS side too,
        # at once (it once waited for the proxy's producer, 40 s and more).
        with socket.create_connection(("127.0.0.1", originate.tcpPort()), timeout=10) as sock:
            sock.sendall(b"x\n")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(recvAll(sock), b"x\n")

    def test_crudOverTLSAnswersEveryHalfClosingClient(self):
        """printf 'create kN v\\n' | nc -N through the proxy to crud over TLS: every OK comes back (--linger)."""
        crud = ServiceProcess("sockproto-crud", "--db", ":memory:",
                              "--listen", f"ssl:0:privateKey={self.certs}/server.key:certKey={self.certs}/server.crt")
        self.addCleanup(crud.stop)
        crud.start()
        proxy = self.proxy("--listen", "tcp:0", "--connect", f"tls:localhost:{crud.tcpPort()}",
                           "--ca", str(self.certs / "ca.crt"))
        clients = []
        for number in range(10):  # all at once: each waits out its own linger
            sock = socket.create_connection(("127.0.0.1", proxy.tcpPort()), timeout=30)
            self.addCleanup(sock.close)
            sock.sendall(f"create k{number} v\n".encode())
            sock.shutdown(socket.SHUT_WR)
            clients.append(sock)
        for number, sock in enumerate(clients):
            lines = recvAll(sock).decode().splitlines()
            self.assertEqual(len(lines), 2, (number, lines))  # the greeting, then the answer
            self.assertTrue(lines[1].startswith("OK"), (number, lines))

    def test_badConnectIsAUsageError(self):
        cases = ([], ["--connect", "bogus:1"], ["--connect", "tls:localhost"],
                 ["--connect", "tls:localhost:1", "--ca", "/no/ca.pem"])
        for args in cases:
            result = runService("sockproto-proxy", "--listen", "tcp:0", *args)
            self.assertNotEqual(result.returncode, 0, args)
            self.assertIn("--connect", result.stderr, args)
            self.assertNotIn("Traceback", result.stderr, args)

    def test_unreachableTargetIsLogged(self):
        proxy = self.proxy("--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1")
        with socket.create_connection(("127.0.0.1", proxy.tcpPort()), timeout=10) as sock:
            sock.sendall(b"x")
            self.assertEqual(recvAll(sock), b"")
        proxy.waitForLog("proxy cannot reach tcp:127.0.0.1:1")

    def test_largeTransferToASlowReader(self):
        received = []
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        self.addCleanup(server.close)

        def slowReader():
            conn, _ = server.accept()
            total = 0
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
                if total < 16 * 1024 * 1024:
                    time.sleep(0.005)  # slow for the first third
            received.append(total)
            conn.close()

        reader = threading.Thread(target=slowReader, daemon=True)
        reader.start()
        proxy = self.proxy("--listen", "tcp:0", "--connect", f"tcp:127.0.0.1:{server.getsockname()[1]}")
        before = proxy.rss()
        size = 48 * 1024 * 1024
        peak = [0]

        def watch():
            while reader.is_alive():
                peak[0] = max(peak[0], proxy.rss() - before)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with socket.create_connection(("127.0.0.1", proxy.tcpPort()), timeout=60) as sock:
            block = b"p" * (1 << 20)
            for _ in range(size // len(block)):
                sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
            reader.join(60)
        self.assertEqual(received, [size])
        self.assertLess(peak[0], 16 * 1024 * 1024, "the proxy buffered instead of slowing the sender")


class HandshakeTimeoutTests(unittest.TestCase):
    def test_aTLSClientThatNeverFinishesIsCut(self):
        from twisted.internet import interfaces

        from sockproto.echo import EchoFactory
        from sockproto.server.connections import HANDSHAKE_TIMEOUT

        clock = Clock()
        proto = EchoFactory(clock, mode="line").buildProtocol(None)
        transport = StringTransport()
        directlyProvides(transport, interfaces.ISSLTransport)
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        proto.makeConnection(transport)
        self.assertIsNone(transport.producer)  # back-pressure waits for the handshake
        clock.advance(HANDSHAKE_TIMEOUT - 1)
        self.assertEqual(aborted, [])
        clock.advance(2)
        self.assertEqual(aborted, [True])

    def test_finishedHandshakeCancelsTheDeadline(self):
        from twisted.internet import interfaces

        from sockproto.echo import EchoFactory

        clock = Clock()
        proto = EchoFactory(clock, mode="line").buildProtocol(None)
        transport = StringTransport()
        directlyProvides(transport, interfaces.ISSLTransport)
        proto.makeConnection(transport)
        proto.handshakeCompleted()
        self.assertIs(transport.producer, transport)
        self.assertEqual(clock.getDelayedCalls(), [])


class ServicesOverTLSTests(unittest.TestCase):
    def test_jokeBinaryAndCrudOverTLS(self):
        certs = makeCerts(Path(self.mktemp()))
        ssl = f"ssl:0:privateKey={certs}/server.key:certKey={certs}/server.crt"
        joke = ServiceProcess("sockproto-joke", "--listen", ssl)
        binary = ServiceProcess("sockproto-binary", "--listen", ssl, "--db", ":memory:")
        crud = ServiceProcess("sockproto-crud", "--listen", ssl, "--db", ":memory:")
        for service in (joke, binary, crud):
            self.addCleanup(service.stop)
            service.start()
        with tlsClient(joke.tcpPort(), certs) as sock:
            self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
        with tlsClient(binary.tcpPort(), certs) as sock:
            sock.sendall(struct.pack(">IBI", 5, 0x01, 42))
            self.assertEqual(recvExactly(sock, 9), struct.pack(">IBI", 5, 0x81, 42))
        client = LineClient(tlsClient(crud.tcpPort(), certs))
        self.addCleanup(client.close)
        self.assertTrue(client.line().startswith("OK"))
        client.send("create k over tls\nread k\n")
        self.assertEqual([client.line(), client.line()], ["OK", "OK over tls"])


# The read system call's number, as /proc/PID/syscall shows it.
_READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(os.uname().machine)


def waitUntilReadingStandardInput(pid, timeout=30.0):
    """Until process ``pid`` is blocked reading its standard input (Linux: /proc/PID/syscall)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/syscall").read_text().split()
        except OSError:
            fields = []
        if _READ_SYSCALL is None:
            time.sleep(2.0)  # another machine: no way to tell, so a generous delay
            return
        if len(fields) > 1 and fields[0] == str(_READ_SYSCALL) and int(fields[1], 16) == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not start reading its standard input in {timeout} s")


class InterruptTests(unittest.TestCase):
    """Ctrl-C (SIGINT) ends every command at once: status 130, no traceback, the line finished."""

    def interrupt(self, *args, after=0.5, readingInput=False, until=None):
        proc = subprocess.Popen([PYTHON, "-m", "sockproto.cli", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        self.addCleanup(proc.kill)
        if readingInput:
            # Not a delay, which a busy machine can outlast: the moment it waits for its input.
            waitUntilReadingStandardInput(proc.pid)
        elif until is not None:
            deadline = time.monotonic() + 30
            while not until() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # past the moment: the reactor has the connection in hand
        else:
            time.sleep(after)
        proc.send_signal(signal.SIGINT)
        # Standard input stays open: its end would be an answer, and the test is of Ctrl-C alone.
        proc.wait(timeout=20)
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 130, err)
        self.assertNotIn(b"Traceback", err)
        self.assertTrue(err.endswith(b"\n"), err)
        return out, err

    def test_scan(self):
        """In its first second too, while thousands of attempts are in flight."""
        for after in (0.4, 0.8):  # not sooner: a Ctrl-C during Python's own start-up prints its traceback
            _, err = self.interrupt("scan", "127.0.0.1", "--ports", "1-65535", "--timeout", "5", after=after)
            self.assertNotIn(b"never awaited", err)

    def test_kvReadingTheValueFromStandardInput(self):
        self.interrupt("kv", "tcp:127.0.0.1:1", "create", "key", readingInput=True)

    def test_passwdAtItsPrompt(self):
        self.interrupt("passwd", str(Path(self.mktemp())), "alice", readingInput=True)

    def test_connect(self):
        """Connected, then Ctrl-C: status 130, and the user's own Ctrl-C is not reported as a lost connection."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            server.settimeout(30)
            accepted = []
            threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
            _, err = self.interrupt("connect", f"tcp:127.0.0.1:{server.getsockname()[1]}",
                                    until=lambda: bool(accepted))
            self.assertNotIn(b"connection lost", err)
            for sock in accepted:
                sock.close()

    def test_connectStoppedBySIGTERM(self):
        """A kill is no lost connection either: status 143, nothing said about the connection."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            server.settimeout(30)
            target = f"tcp:127.0.0.1:{server.getsockname()[1]}"
            proc = subprocess.Popen([PYTHON, "-m", "sockproto.cli", "connect", target],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
            self.addCleanup(proc.kill)
            accepted, _ = server.accept()
            self.addCleanup(accepted.close)
            time.sleep(0.2)  # past the moment: the reactor has the connection in hand
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 143, err)
        self.assertNotIn(b"connection lost", err)

    def test_scanSaysWhatItFoundEvenWhenNothingIsOpen(self):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        result = tool("scan", "127.0.0.1", "--ports", str(port))
        self.assertEqual(result.stdout, b"127.0.0.1: 1 port scanned, 0 open\n")


class ProxyLingerTests(unittest.TestCase):
    """TLS cannot half-close: after a client's half-close the TLS target stays open until quiet for --linger."""

    def relay(self, linger: float = 2.0):
        from twisted.internet import defer, interfaces
        from twisted.internet.address import IPv4Address

        from sockproto.proxy import ProxyFactory
        from sockproto.server.targets import Target

        clock = Clock()
        targetTransport = StringTransport()
        directlyProvides(targetTransport, interfaces.ISSLTransport)
        targets = []

        class TLSEndpoint:
            def connect(self, factory):
                target = factory.buildProtocol(None)
                target.makeConnection(targetTransport)
                targets.append(target)
                return defer.succeed(target)

        factory = ProxyFactory(clock, Target(TLSEndpoint(), "localhost", "tls"), "tls:localhost:1", linger=linger)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        clientTransport = StringTransport(peerAddress=peer)
        client = factory.buildProtocol(peer)
        client.makeConnection(clientTransport)
        return clock, client, clientTransport, targets[0], targetTransport

    def test_theTargetsLastReplyComesBack(self):
        clock, client, clientTransport, target, targetTransport = self.relay(linger=2.0)
        client.dataReceived(b"create k1 v\n")
        client.readConnectionLost()  # nc -N: the request, then a half-close
        self.assertEqual(targetTransport.value(), b"create k1 v\n")
        self.assertFalse(targetTransport.disconnecting)
        clock.advance(1.5)
        target.dataReceived(b"OK\n")  # the answer, a turn (or more) later, after the commit
        self.assertEqual(clientTransport.value(), b"OK\n")
        clock.advance(1.5)  # the answer started the quiet again
        self.assertFalse(targetTransport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(targetTransport.disconnecting)
        self.assertIsNone(targetTransport.producer)  # TLS sends its close once no producer feeds it
        target.connectionLost(None)
        self.assertTrue(clientTransport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_aTargetThatClosesFirstEndsTheLinger(self):
        clock, client, clientTransport, target, targetTransport = self.relay(linger=2.0)
        client.readConnectionLost()
        target.dataReceived(b"bye\n")
        target.connectionLost(None)
        self.assertTrue(clientTransport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noLingerClosesAtOnce(self):
        clock, client, clientTransport, target, targetTransport = self.relay(linger=0)
        client.readConnectionLost()
        self.assertTrue(targetTransport.disconnecting)
