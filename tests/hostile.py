"""Shared by ``make fuzz`` and ``make soak``: the whole suite in one process, and well-behaved clients.

Not a test module (trial and pytest collect only ``test_*``): these run for
minutes, against a real process, on loopback only.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

from tests.support import ServiceProcess, recvExactly, recvUntil

SERVICES = ("echo", "chat", "joke", "binary", "crud", "proxy")


def startSuite(workdir: Path) -> ServiceProcess:
    """Every service on loopback port 0 (the proxy in front of echo), databases in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    echoPort = freePort()
    config = workdir / "hostile.toml"
    config.write_text(
        f'[echo]\nlisten = ["tcp:{echoPort}"]\nmode = "line"\n'
        # Few rooms: what users say is kept (history), so garbage in many rooms is memory rightly used.
        '[chat]\nlisten = ["tcp:0"]\nweb = ["tcp:0"]\nhistory = "chat.sqlite3"\nflood-rate = 0\nmax-rooms = 10\n'
        '[joke]\nlisten = ["tcp:0"]\n'
        '[binary]\nlisten = ["tcp:0"]\ndb = "kv.sqlite3"\n'
        '[crud]\nlisten = ["tcp:0"]\ndb = "kv.sqlite3"\n'
        f'[proxy]\nlisten = ["tcp:0"]\nconnect = "tcp:127.0.0.1:{echoPort}"\n'
    )
    service = ServiceProcess("sockproto", "--config", str(config), cwd=str(workdir))
    return service.start(endpoints=len(SERVICES) + 1, timeout=60)  # and the chat's web face


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openFiles(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def spb(op: int, requestId: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) + 5, op, requestId) + payload


def spbKey(key: bytes) -> bytes:
    return struct.pack(">H", len(key)) + key


def spbReply(sock: socket.socket) -> tuple[int, int, bytes]:
    (length,) = struct.unpack(">I", recvExactly(sock, 4))
    body = recvExactly(sock, length)
    return body[0], struct.unpack(">I", body[1:5])[0], body[5:]


def wellBehaved(service: ServiceProcess, name: str, timeout: float = 5.0) -> float:
    """One correct exchange with ``name``; returns its time in seconds, raises if the answer is wrong."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port(name)), timeout=timeout) as sock:
        if name in ("echo", "proxy"):
            recvUntil(sock, b"\n")  # the greeting
            sock.sendall(b"ping\n")
            if recvUntil(sock, b"\n") != b"Echo: ping\n":
                raise AssertionError(f"{name}: wrong echo")
        elif name == "chat":
            if b"Welcome" not in recvUntil(sock, b"\n"):
                raise AssertionError("chat: no welcome")
            sock.sendall(b"/rooms\n")
            recvUntil(sock, b"#lobby")
        elif name == "joke":
            if recvUntil(sock, b">> ") != b"Knock knock!\r\n>> ":
                raise AssertionError("joke: no knock")
        elif name == "binary":
            sock.sendall(spb(0x01, 42))
            if spbReply(sock)[:2] != (0x81, 42):
                raise AssertionError("binary: wrong pong")
        elif name == "crud":
            recvUntil(sock, b"\n")
            sock.sendall(b"help\n")
            if not recvUntil(sock, b"\n").startswith(b"OK commands"):
                raise AssertionError("crud: wrong help")
    return time.monotonic() - started
