"""A small blocking WebSocket client (RFC 6455) for the tests: text and binary frames, close, ping."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any


class WebSocketRefused(Exception):
    def __init__(self, status: int, response: bytes) -> None:
        Exception.__init__(self, f"handshake refused with {status}")
        self.status = status
        self.response = response


class WebSocketClient:
    def __init__(
        self,
        port: int,
        origin: str | None = "default",
        path: str = "/ws",
        timeout: float = 10.0,
        tls: Any = None,
        receiveBuffer: int | None = None,
    ) -> None:
        """
        ``tls``: an ``ssl.SSLContext`` for a wss:// connection (checked
        against the name localhost); ``receiveBuffer``: SO_RCVBUF, set before connecting.
        """
        self.sock = socket.socket()
        if receiveBuffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"127.0.0.1:{port}"
        headers = [
            f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            scheme = "https://" if tls is not None else "http://"
            headers.append(f"Origin: {scheme + host if origin == 'default' else origin}")
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        if status != 101:
            self.sock.close()
            raise WebSocketRefused(status, response)
        self.closeCode: int | None = None

    def _frame(self, opcode: int, payload: bytes, fin: bool = True) -> bytes:
        mask = os.urandom(4)
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send(self, message: Any) -> None:
        self.sendText(json.dumps(message))

    def sendText(self, text: str) -> None:
        self.sock.sendall(self._frame(0x1, text.encode()))

    def sendBinary(self, data: bytes) -> None:
        self.sock.sendall(self._frame(0x2, data))

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def event(self) -> dict[str, Any] | None:
        """The next event; None once the server closed (its code in ``closeCode``)."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                self.closeCode = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return None
            if opcode == 0x9:
                self.sock.sendall(self._frame(0xA, payload))

    def until(self, predicate: Any, limit: int = 1000) -> list[dict[str, Any]]:
        """Events up to and including the first for which ``predicate(event)`` holds."""
        seen: list[dict[str, Any]] = []
        for _ in range(limit):
            event = self.event()
            if event is None:
                raise AssertionError(f"closed ({self.closeCode}) after {seen[-10:]}")
            seen.append(event)
            if predicate(event):
                return seen
        raise AssertionError(f"not seen in {seen[-10:]}")

    def close(self) -> None:
        try:
            self.sock.sendall(self._frame(0x8, struct.pack("!H", 1000)))
        except OSError:
            pass
        self.sock.close()
