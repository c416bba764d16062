"""``sockproto``: the seed services in one process, as 'make run' starts them."""

import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from twisted.trial import unittest

from sockproto.chat import passwords
from tests.support import (
    ROOT,
    LineClient,
    ServiceProcess,
    connect,
    connectUNIX,
    freePort,
    makeCerts,
    recvAll,
    recvExactly,
    recvUntil,
    runService,
    startService,
    tlsClient,
)

DEFAULT_PORTS = (8124, 5000, 8000, 6667, 6789, 9000, 9001)  # 8000: the chat's web page, 6667: its IRC face


def busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class SuiteTests(unittest.TestCase):
    def test_makeRunLogsTextEvenIntoAFile(self):
        """make run and make local log lines for people, not twist's JSON records, when not on a terminal."""
        import subprocess

        for target in ("run", "local"):
            recipe = subprocess.run(["make", "-s", "-n", target], cwd=ROOT, capture_output=True, text=True,
                                    timeout=60, env=dict(os.environ, MAKEFLAGS="")).stdout
            command = [line for line in recipe.splitlines() if "-m twisted" in line]
            self.assertEqual(len(command), 1, recipe)
            self.assertIn("-m twisted --log-format text sockproto", command[0])

    def test_seedServicesOnTheirDefaultPorts(self):
        if any(busy(port) for port in DEFAULT_PORTS):
            raise unittest.SkipTest("a default port is in use on this machine")
        var = Path(self.mktemp()).resolve()
        service = ServiceProcess("sockproto", "--var", str(var))
        self.addCleanup(service.stop)
        service.start(endpoints=len(DEFAULT_PORTS))
        self.assertEqual([a.rsplit(":", 1)[1] for a in service.addresses], [str(p) for p in DEFAULT_PORTS])
        self.assertTrue(all(a.startswith("tcp:127.0.0.1:") for a in service.addresses))
        with socket.create_connection(("127.0.0.1", 8124), timeout=10) as sock:
            sock.sendall(b"raw")
            self.assertEqual(recvExactly(sock, 3), b"raw")
        chat = LineClient.tcp(5000)
        self.addCleanup(chat.close)
        self.assertIn("Welcome", chat.line())
        with urllib.request.urlopen("http://127.0.0.1:8000/", timeout=10) as page:
            self.assertIn(b"sockproto chat", page.read())
        with socket.create_connection(("127.0.0.1", 6789), timeout=10) as sock:
            self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
        with socket.create_connection(("127.0.0.1", 9000), timeout=10) as sock:
            sock.sendall(struct.pack(">IBI", 5, 0x01, 7))
            self.assertEqual(recvExactly(sock, 9), struct.pack(">IBI", 5, 0x81, 7))
            sock.sendall(spb(0x10, 8, key(b"seed") + b"from binary"))
            self.assertEqual(recvExactly(sock, 9), struct.pack(">IBI", 5, 0x90, 8))
        crud = LineClient.tcp(9001)  # the same store: binary's write is there at once
        self.addCleanup(crud.close)
        crud.line()
        crud.send("read seed\n")
        self.assertEqual(crud.line(), "OK from binary")
        self.assertTrue((var / "chat.sqlite3").exists())
        self.assertTrue((var / "kv.sqlite3").exists())
        self.assertEqual(var.stat().st_mode & 0o777, 0o700)


def spb(op, rid, payload=b""):
    return struct.pack(">IBI", len(payload) + 5, op, rid) + payload


def key(name):
    return struct.pack(">H", len(name)) + name


def readFrame(sock):
    length, op, rid = struct.unpack(">IBI", recvExactly(sock, 9))
    return op, rid, recvExactly(sock, length - 5)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric(text, line):
    """The value of one sample, e.g. 'sockproto_connections_total{service="echo",transport="tcp"}'."""
    for sample in text.splitlines():
        if sample.startswith(line + " "):
            return float(sample.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in the metrics:\n{text}")


class ConfigEndToEndTests(unittest.TestCase):
    def startSuite(self, config, endpoints, *args):
        path = Path(self.mktemp() + ".toml").resolve()
        path.write_text(config)
        return startService(self, "sockproto", "--config", str(path), *args, endpoints=endpoints)

    def test_everyServiceOverTCPUnixAndTLSInOneProcess(self):
        # Short: a UNIX socket path must fit in 108 bytes.
        tmp = Path(tempfile.mkdtemp(prefix="sp-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        certs = makeCerts(tmp)
        ssl = f"ssl:0:privateKey={certs}/server.key:certKey={certs}/server.crt"
        suite = self.startSuite(
            f'metrics = "tcp:0"\n'
            f'[echo]\nlisten = ["tcp:0", "unix:{tmp}/echo.sock", "{ssl}"]\n'
            f'[chat]\nlisten = ["tcp:0", "{ssl}"]\nhistory = ":memory:"\n'
            f'[joke]\nlisten = ["unix:{tmp}/joke.sock"]\n'
            f'[binary]\nlisten = ["tcp:0", "unix:{tmp}/kv.sock", "{ssl}"]\ndb = "{tmp}/kv.sqlite3"\n'
            f'[crud]\nlisten = ["tcp:0"]\ndb = "{tmp}/kv.sqlite3"\n'
            f'[proxy]\nlisten = ["tcp:0"]\nconnect = "unix:{tmp}/echo.sock"\n',
            endpoints=12,
        )
        # echo over each transport
        with connect(suite.port("echo")) as sock:
            sock.sendall(b"tcp!")
            self.assertEqual(recvExactly(sock, 4), b"tcp!")
        with connectUNIX(suite.address("echo", "unix")) as sock:
            sock.sendall(b"unix")
            self.assertEqual(recvExactly(sock, 4), b"unix")
        self.assertEqual(os.stat(suite.address("echo", "unix")).st_mode & 0o777, 0o600)
        with tlsClient(suite.port("echo", "ssl"), certs) as sock:
            sock.sendall(b"tls")
            self.assertEqual(recvExactly(sock, 3), b"tls")
        # chat: one client over TCP, one over TLS
        plain = LineClient.tcp(suite.port("chat"))
        self.addCleanup(plain.close)
        plain.until("Welcome")
        secure = LineClient(tlsClient(suite.port("chat", "ssl"), certs))
        self.addCleanup(secure.close)
        secure.until("Welcome")
        plain.until("joined")
        secure.send("hello over TLS\n")
        self.assertIn("hello over TLS", plain.until("hello over TLS")[-1])
        # joke over UNIX
        with connectUNIX(suite.address("joke", "unix")) as sock:
            self.assertEqual(recvUntil(sock, b">> "), b"Knock knock!\r\n>> ")
            sock.sendall(b"who's there?\n")
            setup = recvUntil(sock, b">> ").split(b"\r\n")[0]
            sock.sendall(setup + b" who?\n")
            self.assertTrue(recvAll(sock))
        # binary over TCP, UNIX and TLS; crud sees the same store
        with connect(suite.port("binary")) as sock:
            sock.sendall(spb(0x10, 1, key(b"shared") + b"value"))
            self.assertEqual(readFrame(sock), (0x90, 1, b""))
        with connectUNIX(suite.address("binary", "unix")) as sock:
            sock.sendall(spb(0x11, 2, key(b"shared")))
            self.assertEqual(readFrame(sock), (0x91, 2, b"value"))
        with tlsClient(suite.port("binary", "ssl"), certs) as sock:
            sock.sendall(spb(0x01, 3))
            self.assertEqual(readFrame(sock), (0x81, 3, b""))
        crud = LineClient.tcp(suite.port("crud"))
        self.addCleanup(crud.close)
        crud.line()
        crud.send("read shared\n")
        self.assertEqual(crud.line(), "OK value")
        # proxy to echo's UNIX socket
        with connect(suite.port("proxy")) as sock:
            sock.sendall(b"through the proxy")
            self.assertEqual(recvExactly(sock, 17), b"through the proxy")
        # metrics agree with what was sent
        text = scrape(suite.port("metrics"))
        for transport, count in (("tcp", 1), ("unix", 2), ("tls", 1)):  # the proxy came in over UNIX
            self.assertEqual(
                metric(text, f'sockproto_connections_total{{service="echo",transport="{transport}"}}'), count
            )
        self.assertEqual(metric(text, 'sockproto_received_bytes_total{service="echo",transport="tcp"}'), 4)
        self.assertEqual(metric(text, 'sockproto_sent_bytes_total{service="echo",transport="unix"}'), 4 + 17)
        self.assertEqual(metric(text, 'sockproto_chat_messages_total{service="chat"}'), 1)
        # plain saw its join, secure's join and the message; secure saw its join
        self.assertEqual(metric(text, 'sockproto_chat_deliveries_total{service="chat"}'), 4)
        self.assertEqual(metric(text, 'sockproto_connections_open{service="chat",transport="tls"}'), 1)
        self.assertEqual(metric(text, 'sockproto_binary_operations_total{op="create",service="binary"}'), 1)
        self.assertEqual(
            metric(text, 'sockproto_binary_request_duration_seconds_count{op="read",service="binary"}'), 1
        )
        self.assertEqual(metric(text, 'sockproto_received_bytes_total{service="proxy",transport="tcp"}'), 17)
        self.assertEqual(metric(text, 'sockproto_store_keys{service="crud"}'), 1)

    def test_badConfigStopsBeforeListening(self):
        path = Path(self.mktemp() + ".toml")
        path.write_text('[echo]\nlisten = ["tcp:0"]\n[chat]\nmax-connections = "many"\n')
        result = runService("sockproto", "--config", str(path))
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertIn(f"{path}: [chat] max-connections: expected a number", output)
        self.assertNotIn("listening on", output)
        self.assertNotIn("Traceback", output)

    def test_sigtermDuringTrafficLosesNoAcknowledgedWrite(self):
        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        db = tmp / "kv.sqlite3"
        suite = self.startSuite(
            f'shutdown-timeout = 5\n[binary]\nlisten = ["tcp:0"]\ndb = "{db}"\n'
            '[chat]\nlisten = ["tcp:0"]\nhistory = ":memory:"\nflood-rate = 0\n',
            2,
        )
        acknowledged = [[] for _ in range(4)]
        started = threading.Barrier(len(acknowledged) + 1)

        def writer(number, acked):
            # Keeps 32 CREATEs in flight until the server closes the connection.
            with connect(suite.port("binary")) as sock:
                sent = 0
                started.wait()
                try:
                    while True:
                        window = b"".join(
                            spb(0x10, sent + i, key(b"w%d-%d" % (number, sent + i)) + b"x" * 64) for i in range(32)
                        )
                        sock.sendall(window)
                        for i in range(32):
                            op, rid, _ = readFrame(sock)
                            self.assertEqual((op, rid), (0x90, sent + i))
                            acked.append(b"w%d-%d" % (number, rid))
                        sent += 32
                except (AssertionError, OSError):
                    return  # the server closed the connection

        threads = [threading.Thread(target=writer, args=(n, a)) for n, a in enumerate(acknowledged)]
        for thread in threads:
            thread.start()
        chatters = [LineClient.tcp(suite.port("chat")) for _ in range(3)]
        for client in chatters:
            self.addCleanup(client.close)
            client.until("Welcome")
        started.wait()
        for round in range(20):
            chatters[round % 3].send(f"message {round}\n")
        time.sleep(0.5)
        began = time.monotonic()
        suite.proc.send_signal(signal.SIGTERM)
        for client in chatters:
            self.assertIn("*** the server is going down", client.until("going down")[-1])
            client.closedAfter()
        for thread in threads:
            thread.join(30)
        status = suite.proc.wait(30)
        self.assertLess(time.monotonic() - began, 5 + 5, "shut down within the timeout")
        self.assertIn(status, (0, -signal.SIGTERM))
        allAcknowledged = {k for acked in acknowledged for k in acked}
        self.assertGreater(len(allAcknowledged), 100, "there was traffic to lose")
        stored = {row[0] for row in sqlite3.connect(db).execute("SELECT key FROM kv")}
        self.assertEqual(allAcknowledged - stored, set(), "acknowledged writes that were not committed")

    def test_sighupReloadsJokesAndPasswords(self):
        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        book = tmp / "jokes.toml"
        book.write_text('[[jokes]]\nsetup = "Boo"\npunchline = "Don\'t cry, it is only a joke!"\n')
        passwd = tmp / "chat.passwd"
        passwords.setPassword(passwd, "alice", "alice-pw")
        suite = self.startSuite(
            f'[joke]\nlisten = ["tcp:0"]\njokes = ["{book}"]\n'
            f'[chat]\nlisten = ["tcp:0"]\nhistory = ":memory:"\nauth = ["hashed:{passwd}"]\n',
            2,
        )
        before = connect(suite.port("joke"))
        self.addCleanup(before.close)
        recvUntil(before, b">> ")
        book.write_text('[[jokes]]\nsetup = "Lettuce"\npunchline = "Let us in!"\n')
        passwords.setPassword(passwd, "bob", "bob-pw")
        os.kill(suite.pid, signal.SIGHUP)
        suite.waitForLog(f"joke reloaded 1 joke from {book}")
        suite.waitForLog(f"chat reloaded password file {passwd}: 2 users")
        # The connection from before the reload goes on with its joke.
        before.sendall(b"Who's there?\n")
        self.assertEqual(recvUntil(before, b">> "), b"Boo\r\n>> ")
        with connect(suite.port("joke")) as after:
            recvUntil(after, b">> ")
            after.sendall(b"Who's there?\n")
            self.assertEqual(recvUntil(after, b">> "), b"Lettuce\r\n>> ")
        chat = LineClient.tcp(suite.port("chat"))
        self.addCleanup(chat.close)
        chat.until("log in")
        chat.send("/login bob bob-pw\n")
        self.assertEqual(chat.line(), "*** logged in as bob")
        self.assertIsNone(suite.proc.poll(), "SIGHUP does not stop the server")

    def test_systemdSocketActivation(self):
        # What systemd does: listening sockets as descriptors 3 and up, with
        # LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the pid of the service, so
        # a launcher sets it and execs).
        tmp = Path(tempfile.mkdtemp(prefix="sp-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(tmp / "kv.sock"))
        unix.listen(16)
        for sock in (tcp, unix):
            self.addCleanup(sock.close)
        config = tmp / "sockproto.toml"
        config.write_text(
            '[echo]\nlisten = ["systemd:domain=INET:name=echo"]\n'
            '[binary]\nlisten = ["systemd:domain=UNIX:name=kv"]\ndb = ":memory:"\n'
        )
        # Copies numbered from 5, so that moving them to 3 and 4 overwrites neither.
        high = [fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 5) for sock in (tcp, unix)]
        for fd in high:
            self.addCleanup(os.close, fd)
        suite = ServiceProcess("sockproto", "--config", str(config), passFds=tuple(high),
                               env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "echo:kv"})
        launcher = (
            f"import os, sys; os.dup2({high[0]}, 3); os.dup2({high[1]}, 4); "
            "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[1], sys.argv[1:])"
        )
        suite.argv = [sys.executable, "-c", launcher, *suite.argv]
        self.addCleanup(suite.stop)
        suite.start(endpoints=2)
        with connect(tcp.getsockname()[1]) as sock:
            sock.sendall(b"activated")
            self.assertEqual(recvExactly(sock, 9), b"activated")
        with connectUNIX(str(tmp / "kv.sock")) as sock:
            sock.sendall(spb(0x01, 5))
            self.assertEqual(readFrame(sock), (0x81, 5, b""))


class SinglePluginOperationsTests(unittest.TestCase):
    def test_metricsAndReloadOnASinglePlugin(self):
        book = Path(self.mktemp() + ".toml").resolve()
        book.write_text('[[jokes]]\nsetup = "Boo"\npunchline = "Don\'t cry!"\n')
        joke = startService(self, "sockproto-joke", "--listen", "tcp:0", "--jokes", str(book),
                            "--metrics", "tcp:0", endpoints=2)
        with connect(joke.port("joke")) as sock:
            recvUntil(sock, b">> ")
            sock.sendall(b"\xff\xfe not text\n")
            recvUntil(sock, b">> ")
        text = scrape(joke.port("metrics"))
        self.assertEqual(metric(text, 'sockproto_connections_total{service="joke",transport="tcp"}'), 1)
        self.assertEqual(metric(text, 'sockproto_received_bytes_total{service="joke",transport="tcp"}'), 12)
        self.assertIn("process_resident_memory_bytes", text)
        book.write_text('[[jokes]]\nsetup = "Tank"\npunchline = "You are welcome!"\n')
        os.kill(joke.pid, signal.SIGHUP)
        joke.waitForLog(f"joke reloaded 1 joke from {book}")
        book.write_text("not toml [")
        os.kill(joke.pid, signal.SIGHUP)
        joke.waitForLog("joke could not reload, keeping what it had")
        with connect(joke.port("joke")) as sock:
            recvUntil(sock, b">> ")
            sock.sendall(b"who's there\n")
            self.assertEqual(recvUntil(sock, b">> "), b"Tank\r\n>> ")

    def test_sigintShutsDownGracefullyToo(self):
        chat = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", ":memory:")
        # A shell's background jobs ignore SIGINT, and an ignored signal stays
        # ignored across exec: give the server the default disposition.
        reset = (
            "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        chat.argv = [sys.executable, "-c", reset, *chat.argv]
        self.addCleanup(chat.stop)
        chat.start()
        client = LineClient.tcp(chat.port("chat"))
        self.addCleanup(client.close)
        client.until("joined")
        chat.proc.send_signal(signal.SIGINT)
        self.assertEqual(client.until("going down")[-1], "*** the server is going down")
        self.assertEqual(client.closedAfter(), b"")
        self.assertIn(chat.proc.wait(15), (0, 1, -signal.SIGINT))


LOCAL_PORTS = {"tcp": (9100, 8124, 8443, 5000, 5001, 8000, 8444, 6789, 9000, 9001, 8125), "udp": (8124,)}


def takenLocalPort() -> str | None:
    """The first of examples/local.toml's ports that something here holds, or None."""
    for kind, ports in LOCAL_PORTS.items():
        for port in ports:
            with socket.socket(type=socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return f"{kind} port {port}"
    return None


class LocalExampleTests(unittest.TestCase):
    def test_theLocalExampleOnItsOwnPorts(self):
        """examples/local.toml exactly as 'make local' runs it, on its real ports: every service starts."""
        taken = takenLocalPort()
        if taken:
            raise unittest.SkipTest(f"{taken} of examples/local.toml is in use on this machine")
        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        makeCerts(tmp / "certs")
        (tmp / "var").mkdir(mode=0o700)
        service = ServiceProcess("sockproto", "--config", str(ROOT / "examples" / "local.toml"), cwd=str(tmp))
        self.addCleanup(service.stop)
        try:
            service.start(endpoints=14)
        except AssertionError:
            if "Address already in use" in service.log:  # taken between the check and the start
                raise unittest.SkipTest("a port of examples/local.toml was taken while the test started") from None
            raise
        with tlsClient(8443, tmp / "certs") as sock:
            sock.sendall(b"tls")
            self.assertEqual(recvExactly(sock, 3), b"tls")
        with tlsClient(8444, tmp / "certs") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost:8444\r\nConnection: close\r\n\r\n")
            self.assertIn(b"<!doctype html>", recvAll(sock))

    def test_theLocalExampleRunsEveryService(self):
        """examples/local.toml, as 'make local' runs it (on ports the test picks), serves every service."""
        import re

        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir()
        makeCerts(tmp / "certs")
        (tmp / "var").mkdir(mode=0o700)
        text = (ROOT / "examples" / "local.toml").read_text()
        echoPort = freePort()
        # Port 0 for every listener (the fixed ports may be in use here); the proxy's target is the echo port.
        text = re.sub(r'"(tcp|ssl|udp):\d+(?=[":])', r'"\1:0', text)
        text = text.replace('listen = [\n    "tcp:0",', f'listen = [\n    "tcp:{echoPort}",', 1)
        text = text.replace('connect = "tcp:127.0.0.1:8124"', f'connect = "tcp:127.0.0.1:{echoPort}"')
        config = tmp / "local.toml"
        config.write_text(text)
        service = ServiceProcess("sockproto", "--config", str(config), cwd=str(tmp))
        self.addCleanup(service.stop)
        service.start(endpoints=12)
        with socket.create_connection(("127.0.0.1", service.port("echo")), timeout=10) as sock:
            sock.sendall(b"raw")
            self.assertEqual(recvExactly(sock, 3), b"raw")
        with tlsClient(service.port("echo", "ssl"), tmp / "certs") as sock:
            sock.sendall(b"tls")
            self.assertEqual(recvExactly(sock, 3), b"tls")
        # The sockets' full paths are too long for AF_UNIX here; the server made them relative too.
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(tmp)
        with connectUNIX("var/echo.sock") as sock:
            sock.sendall(b"unix")
            self.assertEqual(recvExactly(sock, 4), b"unix")
        secure = LineClient(tlsClient(service.port("chat", "ssl"), tmp / "certs"))
        self.addCleanup(secure.close)
        self.assertIn("Welcome", secure.line())
        with socket.create_connection(("127.0.0.1", service.port("proxy")), timeout=10) as sock:
            sock.sendall(b"via the proxy")
            self.assertEqual(recvExactly(sock, 13), b"via the proxy")
        with connectUNIX("var/kv.sock") as sock:
            sock.sendall(spb(0x10, 1, key(b"k") + b"v"))
            self.assertEqual(recvExactly(sock, 9), struct.pack(">IBI", 5, 0x90, 1))
        crud = LineClient.tcp(service.port("crud"))
        self.addCleanup(crud.close)
        crud.line()
        crud.send("read k\n")
        self.assertEqual(crud.line(), "OK v")
        self.assertTrue((tmp / "var" / "kv.sqlite3").exists())
