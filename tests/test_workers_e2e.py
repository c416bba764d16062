"""``--workers N``: one parent binds, N worker processes serve, the parent keeps them running."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from twisted.trial import unittest

from tests.redisserver import RedisServer
from tests.support import LineClient, ServiceProcess, connectUNIX, makeCerts, recvExactly, runService, tlsClient
from tests.test_binary_e2e import CREATE, READ, key, reply, request

_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def workerPids(service: ServiceProcess) -> dict[int, int]:
    """The pid of each worker, the latest start of each."""
    return {int(n): int(pid) for n, pid in _STARTED.findall(service.log)}


def servedBy(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds."""
    return sum(
        1 for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


class WorkerTests(unittest.TestCase):
    def start(self, plugin: str, *args: str, endpoints: int = 1, workers: int = 2) -> ServiceProcess:
        service = ServiceProcess(plugin, *args, "--workers", str(workers))
        self.addCleanup(service.stop)
        service.start(endpoints)
        service.waitFor(lambda: len(workerPids(service)) == workers, 20, "the workers")
        service.waitFor(lambda: service.log.count(" ready") >= workers, 20, "the workers to be ready")
        return service

    def test_everyEndpointTypeServedByAllWorkers(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="sp-workers-"))  # a UNIX socket path must be short
        self.addCleanup(shutil.rmtree, tmp, True)
        service = self.start(
            "sockproto-echo", "--listen", "tcp:0", "--listen", f"unix:{tmp}/echo.sock", "--listen", "udp:0",
            "--metrics", "tcp:0", endpoints=4,
        )
        port = service.port("echo")
        # Whichever worker accepts first gets a connection (and Twisted accepts
        # a burst at once): open rounds of them until both have served.
        connections: list[socket.socket] = []
        for _ in range(20):
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                self.addCleanup(sock.close)
                connections.append(sock)
            for i, sock in enumerate(connections[-10:]):
                sock.sendall(b"ping %d" % i)
                self.assertEqual(recvExactly(sock, len(b"ping %d" % i)), b"ping %d" % i)
            counts = {n: servedBy(pid, port) for n, pid in workerPids(service).items()}
            if all(count > 0 for count in counts.values()):
                break
            time.sleep(0.05)
        self.assertEqual(sum(counts.values()), len(connections), counts)
        self.assertTrue(all(count > 0 for count in counts.values()), f"a worker served nothing: {counts}")
        with connectUNIX(f"{tmp}/echo.sock") as unix:
            unix.sendall(b"over unix")
            self.assertEqual(recvExactly(unix, 9), b"over unix")
        udpPort = int(service.address("echo", "udp").rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"datagram", ("127.0.0.1", udpPort))
            self.assertEqual(udp.recv(100), b"datagram")
        self.assertEqual(os.stat(f"{tmp}/echo.sock").st_mode & 0o777, 0o600)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{service.port('metrics')}/metrics", timeout=10).read()
        text = metrics.decode()
        self.assertIn(f'sockproto_connections_total{{service="echo",transport="tcp"}} {len(connections)}.0', text)
        self.assertIn('sockproto_worker_up{worker="1"} 1', text)
        self.assertIn('sockproto_worker_up{worker="2"} 1', text)

    def test_aKilledWorkerIsReplacedAndSIGTERMDrainsAll(self) -> None:
        service = self.start("sockproto-echo", "--listen", "tcp:0")
        port = service.port("echo")
        first = workerPids(service)
        os.kill(first[1], signal.SIGKILL)
        service.waitForLog("worker 1 ended (killed by signal 9)")
        service.waitFor(lambda: workerPids(service)[1] != first[1], 20, "worker 1 to be started again")
        service.waitFor(lambda: service.log.count(" ready") >= 3, 20, "worker 1 to be ready again")
        for i in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"x%d" % i)
                self.assertEqual(recvExactly(sock, len(b"x%d" % i)), b"x%d" % i)
        # SIGHUP reaches every worker.
        os.kill(service.pid, signal.SIGHUP)
        service.waitFor(lambda: service.log.count("SIGHUP: nothing to reload") == 2, 10, "both workers' reload")
        pids = list(workerPids(service).values())
        self.assertIn(service.stop(), (0, -signal.SIGTERM))
        for pid in pids:
            self.assertFalse(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        self.assertIn("worker 2 stopped", service.log)

    def test_chatWorkersAreOneChatThroughTheCluster(self) -> None:
        redis = RedisServer()
        self.addCleanup(redis.cleanup)
        redis.start()
        service = self.start("sockproto-chat", "--listen", "tcp:0", "--history", ":memory:", "--cluster", redis.url)
        service.waitFor(lambda: service.log.count("joined the chat servers") == 2, 20, "both workers joined")
        clients = [LineClient.tcp(service.port("chat"), timeout=20) for _ in range(8)]
        for client in clients:
            self.addCleanup(client.close)
            client.until("joined #lobby")
        clients[0].send("/who\n")
        self.assertRegex(clients[0].until(" in #lobby: ")[-1], r"^\*\*\* 8 in #lobby")
        clients[0].send("hello every worker\n")
        for client in clients[1:]:
            client.until("hello every worker")

    def test_keyValueWorkersShareRedis(self) -> None:
        redis = RedisServer()
        self.addCleanup(redis.cleanup)
        redis.start()
        service = self.start("sockproto-binary", "--listen", "tcp:0", "--db", redis.url)
        port = service.port("binary")
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        for i, sock in enumerate(socks):
            self.addCleanup(sock.close)
            sock.sendall(request(CREATE, i, key(b"k%d" % i) + b"v%d" % i))
            self.assertEqual(reply(sock)[:2], (0x90, i))
        for i, sock in enumerate(socks):  # each key read on another connection, likely another worker
            other = (i + 1) % len(socks)
            sock.sendall(request(READ, 100 + i, key(b"k%d" % other)))
            self.assertEqual(reply(sock), (0x91, 100 + i, b"v%d" % other))

    def test_tlsAndTheSuiteWithAConfigFile(self) -> None:
        """TLS endpoints are served by the workers; twistd -n sockproto --config takes workers = N."""
        tmp = Path(tempfile.mkdtemp(prefix="sp-workers-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        certs = makeCerts(tmp / "certs")
        config = tmp / "sockproto.toml"
        config.write_text(
            "workers = 2\n\n[echo]\n"
            f'listen = ["tcp:0", "ssl:0:privateKey={certs}/server.key:certKey={certs}/server.crt"]\n'
            '\n[joke]\nlisten = ["tcp:0"]\n'
        )
        service = ServiceProcess("sockproto", "--config", str(config))
        self.addCleanup(service.stop)
        service.start(3)
        service.waitFor(lambda: service.log.count(" ready") >= 2, 20, "the workers to be ready")
        for _ in range(6):
            with tlsClient(service.port("echo", "ssl"), certs) as sock:
                sock.sendall(b"secret")
                self.assertEqual(recvExactly(sock, 6), b"secret")
        with socket.create_connection(("127.0.0.1", service.port("joke")), timeout=10) as sock:
            self.assertEqual(recvExactly(sock, 14), b"Knock knock!\r\n")
        self.assertIn(service.stop(), (0, -signal.SIGTERM))

    def test_optionsThatCannotWorkAcrossProcessesAreRefused(self) -> None:
        for plugin, args, message in [
            ("sockproto-chat", ("--workers", "2"), "--workers above 1 needs --cluster"),
            ("sockproto-binary", ("--workers", "2"), "--workers above 1 needs --db redis://"),
            ("sockproto-crud", ("--workers", "3", "--db", "x.db"), "--workers above 1 needs --db redis://"),
            ("sockproto-echo", ("--workers", "0"), "is not a number of workers"),
            ("sockproto-echo", ("--workers", "many"), "is not a number of workers"),
            ("sockproto", ("--workers", "2"), "[chat]: --workers above 1 needs --cluster"),
        ]:
            result = runService(plugin, *args)
            output = result.stdout + result.stderr
            self.assertNotEqual(result.returncode, 0, (plugin, args))
            self.assertIn(message, output, (plugin, args))
            self.assertNotIn("Traceback", output)


