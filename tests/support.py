"""Helpers for the tests: the real services as subprocesses, certificates, blocking clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

_LISTENING = re.compile(r"(\S+) listening on (\S+)")


class ServiceProcess:
    """
    A sockproto service run the way users run it: ``python -m twisted sockproto-X``.

    Its log is read on a thread; :meth:`start` waits for one ``listening on``
    line per endpoint and records the real addresses.
    """

    def __init__(
        self,
        plugin: str,
        *args: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        passFds: tuple[int, ...] = (),
        twist: tuple[str, ...] = (),
    ) -> None:
        self.argv = [PYTHON, "-m", "twisted", "--log-format", "text", *twist, plugin, *args]
        self.passFds = passFds
        self.cwd = cwd
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.lines: list[str] = []
        self.addresses: list[str] = []
        #: (service, address) of each "listening on" line, in order.
        self.listening: list[tuple[str, str]] = []
        self.proc: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()

    def start(self, endpoints: int = 1, timeout: float = 20.0) -> ServiceProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env=self.env,
            pass_fds=self.passFds,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.waitFor(lambda: len(self.addresses) >= endpoints, timeout, "listening")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.addresses.append(match.group(2))
                    self.listening.append((match.group(1), match.group(2)))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def waitFor(self, condition, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None and not condition()):
                    # Give the reader a moment to catch the last lines.
                    self._changed.wait(0.2)
                    if condition():
                        return
                    raise AssertionError(f"timed out waiting for {what}; log:\n{self.log}")
                self._changed.wait(min(left, 0.2))

    def waitForLog(self, text: str, timeout: float = 10.0) -> None:
        self.waitFor(lambda: text in self.log, timeout, repr(text))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def tcpPort(self, index: int = 0) -> int:
        return int(self.addresses[index].rsplit(":", 1)[1])

    def address(self, service: str, kind: str) -> str:
        """The first address of ``service`` of ``kind`` (``tcp``, ``unix``, ``ssl``...), without the kind."""
        for name, address in self.listening:
            if name == service and address.startswith(kind + ":"):
                return address.split(":", 1)[1]
        raise AssertionError(f"{service} does not listen on {kind}: {self.listening}")

    def port(self, service: str, kind: str = "tcp") -> int:
        return int(self.address(service, kind).rsplit(":", 1)[1])

    def unixPath(self, index: int = 0) -> str:
        return self.addresses[index].split(":", 1)[1]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """Resident memory in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def startService(
    case: Any, plugin: str, *args: str, endpoints: int = 1, twist: tuple[str, ...] = ()
) -> ServiceProcess:
    """Start a service for a test case, stopped when the test ends (``twist``: options of twist itself)."""
    service = ServiceProcess(plugin, *args, twist=twist)
    case.addCleanup(service.stop)
    return service.start(endpoints)


def runService(plugin: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a service that is expected to exit by itself (bad options, a busy port)."""
    return subprocess.run(
        [PYTHON, "-m", "twisted", "--log-format", "text", plugin, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def connectProtocol(factory: Any, peer: Any) -> tuple[Any, Any]:
    """A protocol from ``factory`` connected to a StringTransport from ``peer`` (no sockets)."""
    from twisted.internet.testing import StringTransport

    proto = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    return proto, transport


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def connectUNIX(path: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def recvExactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            raise AssertionError(f"connection closed with {count} bytes still expected")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def recvUntil(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data!r}")
        data += chunk
    return data


def recvAll(sock: socket.socket) -> bytes:
    """Everything until the server closes."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def makeCerts(directory: Path, clientName: str = "client") -> Path:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate, as 'sockproto cert' makes them."""
    from sockproto.server.tls import makeDevelopmentCertificates

    directory = Path(directory).resolve()
    makeDevelopmentCertificates(directory, ["localhost", "127.0.0.1"], clientName)
    return directory


def tlsClient(port: int, certs: Path, clientCerts: Path | None = None, hostname: str = "localhost") -> ssl.SSLSocket:
    """A verifying TLS client socket, presenting ``clientCerts``'s client certificate if given."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if clientCerts is not None:
        context.load_cert_chain(str(clientCerts / "client.crt"), str(clientCerts / "client.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=hostname)


class LineClient:
    """A blocking line client for text services, with a buffer for lines not yet read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def tcp(cls, port: int, timeout: float = 10.0) -> LineClient:
        return cls(connect(port, timeout))

    def send(self, text: str | bytes) -> None:
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; unread: {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def until(self, fragment: str, limit: int = 10000) -> list[str]:
        """Lines up to and including the first containing ``fragment``."""
        seen = []
        for _ in range(limit):
            seen.append(self.line())
            if fragment in seen[-1]:
                return seen
        raise AssertionError(f"{fragment!r} not seen in {seen[-20:]}")

    def closedAfter(self) -> bytes:
        """What the server still sends before it closes."""
        rest = self.buffer + recvAll(self.sock)
        self.buffer = b""
        return rest

    def close(self) -> None:
        self.sock.close()


def smallDisk(case: Any, size: str = "2m") -> Path:
    """
    A directory on a tmpfs of ``size`` of its own, unmounted after the test
    (a disk that fills for real); the test is skipped, saying why, where it
    cannot be mounted (not root, no mount permission in a container).
    """
    from twisted.trial.unittest import SkipTest

    if os.geteuid() != 0:
        raise SkipTest("mounting a small tmpfs needs root")
    directory = Path(case.mktemp()).resolve()
    directory.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode:
        raise SkipTest(f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}")
    case.addCleanup(subprocess.run, ["umount", "-l", str(directory)], check=False)
    return directory


def fillDisk(directory: Path, name: str = "fill") -> Path:
    """Fill the file system of ``directory`` to the last block with one file; return it."""
    path = directory / name
    with open(path, "ab", buffering=0) as fill:
        try:
            while fill.write(b"\0" * 4096):
                pass
        except OSError:
            pass  # full
    return path
